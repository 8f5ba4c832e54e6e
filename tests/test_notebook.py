"""The notebooks: committed without outputs, and each one runs top to bottom in a real Jupyter kernel.

Execution happens in a temporary folder with this interpreter's kernel, on CPU, twice per notebook:
as on a fresh clone (no checkpoint, no MLflow store: the notebook trains its own model and skips
the MLflow section), and from a tracked run (a tiny ``experiments.baseline`` run that registered
its model in a temporary MLflow store: the notebook loads that checkpoint and the registered model).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

from tests.helpers import ROOT, write_tiny_csv

pytestmark = pytest.mark.slow  # end to end: subprocesses, servers, whole runs

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "mlp-jax-tests"
STRIP = ".venv/bin/jupyter nbconvert --clear-output --inplace notebooks/*.ipynb"


def test_there_is_a_notebook() -> None:
    assert NOTEBOOKS, f"no notebooks in {ROOT / 'notebooks'}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: code cells {dirty} carry outputs or execution counts; strip them: {STRIP}"


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kernelspec that runs this interpreter (found before any user or system one) and a hermetic env."""
    jupyter = tmp_path / "jupyter"
    spec = jupyter / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
    # The kernel and the tracked run start in temporary folders: put this checkout's mlp_jax and
    # experiments first on their path, not whichever copy the interpreter has installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    assert KernelSpecManager().get_kernel_spec(KERNEL).argv[0] == sys.executable
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # the notebook's own scratch folder lands here
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("MLP_JAX_COMPILATION_CACHE", "off")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return tmp_path


def tracked_run(folder: Path) -> SimpleNamespace:
    """A tiny ``experiments.baseline`` run in ``folder`` that registers ``mlp-jax`` in a SQLite store there."""
    csv = write_tiny_csv(folder / "tiny.csv")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    overrides = {
        "name": "tiny",
        "workdir": str(folder / "run"),
        "data.path": str(csv),
        "model.hidden_sizes": "16,8",
        "train.epochs": "3",
        "train.batch_size": "32",
        "train.progress": "false",
        "train.compare_sklearn": "false",
        "train.members": "1",  # one network (the ensemble path has its own tests; this one times the notebook)
        "tracking.uri": uri,
    }
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.baseline", *(f"{k}={v}" for k, v in overrides.items())],
        cwd=folder,  # MLflow's artifacts (./mlruns) land here
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"tracked run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "model mlp-jax v1 (champion: True)" in proc.stdout, proc.stdout[-2000:]
    return SimpleNamespace(workdir=folder / "run", uri=uri)


def execute(path: Path, cwd: Path) -> nbformat.NotebookNode:
    """Runs a copy of ``path`` in ``cwd``; raises CellExecutionError (with the cell's traceback) on failure."""
    copy = cwd / path.name
    shutil.copy(path, copy)
    nb = nbformat.read(copy, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name=KERNEL, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def output_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.timeout(420)
@pytest.mark.parametrize("mode", ["fresh-clone", "tracked-run"])
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path: Path, mode: str, kernel_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = kernel_env / "store"
    store.mkdir()
    if mode == "tracked-run":
        run = tracked_run(store)
        monkeypatch.setenv("MLP_JAX_NOTEBOOK_CHECKPOINT", str(run.workdir))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", run.uri)
    else:
        monkeypatch.setenv("MLP_JAX_NOTEBOOK_CHECKPOINT", str(kernel_env / "no-checkpoint"))
        # A store that does not exist: the MLflow section must explain, skip, and create nothing.
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    before = sorted(p.name for p in (ROOT / "notebooks").iterdir())
    run_dir = kernel_env / "cwd"
    run_dir.mkdir()

    nb = execute(path, run_dir)

    text = output_text(nb)
    if mode == "tracked-run":
        assert f"checkpoint {run.workdir.resolve()}/" in text, "the notebook did not use the given checkpoint"
        assert "trained a small model" not in text
        assert "loaded models:/mlp-jax@champion" in text and "MLflow pyfunc and Predictor agree" in text, text[-3000:]
    else:
        assert "trained a small model" in text, "without a checkpoint the notebook should train one"
        assert "skipped: no MLflow database" in text
        assert not (store / "mlflow.db").exists(), "the MLflow section created a store"
    summary = next(c for c in reversed(nb.cells) if c.cell_type == "code").outputs[0]["text"]
    for section in ("1. model", "6. cost analysis", "7a. eager vs jit", "7c. recompilation", "8. vmap + grad"):
        assert section in summary, f"the summary lacks {section!r}:\n{summary}"
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the attribution plot was not displayed inline"
    assert sorted(p.name for p in (ROOT / "notebooks").iterdir()) == before, "the notebook wrote into notebooks/"
