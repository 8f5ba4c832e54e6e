"""Training speed: the project's fused epoch vs a per-step loop vs scikit-learn, scaling, end to end.

Command (from the project root):
    python -m benchmarks.train_throughput                 # everything, about 3-4 minutes on 2 CPU cores
    python -m benchmarks.train_throughput --quick         # a smoke run, well under a minute
    python -m benchmarks.train_throughput --only head     # sections: head, scaling, e2e (comma-separated)
    python -m benchmarks.train_throughput --json benchmarks/_out/train.json

What it measures, all in one process on the baseline task (``mlp_jax.data`` synthetic,
100k rows, 70k for training; 20-128-64-2 MLP, Adam 1e-3, batch 256, the same epoch count):

- **project**: ``mlp_jax.train.fit`` itself, the path ``python -m experiments.baseline`` runs
  (one compiled ``lax.scan`` per epoch, data on the device). Its per-epoch figures are fit's
  own, so each epoch's time includes the validation pass fit makes.
- **per-step loop**, two ways, both calling a jitted ``mlp_jax.train.train_step`` once per
  batch with the data and the shuffled order on the device: as the Flax examples write it
  (index the arrays in Python, step, keep the metrics), and "lean" (the jitted call slices
  and gathers the batch itself: one dispatch per step, the best case for a loop).
- **scikit-learn**: ``MLPClassifier`` with the same sizes, solver, rate, batch and epochs,
  with its BLAS at the default thread count and at one thread (the faster is the reference).

samples/s is the median epoch, and in the head to head the median over 3 rounds of all
contenders in turn (this machine is shared; the mean is shown beside it); compile time is
excluded and shown apart. The FLOP fraction divides ``6 x weights`` FLOPs
per training sample (forward 2, backward 4) by the machine's float32 matmul rate, measured
in the same run with a large ``jnp`` matmul (the better of a measurement before and after).

Expected (2-core CPU, quiet machine): project ~3x scikit-learn, ~7x the Flax-example loop
and ~1.2x the lean loop; ~35% of the matmul rate for 20-128-64-2 and 70%+ for hidden
widths of 512 and more.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mlp_jax import data as data_lib
from mlp_jax import evaluate, train
from mlp_jax import model as model_lib
from mlp_jax.config import Config, DataConfig, ModelConfig, TrackingConfig

SECTIONS = ("head", "scaling", "e2e")


# ----------------------------------------------------------------------------- machine


def matmul_flops_per_second(sizes: Sequence[int] | None = None, repeats: int = 5) -> dict[str, Any]:
    """The best float32 ``jnp`` matmul rate over a few square sizes (FLOP/s), with the size that got it."""
    if sizes is None:
        sizes = (1024, 2048) if jax.default_backend() == "cpu" else (4096, 8192)
    best = {"flops": 0.0, "n": 0}
    f = jax.jit(jnp.matmul)
    assumed = 2e11 if jax.default_backend() == "cpu" else 5e13  # FLOP/s, only to size ~0.2 s timings
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
        f(a, b).block_until_ready()
        reps = max(2, min(50, int(0.2 * assumed / (2 * n**3))))
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(reps):
                out = f(a, b)
            out.block_until_ready()
            rate = 2 * n**3 * reps / (time.perf_counter() - t)
            if rate > best["flops"]:
                best = {"flops": rate, "n": n}
    return best


def train_flops_per_sample(n_features: int, hidden: Sequence[int], n_classes: int) -> int:
    """Matmul FLOPs of one training sample: 6 per weight (2 forward, 4 backward)."""
    return 3 * model_lib.forward_flops(n_features, hidden, n_classes)


def machine_info() -> dict[str, Any]:
    dev = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "n_devices": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average": _load(),
    }


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# ----------------------------------------------------------------------------- the three contenders


def baseline_config(epochs: int, **train_overrides: Any) -> Config:
    """The baseline experiment's settings, with a fixed epoch count (no early stopping, no tracking)."""
    from experiments.baseline import get_config

    base = get_config()
    tc = dataclasses.replace(
        base.train, epochs=epochs, patience=0, progress=False, compare_sklearn=False, **train_overrides
    )
    return dataclasses.replace(base, train=tc, tracking=TrackingConfig(enabled=False))


def _accuracy(graphdef: Any, params: Any, dataset: data_lib.Dataset) -> float:
    probs = evaluate.batched_probabilities(graphdef, params, dataset.x_test)
    return float(np.mean(probs.argmax(axis=1) == dataset.y_test))


def _rates(epoch_rates: Sequence[float], mean: float) -> dict[str, Any]:
    """samples/s as the median epoch (robust to a busy machine) and as the mean over all epochs."""
    return {
        "samples_per_second": float(np.median(epoch_rates)),
        "mean_samples_per_second": mean,
        "epoch_samples_per_second": [float(r) for r in epoch_rates],
    }


def run_project(config: Config, dataset: data_lib.Dataset) -> dict[str, Any]:
    """``mlp_jax.train.fit`` exactly as the runner calls it (no workdir, so no checkpoints)."""
    with contextlib.redirect_stdout(io.StringIO()):  # fit prints its device layout
        result = train.fit(config, dataset, workdir=None, progress=False)
    return {
        "name": "project (train.fit: scan-fused epoch)",
        **_rates([h["samples_per_second"] for h in result.history], result.train_samples_per_second),
        "compile_seconds": result.compile_seconds,
        "train_seconds": result.train_seconds,
        "epochs": result.epochs_run,
        "test_accuracy": _accuracy(result.state.graphdef, result.state.params, dataset),
    }


def run_per_step_loop(config: Config, dataset: data_lib.Dataset, style: str = "flax-example") -> dict[str, Any]:
    """A Python loop with one call of a jitted ``train.train_step`` per batch; data on the device.

    ``style="flax-example"``: as the Flax examples write it (``examples/mnist``): iterate
    over the epoch's permutation, index the device arrays with each row of it, call the
    jitted step, keep each step's metrics and reduce them on the host at the end of the
    epoch. ``style="lean"``: the most favourable form of the loop, where the jitted
    function slices the order and gathers the batch itself, so each step is exactly one
    dispatch and nothing else runs in Python.
    """
    if style not in ("flax-example", "lean"):
        raise ValueError(f"unknown per-step loop style {style!r}")
    tc = config.train
    n = len(dataset.y_train)
    steps = train.steps_per_epoch(n, tc.batch_size)
    state = train.create_state(config, train.network_spec(config, dataset), n)
    x, y = jax.device_put(dataset.x_train), jax.device_put(dataset.y_train)
    shuffle = jax.jit(lambda key: train.shuffle_indices(key, n))

    def lean_step(state: train.TrainState, order: jax.Array, i: jax.Array, key: jax.Array) -> tuple:
        idx = jax.lax.dynamic_slice_in_dim(order, i * tc.batch_size, tc.batch_size)
        return train.train_step(state, (x[idx], y[idx]), jax.random.fold_in(key, i))

    t = time.perf_counter()
    key0 = train.epoch_key(config.seed, 0)
    if style == "lean":
        step = jax.jit(lean_step, donate_argnums=0).lower(state, shuffle(key0), 0, key0).compile()
        one = jax.eval_shape(lean_step, state, shuffle(key0), 0, key0)[1]
        total = jax.jit(lambda ms: jax.tree.map(lambda *v: jnp.sum(jnp.stack(v)), *ms)).lower([one] * steps).compile()
    else:
        step = jax.jit(train.train_step, donate_argnums=0)
        # the loop body once on a copy of the state, and a whole pass of the iteration (JAX
        # iterates an array in chunks of 100 rows): compiles the step and every eager op it uses
        shuffle_key, dropout_key = jax.random.split(key0)
        perms = shuffle(shuffle_key)[: steps * tc.batch_size].reshape(steps, tc.batch_size)
        pairs = list(zip(perms, jax.random.split(dropout_key, steps), strict=True))
        perm, step_key = pairs[0]
        np.asarray(step(jax.tree.map(jnp.copy, state), (x[perm], y[perm]), step_key)[1]["loss_sum"])
    compile_seconds = time.perf_counter() - t

    seconds = 0.0
    rates = []
    for epoch in range(1, tc.epochs + 1):
        key = train.epoch_key(config.seed, epoch)
        t = time.perf_counter()
        metrics = []
        if style == "lean":
            order = shuffle(key)
            for i in range(steps):
                state, m = step(state, order, i, key)
                metrics.append(m)
            loss_sum = float(jax.device_get(total(metrics))["loss_sum"])
        else:
            shuffle_key, dropout_key = jax.random.split(key)
            perms = shuffle(shuffle_key)[: steps * tc.batch_size].reshape(steps, tc.batch_size)
            for perm, step_key in zip(perms, jax.random.split(dropout_key, steps), strict=True):
                state, m = step(state, (x[perm], y[perm]), step_key)
                metrics.append(m)
            loss_sum = float(np.sum([np.asarray(m["loss_sum"]) for m in metrics]))
        dt = time.perf_counter() - t
        seconds += dt
        rates.append(steps * tc.batch_size / dt)
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"per-step loop ({style}): non-finite loss at epoch {epoch}")
    what = "index, step, keep metrics" if style == "flax-example" else "one jitted call per batch, gather inside"
    return {
        "name": f"per-step loop, {style} ({what})",
        **_rates(rates, steps * tc.batch_size * tc.epochs / seconds),
        "compile_seconds": compile_seconds,
        "train_seconds": seconds,
        "epochs": tc.epochs,
        "test_accuracy": _accuracy(state.graphdef, state.params, dataset),
    }


def run_sklearn(config: Config, dataset: data_lib.Dataset, threads: int | None) -> dict[str, Any]:
    """scikit-learn's MLPClassifier for ``train.epochs`` epochs, BLAS at ``threads`` (None: its default).

    One ``partial_fit`` per epoch (the same shuffled pass over the data that ``fit`` makes,
    with the optimiser state kept between calls), so each epoch is timed on its own.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    tc = config.train
    clf = MLPClassifier(
        hidden_layer_sizes=config.model.hidden_sizes,
        activation="relu",
        solver="adam",
        learning_rate_init=config.optim.learning_rate,
        batch_size=tc.batch_size,
        early_stopping=False,
        random_state=np.random.RandomState(config.seed),  # an int would replay one shuffle every call
    )
    classes = np.arange(dataset.n_classes)
    rates = []
    seconds = 0.0
    with warnings.catch_warnings(), threadpool_limits(limits=threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(tc.epochs):
            t = time.perf_counter()
            clf.partial_fit(dataset.x_train, dataset.y_train, classes=classes)
            dt = time.perf_counter() - t
            seconds += dt
            rates.append(len(dataset.y_train) / dt)
    return {
        "name": f"scikit-learn MLPClassifier (BLAS threads: {threads or 'default'})",
        **_rates(rates, len(dataset.y_train) * tc.epochs / seconds),
        "compile_seconds": 0.0,
        "train_seconds": seconds,
        "epochs": round(clf.t_ / len(dataset.y_train)),  # samples the solver saw, in epochs
        "test_accuracy": float(clf.score(dataset.x_test, dataset.y_test)),
    }


def _combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One contender over several rounds: median of the rounds' median-epoch rates, all epochs kept."""
    epochs = [e for r in rounds for e in r["epoch_samples_per_second"]]
    return {
        **rounds[0],
        "samples_per_second": float(np.median([r["samples_per_second"] for r in rounds])),
        "mean_samples_per_second": float(np.mean([r["mean_samples_per_second"] for r in rounds])),
        "round_samples_per_second": [r["samples_per_second"] for r in rounds],
        "epoch_samples_per_second": epochs,
        "compile_seconds": float(np.median([r["compile_seconds"] for r in rounds])),
        "train_seconds": float(np.sum([r["train_seconds"] for r in rounds])),
    }


def head_to_head(
    dataset: data_lib.Dataset, epochs: int, matmul: float, batch_size: int = 256, rounds: int = 1
) -> dict[str, Any]:
    """The three contenders on the same data, sizes, optimiser, batch and epochs.

    ``rounds > 1`` runs them all again in turn, so a burst of load elsewhere on the machine
    hits one round of one contender rather than deciding a ratio; each figure is then the
    median over rounds.
    """
    config = baseline_config(epochs, batch_size=batch_size)
    flops = train_flops_per_sample(dataset.n_features, config.model.hidden_sizes, dataset.n_classes)
    runs: list[list[dict[str, Any]]] = [[] for _ in range(5)]
    for _ in range(rounds):
        runs[0].append(run_project(config, dataset))
        runs[1].append(run_per_step_loop(config, dataset, "flax-example"))
        runs[2].append(run_per_step_loop(config, dataset, "lean"))
        runs[3].append(run_sklearn(config, dataset, None))
        runs[4].append(run_sklearn(config, dataset, 1))
    rows = [_combine(r) for r in runs]
    project, loop, lean, *sk = rows
    sk_best = max(sk, key=lambda r: r["samples_per_second"])
    for r in rows:
        r["flops_per_sample"] = flops
        r["matmul_fraction"] = r["samples_per_second"] * flops / matmul
    p = project["samples_per_second"]
    return {
        "model": model_lib.layer_sizes(dataset.n_features, config.model.hidden_sizes, dataset.n_classes),
        "batch_size": config.train.batch_size,
        "epochs": epochs,
        "rounds": rounds,
        "train_rows": len(dataset.y_train),
        "flops_per_sample": flops,
        "rows": rows,
        "ratio_vs_sklearn": p / sk_best["samples_per_second"],
        "ratio_vs_per_step_loop": p / loop["samples_per_second"],
        "ratio_vs_lean_loop": p / lean["samples_per_second"],
        "accuracy_gap_vs_sklearn_points": 100 * (project["test_accuracy"] - sk_best["test_accuracy"]),
    }


# ----------------------------------------------------------------------------- scaling


def synthetic_dataset(n_samples: int, seed: int = 0) -> data_lib.Dataset:
    """The baseline's synthetic task at another size, split and preprocessed like ``data.prepare``."""
    cfg = dataclasses.replace(DataConfig(), n_samples=n_samples)
    table = data_lib.Table(data_lib.make_synthetic(cfg), f"synthetic:{n_samples}", f"synthetic-{n_samples}")
    return data_lib.split(table, cfg, seed)


def scaling_point(dataset: data_lib.Dataset, batch: int, hidden: tuple[int, ...], epochs: int, matmul: float) -> dict:
    """``train.fit`` throughput at one (batch, width, rows) point."""
    config = baseline_config(epochs, batch_size=batch)
    config = dataclasses.replace(config, model=ModelConfig(hidden_sizes=hidden))
    with contextlib.redirect_stdout(io.StringIO()):
        result = train.fit(config, dataset, workdir=None, progress=False)
    flops = train_flops_per_sample(dataset.n_features, hidden, dataset.n_classes)
    steps = train.steps_per_epoch(len(dataset.y_train), batch)
    sps = float(np.median([h["samples_per_second"] for h in result.history]))
    return {
        "batch_size": batch,
        "hidden": list(hidden),
        "train_rows": len(dataset.y_train),
        "epochs": result.epochs_run,
        "samples_per_second": sps,
        "us_per_step": 1e6 * batch / sps,
        "epoch_seconds": steps * batch / sps,
        "compile_seconds": result.compile_seconds,
        "flops_per_sample": flops,
        "matmul_fraction": sps * flops / matmul,
    }


def scaling(quick: bool, matmul: float, deadline: float) -> dict[str, list[dict]]:
    """samples/s against batch size, hidden width and dataset size (one varies, the rest at baseline)."""
    if quick:
        grid = {"batch": [64, 1024], "width": [64, 512], "rows": [10_000, 100_000]}
    else:
        grid = {
            "batch": [64, 128, 256, 512, 1024, 2048, 4096],
            "width": [64, 128, 256, 512, 1024],
            "rows": [10_000, 30_000, 100_000, 300_000, 1_000_000],
        }
    epochs = 2 if quick else 3
    base = synthetic_dataset(100_000)
    out: dict[str, list[dict]] = {k: [] for k in grid}
    plan: list[tuple[str, Callable[[], dict]]] = []
    plan += [("batch", lambda b=b: scaling_point(base, b, (128, 64), epochs, matmul)) for b in grid["batch"]]
    plan += [("width", lambda w=w: scaling_point(base, 256, (w, w), epochs, matmul)) for w in grid["width"]]
    plan += [
        (
            "rows",
            lambda n=n: scaling_point(base if n == 100_000 else synthetic_dataset(n), 256, (128, 64), epochs, matmul),
        )
        for n in grid["rows"]
    ]
    for table, point in plan:
        if time.perf_counter() > deadline:
            out.setdefault("skipped", []).append({"table": table, "reason": "time budget"})
            continue
        row = point()
        out[table].append(row)
        print(f"  scaling {table}: {_scaling_line(row)}", flush=True)
    return out


def _scaling_line(r: dict) -> str:
    return (
        f"batch {r['batch_size']}, hidden {r['hidden']}, {r['train_rows']:,} rows: "
        f"{r['samples_per_second']:,.0f} samples/s ({100 * r['matmul_fraction']:.0f}% of matmul)"
    )


# ----------------------------------------------------------------------------- report


def rescale_fractions(results: dict[str, Any], matmul: float) -> None:
    """Recomputes every row's matmul fraction against ``matmul`` FLOP/s."""
    rows = list(results.get("head", {}).get("rows", []))
    for table in ("batch", "width", "rows"):
        rows += results.get("scaling", {}).get(table, [])
    for r in rows:
        r["matmul_fraction"] = r["samples_per_second"] * r["flops_per_sample"] / matmul


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables (what ``benchmarks/RESULTS.md`` holds)."""
    m = results["machine"]
    lines = [
        f"Machine: {m['device']} ({m['backend']}, {m['n_devices']} device(s), {m['cpu_count']} CPU cores), "
        f"jax {m['jax']}, Python {m['python']}; load average at start {m['load_average']}.",
        f"Measured float32 matmul rate: {results['matmul']['flops'] / 1e9:,.1f} GFLOP/s "
        f"({results['matmul']['n']}x{results['matmul']['n']} `jnp.matmul`, the better of the measurements "
        f"before and after the sections: {', '.join(f'{v / 1e9:,.0f}' for v in results['matmul']['measured'])}).",
        "",
    ]
    if "head" in results:
        h = results["head"]
        lines += [
            f"### Head to head: {'-'.join(map(str, h['model']))}, batch {h['batch_size']}, Adam, "
            f"{h['epochs']} epochs, {h['train_rows']:,} training rows, {h['rounds']} round(s)",
            "",
            "| contender | samples/s (median epoch) | mean | compile s | test accuracy | % of matmul rate |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in h["rows"]:
            lines.append(
                f"| {r['name']} | {r['samples_per_second']:,.0f} | {r['mean_samples_per_second']:,.0f} | "
                f"{r['compile_seconds']:.2f} | "
                f"{r['test_accuracy']:.4f} | {100 * r['matmul_fraction']:.1f}% |"
            )
        lines += [
            "",
            f"Project / scikit-learn (faster setting): **{h['ratio_vs_sklearn']:.2f}x**; project / per-step loop "
            f"(Flax-example style): **{h['ratio_vs_per_step_loop']:.2f}x**; project / lean per-step loop: "
            f"**{h['ratio_vs_lean_loop']:.2f}x**; accuracy gap vs scikit-learn "
            f"{h['accuracy_gap_vs_sklearn_points']:+.2f} points.",
            "",
        ]
    if "scaling" in results:
        s = results["scaling"]
        titles = {
            "batch": "batch size (20-128-64-2)",
            "width": "hidden width (20-w-w-2, batch 256)",
            "rows": "dataset rows (20-128-64-2, batch 256)",
        }
        for key, title in titles.items():
            if not s.get(key):
                continue
            lines += [
                f"### Scaling: {title}",
                "",
                "| batch | hidden | train rows | samples/s | us/step | compile s | % of matmul rate |",
                "|---:|---|---:|---:|---:|---:|---:|",
            ]
            for r in s[key]:
                lines.append(
                    f"| {r['batch_size']} | {'-'.join(map(str, r['hidden']))} | {r['train_rows']:,} | "
                    f"{r['samples_per_second']:,.0f} | {r['us_per_step']:,.0f} | {r['compile_seconds']:.2f} | "
                    f"{100 * r['matmul_fraction']:.1f}% |"
                )
            lines.append("")
        if s.get("skipped"):
            lines += [f"Skipped for the time budget: {len(s['skipped'])} point(s).", ""]
    if "e2e" in results:
        from benchmarks.train_e2e import markdown_table

        lines += [markdown_table(results["e2e"]), ""]
    if "e2e_error" in results:
        lines += ["### End to end: failed", "", "```", results["e2e_error"], "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.train_throughput [--quick] [--only SECTIONS] [--json PATH]``."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="few epochs, small grid: a smoke run")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections from {', '.join(SECTIONS)}")
    p.add_argument("--epochs", type=int, default=None, help="epochs for the head-to-head (default 10, quick 2)")
    p.add_argument("--rounds", type=int, default=None, help="head-to-head rounds (default 3, quick 1)")
    p.add_argument("--budget-s", type=float, default=None, help="stop adding scaling points after this many seconds")
    p.add_argument(
        "--e2e-runs", default=None, help="end-to-end runs from cold,warm,off,tracked (default all; quick: cold,warm)"
    )
    p.add_argument("--json", default=None, help="also write the raw results here (after each section)")
    args = p.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        p.error(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be >= 1")
    if args.rounds is not None and args.rounds < 1:
        p.error("--rounds must be >= 1")
    from benchmarks.train_e2e import RUNS

    e2e_runs = [r.strip() for r in (args.e2e_runs or ("cold,warm" if args.quick else ",".join(RUNS))).split(",")]
    if not set(e2e_runs) <= set(RUNS) or not e2e_runs:
        p.error(f"--e2e-runs: choose from {', '.join(RUNS)}")
    start = time.perf_counter()
    epochs = args.epochs or (2 if args.quick else 10)

    results: dict[str, Any] = {"command": " ".join(["python -m benchmarks.train_throughput", *(argv or sys.argv[1:])])}

    def save() -> None:
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=2, default=float))

    results["machine"] = machine_info()
    print(f"machine: {results['machine']}", flush=True)
    results["matmul"] = matmul_flops_per_second()
    results["matmul"]["measured"] = [results["matmul"]["flops"]]
    matmul = results["matmul"]["flops"]
    print(f"float32 matmul: {matmul / 1e9:,.1f} GFLOP/s", flush=True)

    if "head" in sections:
        try:
            dataset = data_lib.prepare(baseline_config(epochs).data, 0)
        except data_lib.DataError as e:  # e.g. no pyarrow for the CSV reader on a bare accelerator image
            print(f"  the baseline CSV cannot be read ({e}); using the same synthetic task in memory", flush=True)
            results["head_data_note"] = str(e)
            dataset = synthetic_dataset(DataConfig().n_samples)
        results["head"] = head_to_head(dataset, epochs, matmul, rounds=args.rounds or (1 if args.quick else 3))
        for r in results["head"]["rows"]:
            print(f"  {r['name']}: {r['samples_per_second']:,.0f} samples/s, acc {r['test_accuracy']:.4f}", flush=True)
        save()
    if "scaling" in sections:
        budget = args.budget_s if args.budget_s is not None else (60 if args.quick else 240)
        results["scaling"] = scaling(args.quick, matmul, time.perf_counter() + budget)
        save()
    if "e2e" in sections:
        from benchmarks.train_e2e import end_to_end

        try:
            results["e2e"] = end_to_end(quick=args.quick, runs=e2e_runs)
        except (RuntimeError, subprocess.TimeoutExpired) as e:  # report the rest even if a baseline run fails
            results["e2e_error"] = str(e)[-3000:]
            print(f"  end-to-end runs failed: {results['e2e_error']}", flush=True)
    again = matmul_flops_per_second()  # a busy machine at the start would otherwise inflate every fraction
    results["matmul"]["measured"].append(again["flops"])
    if again["flops"] > results["matmul"]["flops"]:
        results["matmul"].update(flops=again["flops"], n=again["n"])
    rescale_fractions(results, results["matmul"]["flops"])
    results["machine"]["load_average_end"] = _load()
    results["seconds"] = time.perf_counter() - start

    save()
    print("\n" + markdown(results))
    print(f"(benchmark wall time {results['seconds']:.0f} s)")
    if args.json:
        print(f"raw results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
