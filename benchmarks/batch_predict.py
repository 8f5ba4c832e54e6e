"""Batch prediction vs the pandas I/O floor on a 1,000,000-row mixed-type CSV.

    python -m benchmarks.batch_predict [--rows 1000000] [--repeats 3] [--model CHECKPOINT]

In one run:

1. writes a mixed-type table (8 numeric columns with ~5% gaps, 3 text columns of 4, 30 and
   300 categories with ~2% gaps, a 3-class label that depends on both) and trains a small
   model on 20,000 of its rows (``experiments.baseline``, 3 epochs; skipped with ``--model``,
   which scores a CSV drawn from that model's fitted preprocessing instead);
2. writes the ``--rows`` input (the features plus an ``id`` column passed through);
3. times, interleaved over ``--repeats`` rounds (medians reported):

   - **floor**: ``pandas.read_csv`` (pyarrow engine, its fastest) of the input, then
     ``DataFrame.to_csv`` of a frame shaped like our output (the id column, the label and one
     probability per class): merely reading the CSV and writing an equal-size output;
   - **ours, in process**: :func:`mlp_jax.predict.predict_csv` with the model already loaded
     (read, validate, encode, score, write, rename);

4. once: ``python -m mlp_jax.predict`` end to end as a user runs it (process start, imports,
   model restore and compilation included).

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


NUMERIC = [f"x{i}" for i in range(8)]
TEXT = {"colour": 4, "city": 30, "product": 300}


def mixed_table(rows: int, seed: int, label: bool) -> pd.DataFrame:
    """Numbers with gaps and three text columns; ``label`` (3 classes) depends on both."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(NUMERIC)))
    cols: dict[str, object] = {}
    score = x[:, 0] + 0.5 * x[:, 1] - 0.8 * x[:, 2]
    for k, (name, card) in enumerate(TEXT.items()):
        codes = rng.integers(0, card, size=rows)
        score = score + np.sin(codes * (k + 1.3))
        values = np.asarray([f"{name}_{i}" for i in range(card)], dtype=object)[codes]
        values[rng.random(rows) < 0.02] = None
        cols[name] = values
    for j, name in enumerate(NUMERIC):
        v = np.round(x[:, j], 5)
        v[rng.random(rows) < 0.05] = np.nan
        cols[name] = v
    frame = pd.DataFrame(cols)
    if label:
        frame["label"] = np.asarray(["low", "mid", "high"], dtype=object)[np.digitize(score, [-0.8, 0.8])]
    return frame


def train_mixed(folder: Path) -> Path:
    """A small MLP (embeddings for the text columns) trained on 20,000 mixed rows, 3 epochs."""
    csv = folder / "train.csv"
    mixed_table(20_000, 1, label=True).to_csv(csv, index=False)
    workdir = folder / "model"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.baseline",
            "tracking.enabled=false",
            "train.compare_sklearn=false",
            "train.progress=false",
            "train.epochs=3",
            f"data.path={csv}",
            "data.target=label",
            f"workdir={workdir}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return workdir


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.batch_predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="score this checkpoint instead of training the mixed-type model")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=3, help="rounds of floor + ours, interleaved (medians)")
    args = p.parse_args(argv)

    import os

    from mlp_jax.predict import predict_csv
    from mlp_jax.predictor import Predictor

    tmp = Path(tempfile.mkdtemp(prefix="mlp-jax-batch-bench-"))
    try:
        if args.model:
            model = Path(args.model).resolve()
            if not model.exists():
                raise SystemExit(f"{model} not found")
        else:
            t = time.perf_counter()
            model = train_mixed(tmp)
            print(f"trained the mixed-type model in {time.perf_counter() - t:.1f} s", flush=True)
        t = time.perf_counter()
        predictor = Predictor.load(model)
        load_s = time.perf_counter() - t
        names = list(predictor.feature_names)
        src = tmp / "in.csv"
        if args.model:
            make_input(src, args.rows, predictor)
        else:
            frame = mixed_table(args.rows, 2, label=False)
            frame.insert(0, "id", np.arange(args.rows))
            frame.to_csv(src, index=False)
            del frame
        size_mb = src.stat().st_size / 1e6
        print(
            f"input: {args.rows:,} rows x {len(names)} features ({', '.join(names)}) + id, "
            f"{size_mb:.0f} MB; model restore+compile {load_s:.2f} s; load average {os.getloadavg()[0]:.1f}",
            flush=True,
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

        floors, ourss = [], []
        for r in range(args.repeats):
            floors.append(timed(floor))
            ourss.append(timed(ours))
            print(
                f"round {r + 1}: floor {floors[-1]:.2f} s, ours {ourss[-1]:.2f} s, ratio {ourss[-1] / floors[-1]:.2f}",
                flush=True,
            )
        floor_s, ours_s = float(np.median(floors)), float(np.median(ourss))
        ratio = float(np.median([o / f for o, f in zip(ourss, floors, strict=True)]))
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
            f"ratio ours / floor: {ratio:.2f} in process (median of per-round ratios), {cli_s / floor_s:.2f} for the "
            f"command (target <= 1.5); load average {os.getloadavg()[0]:.1f}"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
