"""Batch prediction vs the pandas I/O floor on a 1,000,000-row CSV.

    python -m benchmarks.batch_predict [--model checkpoints/baseline] [--rows 1000000]

In one run, on the same file:

- **floor**: ``pandas.read_csv`` (pyarrow engine, its fastest) of the input, then
  ``DataFrame.to_csv`` of a frame shaped like our output (the id column, the label and
  one probability per class): merely reading the CSV and writing an equal-size output;
- **ours, in process**: :func:`mlp_jax.predict.predict_csv` with the model already loaded
  (read, validate, score, write, rename);
- **ours, command**: ``python -m mlp_jax.predict`` end to end as a user runs it (process
  start, imports, model restore and compilation included).

Prints seconds and rows/s for each and the ratio ours / floor (target: at most 1.5).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def make_input(path: Path, rows: int, predictor) -> None:
    """``rows`` synthetic rows drawn from the model's fitted preprocessing (numbers around their
    centre, categories from the vocabulary, booleans), plus an ``id`` column passed through."""
    rng = np.random.default_rng(0)
    cols: dict[str, object] = {"id": np.arange(rows)}
    pre = predictor.preprocessor
    if pre is None:  # format 1: a standardiser
        meta = predictor.meta.preprocessing
        mean, scale = np.asarray(meta["mean"]), np.asarray(meta["scale"])
        x = (mean + scale * rng.normal(size=(rows, len(mean)))).astype(np.float32)
        cols.update({n: x[:, j] for j, n in enumerate(predictor.feature_names)})
    else:
        for spec in pre.columns:
            if spec.role == "numeric":
                cols[spec.name] = (spec.center + max(spec.scale, 1e-6) * rng.normal(size=rows)).astype(np.float32)
            elif spec.role == "boolean":
                cols[spec.name] = rng.random(rows) < 0.5
            else:
                vocab = np.asarray(list(spec.vocabulary) or ["x"], dtype=object)
                cols[spec.name] = vocab[rng.integers(0, len(vocab), size=rows)]
    pd.DataFrame(cols).to_csv(path, index=False)


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.batch_predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="checkpoints/baseline")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=2, help="best of N for the in-process timings")
    args = p.parse_args(argv)

    from mlp_jax.predict import predict_csv
    from mlp_jax.predictor import Predictor

    model = Path(args.model)
    if not model.exists():
        raise SystemExit(f"{model} not found: run `python -m experiments.baseline tracking.enabled=false` first")
    t = time.perf_counter()
    predictor = Predictor.load(model)
    load_s = time.perf_counter() - t
    names = list(predictor.feature_names)

    tmp = Path(tempfile.mkdtemp(prefix="mlp-jax-batch-bench-"))
    try:
        src = tmp / "in.csv"
        make_input(src, args.rows, predictor)
        size_mb = src.stat().st_size / 1e6
        print(
            f"input: {args.rows:,} rows x {len(names)} features + id, {size_mb:.0f} MB; model restore+compile {load_s:.2f} s"
        )

        rng = np.random.default_rng(1)

        def floor() -> None:
            frame = pd.read_csv(src, engine="pyarrow")
            out = pd.DataFrame({"id": frame["id"]})
            if predictor.task == "classification":
                # Stand-in probabilities with the same digits as real ones, so the output is the same size.
                probs = rng.dirichlet(np.ones(len(predictor.classes)), size=len(frame)).astype(np.float32)
                out["prediction"] = np.asarray(predictor.classes)[probs.argmax(1)]
                for k, c in enumerate(predictor.probability_columns()):
                    out[c] = probs[:, k]
            else:
                for c in predictor.output_columns():
                    out[c] = rng.normal(size=len(frame))
            out.to_csv(tmp / "floor.csv", index=False)

        def ours() -> None:
            predict_csv(predictor, src, tmp / "out.csv", progress=False)

        floor_s = best_of(args.repeats, floor)
        ours_s = best_of(args.repeats, ours)
        t = time.perf_counter()
        cli = [sys.executable, "-m", "mlp_jax.predict", "--model", str(model), "--input", str(src)]
        subprocess.run(
            [*cli, "--output", str(tmp / "cli.csv"), "--no-progress"],
            check=True,
            cwd=Path.cwd(),
            capture_output=True,
        )
        cli_s = time.perf_counter() - t
        out_mb = (tmp / "out.csv").stat().st_size / 1e6
        floor_mb = (tmp / "floor.csv").stat().st_size / 1e6
        print(
            f"floor (pandas read_csv[pyarrow] + to_csv, {floor_mb:.0f} MB out): {floor_s:6.2f} s  {args.rows / floor_s:12,.0f} rows/s"
        )
        print(
            f"ours, in process ({out_mb:.0f} MB out):                     {ours_s:6.2f} s  {args.rows / ours_s:12,.0f} rows/s"
        )
        print(
            f"ours, python -m mlp_jax.predict (all included):        {cli_s:6.2f} s  {args.rows / cli_s:12,.0f} rows/s"
        )
        print(
            f"ratio ours / floor: {ours_s / floor_s:.2f} in process, {cli_s / floor_s:.2f} for the command (target <= 1.5)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
