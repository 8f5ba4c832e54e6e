"""Shared fixtures: a tiny CSV, one tiny trained checkpoint per session, an MLflow database template.

Plain helper functions live in ``tests/helpers.py``; test modules never import each other.

JAX runs on the CPU in tests, with strict rank promotion so silent broadcasting bugs fail.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
if "MLP_JAX_COMPILATION_CACHE" not in os.environ:
    # One persistent compilation cache for the whole session, never the user's: made by the
    # first process (pytest itself, before xdist starts its workers, which inherit the variable),
    # shared by the workers and every subprocess they start (runs, servers, notebooks), removed
    # at exit. The tests compile the same tiny programs over and over; a hit loads the
    # executable XLA compiled before, so bitwise comparisons between runs are unaffected.
    _cache = tempfile.mkdtemp(prefix="mlp-jax-tests-jax-cache-")
    os.environ["MLP_JAX_COMPILATION_CACHE"] = _cache
    atexit.register(shutil.rmtree, _cache, True)

import jax
import pytest

from mlp_jax import compilation_cache
from tests.helpers import tiny_config, write_tiny_csv

jax.config.update("jax_numpy_rank_promotion", "raise")
compilation_cache.enable()  # in-process compiles too (train.fit, sweeps, predictors), not only runner.run


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


@pytest.fixture(scope="session")
def mlflow_db(tmp_path_factory: pytest.TempPathFactory):
    """``fresh(folder)`` puts an empty MLflow SQLite database in ``folder`` and returns its URI.

    Creating one runs MLflow's migrations (seconds); copying a migrated template takes
    milliseconds.
    """
    template = tmp_path_factory.getbasetemp() / "mlflow-template.db"
    if not template.exists():
        tmp = template.with_name("mlflow-template.tmp.db")
        from mlflow.tracking import MlflowClient

        MlflowClient(f"sqlite:///{tmp}").search_experiments()
        os.replace(tmp, template)

    def fresh(folder: Path) -> str:
        shutil.copy(template, folder / "mlflow.db")
        return f"sqlite:///{folder / 'mlflow.db'}"

    return fresh
