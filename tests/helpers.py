"""Helpers shared by the tests (plain functions; fixtures are in ``conftest.py``)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import pytest

from mlp_jax import config as config_lib
from mlp_jax import data as data_lib
from mlp_jax.predictor import COMPILE_EVENTS

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
        "train.members": "1",  # one model (auto would make an 8-seed ensemble of these small tables)
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


#: The registered model name tracked tests use.
MODEL = "tiny-model"


@contextlib.contextmanager
def count_compilations() -> Iterator[list[str]]:
    """Collects every XLA compilation JAX reports while the block runs."""
    events: list[str] = []

    def listener(event: str, duration: float, **kwargs: object) -> None:
        if event in COMPILE_EVENTS:
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def use_store(mp: pytest.MonkeyPatch, folder: Path, uri: str | None = None) -> str:
    """Points MLflow at ``uri`` (default: a SQLite file in ``folder``) and chdirs into ``folder``."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    uri = uri or f"sqlite:///{folder / 'mlflow.db'}"
    mp.setattr(tracking_utils, "_tracking_uri", None)  # a URI another test set in this process
    mp.setattr(registry_utils, "_registry_uri", None)
    mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.chdir(folder)
    return uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Polls ``url`` until it answers 200; fails with the process output if it exits or times out."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"server exited with {proc.returncode} before answering {url}:\n{out[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    stop(proc)  # so its output can be read: what the server was doing says why it never got ready
    out = proc.stdout.read() if proc.stdout else ""
    pytest.fail(f"{url} did not answer within {timeout} s; server output:\n{out[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Stops a server started in its own process group, and its workers."""
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=5)


def sigkill_when(cmd: list[str], env: dict[str, str], ready: Callable[[], bool], timeout: float) -> int:
    """Starts ``cmd`` from the project root, SIGKILLs it as soon as ``ready()`` (polled every 2 ms)
    or after ``timeout`` s, and returns its exit code (``-SIGKILL`` unless it finished first)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    return proc.returncode


def spawn(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def tracked(folder: Path, csv: Path, workdir: str, **overrides: str):
    items = {"tracking.enabled": "true", "tracking.registered_model": MODEL, "workdir": str(folder / workdir)}
    return tiny_config(folder, csv, **{**items, **overrides})


# ----------------------------------------------------------------------------- real tables


def penguins_csv() -> Path:
    """The palmerpenguins CSV (344 rows: text columns, missing values); skips when the package is absent."""
    palmerpenguins = pytest.importorskip("palmerpenguins")
    return Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"


def write_regression_csv(path: Path, n: int = 400, seed: int = 4) -> Path:
    """Two numeric targets ``y1, y2`` from numbers (with gaps), a text category and a boolean."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    flag = rng.random(n) < 0.4
    shift = pd.Series(color).map({"red": 2.0, "green": 0.0, "blue": -2.0}).to_numpy()
    frame = pd.DataFrame(
        {
            "a": np.where(rng.random(n) < 0.05, np.nan, a),
            "b": b,
            "color": color,
            "flag": flag,
            "y1": 100 + 30 * a + 10 * b + 5 * shift + rng.normal(size=n),
            "y2": -3 * b + flag + rng.normal(size=n) * 0.1,
        }
    )
    frame.to_csv(path, index=False)
    return path


def trained_once(tmp_path_factory: pytest.TempPathFactory, key: str, csv: Path, **overrides: str) -> Path:
    """A small model trained once per test session (shared by every module that asks for ``key``).

    Returns the workdir; modules must not write into it.
    """
    from mlp_jax import runner

    folder = tmp_path_factory.getbasetemp() / f"trained-{key}"
    workdir = folder / "run"
    if not (folder / "done").exists():
        folder.mkdir(exist_ok=True)
        items = {"name": key, "train.epochs": "5", **overrides}
        runner.run(tiny_config(folder, csv, **items), progress=False)
        (folder / "done").write_text("ok")
    return workdir


def trained_penguins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_once(
        tmp_path_factory, "penguins", penguins_csv(), **{"data.target": "species", "train.epochs": "15"}
    )


def trained_regression(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two targets (``y1,y2``) on a small synthetic table with a text and a boolean column."""
    folder = tmp_path_factory.getbasetemp()
    csv = folder / "regression.csv"
    if not csv.exists():
        write_regression_csv(csv)
    return trained_once(tmp_path_factory, "regression", csv, **{"data.task": "regression", "data.target": "y1,y2"})
