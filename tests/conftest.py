"""Shared fixtures: a tiny CSV, a tiny config, and one tiny trained checkpoint per session.

JAX runs on the CPU in tests, with strict rank promotion so silent broadcasting bugs fail.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLP_JAX_COMPILATION_CACHE", "off")

import jax
import pytest

from mlp_jax import config as config_lib
from mlp_jax import data as data_lib

jax.config.update("jax_numpy_rank_promotion", "raise")

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(tmp: Path, csv: Path, **overrides: str) -> config_lib.Config:
    """A config that trains in about a second: small model, few epochs, no tracking."""
    items = {
        "name": "tiny",
        "workdir": str(tmp / "run"),
        "data.path": str(csv),
        "model.hidden_sizes": "16,8",
        "train.epochs": "4",
        "train.batch_size": "32",
        "train.checkpoint_every": "2",
        "train.progress": "false",
        "tracking.enabled": "false",
    }
    items.update(overrides)
    return config_lib.apply_overrides(config_lib.Config(), [f"{k}={v}" for k, v in items.items()])


def write_tiny_csv(path: Path, n: int = 600, n_classes: int = 2, seed: int = 3) -> Path:
    cfg = dataclasses.replace(
        config_lib.DataConfig(),
        n_samples=n,
        n_features=6,
        n_informative=4,
        n_redundant=1,
        n_classes=n_classes,
        class_sep=1.5,
        synthetic_seed=seed,
    )
    return data_lib.write_csv_atomic(data_lib.make_synthetic(cfg), path)


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    return write_tiny_csv(tmp_path / "tiny.csv")


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny trained checkpoint shared by predictor / serving / tracking tests (read-only)."""
    from mlp_jax import runner

    tmp = tmp_path_factory.mktemp("trained")
    csv = write_tiny_csv(tmp / "tiny.csv")
    runner.run(tiny_config(tmp, csv, **{"train.epochs": "6"}), progress=False)
    return tmp / "run"
