"""End-to-end wall time of ``python -m experiments.baseline``, broken down, cold vs warm compile cache.

Each run is a fresh subprocess in a temporary folder (its own workdir, so nothing
resumes; its own ``mlflow.db``/``mlruns`` when tracked) on the project's synthetic CSV.
The breakdown comes from the ``timings`` dict the runner writes to ``summary.json``;
imports are timed in a separate interpreter, and what is left of the wall time is
interpreter start-up, setup and exit.

JAX's persistent compilation cache is the runner's (``MLP_JAX_COMPILATION_CACHE=<dir>``,
threshold 0 so small programs are cached): "cold" starts from an empty folder, "warm"
reuses it, "off" disables it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORE_IMPORTS = "import jax, jax.numpy, optax, orbax.checkpoint, pandas, sklearn; from flax import nnx; import mlp_jax.runner, mlp_jax.train, mlp_jax.checkpoint, mlp_jax.evaluate"
PHASES = ("data", "compile", "train", "checkpoint", "evaluate", "sklearn", "tracking")
RUNS = ("cold", "warm", "off", "tracked")


def _env(cache: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["MLP_JAX_COMPILATION_CACHE"] = cache
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # on a GPU the parent benchmark already holds JAX's default 75% preallocation
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return env


def time_imports(statement: str = CORE_IMPORTS, repeats: int = 2) -> float:
    """Seconds to import ``statement`` in a fresh interpreter (best of ``repeats``, start-up excluded)."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    best = float("inf")
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", code], env=_env("off"), cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        if out.returncode != 0:
            raise RuntimeError(f"import timing failed: {out.stderr[-2000:]}")
        best = min(best, float(out.stdout.strip().splitlines()[-1]))
    return best


def run_baseline(label: str, workdir: Path, cache: str, args: list[str], cwd: Path) -> dict[str, Any]:
    """One ``python -m experiments.baseline`` subprocess; its wall time and ``summary.json`` timings."""
    cmd = [sys.executable, "-m", "experiments.baseline", "train.progress=false", f"workdir={workdir}", *args]
    t = time.perf_counter()
    out = subprocess.run(cmd, env=_env(cache), cwd=cwd, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"{label}: exit {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    summary = json.loads((workdir / "summary.json").read_text())
    timings = summary["timings"]
    phases = {k: float(timings.get(k, 0.0)) for k in PHASES}
    in_process = float(timings["total_in_process"])
    return {
        "label": label,
        "command": " ".join(["python -m experiments.baseline", *cmd[3:]]),
        "wall_seconds": wall,
        **{f"{k}_seconds": v for k, v in phases.items()},
        "other_in_process_seconds": in_process - sum(phases.values()),
        "outside_runner_seconds": wall - in_process,
        "epochs_run": summary["epochs_run"],
        "test_accuracy": summary["test_accuracy"],
        "train_samples_per_second": summary["train_samples_per_second"],
    }


def end_to_end(quick: bool = False, runs: Sequence[str] = RUNS) -> dict[str, Any]:
    """Baseline runs with a cold, warm or no compilation cache, and a tracked one (skipped without mlflow).

    ``quick``: 2 epochs and no scikit-learn comparison instead of the baseline's defaults.
    """
    from mlp_jax.config import DataConfig
    from mlp_jax.data import ensure_synthetic

    unknown = set(runs) - set(RUNS)
    if unknown:
        raise ValueError(f"unknown end-to-end run(s) {sorted(unknown)}; choose from {', '.join(RUNS)}")
    cwd0 = Path.cwd()
    os.chdir(ROOT)
    try:
        ensure_synthetic(DataConfig())  # the baseline's CSV, written once outside the timed runs
    finally:
        os.chdir(cwd0)
    data_path = (ROOT / DataConfig().path).resolve()
    if importlib.util.find_spec("mlflow") is None:
        runs = [r for r in runs if r != "tracked"]
    extra = ["train.epochs=2", "train.compare_sklearn=false"] if quick else []
    imports = time_imports()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mlp-jax-e2e-") as tmp:
        tmp_path = Path(tmp)
        cache = str(tmp_path / "jax-cache")
        base = [f"data.path={data_path}", *extra]
        off = ["tracking.enabled=false"]
        plan = {
            "cold": ("cold cache", cache, off),
            "warm": ("warm cache", cache, off),
            "off": ("cache off", "off", off),
            "tracked": (
                "warm cache + MLflow tracking",
                cache,
                ["tracking.enabled=true", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"],
            ),
        }
        if "warm" in runs and "cold" not in runs:
            runs = ["cold", *runs]  # a warm cache needs a cold run first
        for i, name in enumerate(r for r in RUNS if r in runs):
            label, cache_dir, args = plan[name]
            row = run_baseline(label, tmp_path / f"run{i}", cache_dir, [*base, *args], tmp_path)
            rows.append(row)
            print(
                f"  e2e {label}: {row['wall_seconds']:.1f} s wall, compile {row['compile_seconds']:.2f} s", flush=True
            )
    return {"imports_seconds": imports, "quick": quick, "runs": rows}


def markdown_table(e2e: dict[str, Any]) -> str:
    """The end-to-end runs as one Markdown table."""
    cols = ["wall", "data", "compile", "train", "evaluate", "checkpoint", "sklearn", "tracking", "other_in_process"]
    head = "| run | epochs | " + " | ".join(c.replace("_", " ") + " s" for c in cols) + " | outside runner s |"
    lines = [
        "### End to end: `python -m experiments.baseline`"
        + (" (quick: 2 epochs, no scikit-learn)" if e2e["quick"] else ""),
        "",
        head,
        "|---|---:|" + "---:|" * (len(cols) + 1),
    ]
    for r in e2e["runs"]:
        vals = " | ".join(f"{r[c + '_seconds']:.2f}" for c in cols)
        lines.append(f"| {r['label']} | {r['epochs_run']} | {vals} | {r['outside_runner_seconds']:.2f} |")
    lines += [
        "",
        f"Importing the core stack (jax, flax, optax, orbax, pandas, scikit-learn, mlp_jax) takes "
        f"{e2e['imports_seconds']:.2f} s of the 'other in process' column; the rest is set-up "
        "(mesh, state, device transfers) and writing the summary. 'outside runner' is interpreter "
        "start-up and exit. 'evaluate' is the test-set report and the plots (matplotlib's import included).",
    ]
    return "\n".join(lines)
