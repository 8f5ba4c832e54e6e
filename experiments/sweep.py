"""Sweep: the baseline 20-128-64-2 MLP, 4 learning rates x 4 seeds = 16 members in one program.

Command (from the project root):
    python -m experiments.sweep [key=value ...]      # --help lists every key

Any ``sweep.<key>=<values>`` replaces or adds an axis (``sweep.optim.weight_decay=0,1e-4``),
``sweep.samples=N`` with ``lo:hi`` ranges draws N members at random. Trains every member
on the baseline synthetic split (one compiled program per shape), checkpoints in
checkpoints/sweep/group-<g>/ (a rerun resumes), prints the member table and the top-5
ensemble against the best single member, and writes the table to checkpoints/sweep/summary.json.
Print-only: no MLflow tracking yet.

Measured once with ``train.epochs=3`` on the shared 2-core CPU box (load average ~7, so the
process got ~40% of the CPU: 27 s user in 73 s real; rerun on a quiet box): 16 members in one
program, compile 13.7 s, train 21.0 s, best single member (lr 1e-2, seed 2) val log loss 0.0488,
test 0.0610; top-5 ensemble val 0.0465, test 0.0568. The 30-epoch default was not measured yet.
Speed against one member and 16 sequential runs: benchmarks/sweep_speed.py.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from mlp_jax.config import Config, ConfigError, SweepConfig, TrackingConfig, apply_overrides, help_text

TOP = 5


def get_config() -> Config:
    return Config(
        name="sweep",
        tracking=TrackingConfig(enabled=False),
        sweep=SweepConfig(axes=("optim.learning_rate=3e-4,1e-3,3e-3,1e-2", "seed=0,1,2,3")),
    )


def log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    p = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)
    return float(-np.mean(np.log(p)))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip(), end="\n\n")
        print(help_text(get_config()))
        return 0
    try:
        config = apply_overrides(get_config(), argv)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2

    from mlp_jax import data as data_lib
    from mlp_jax import sweep
    from mlp_jax.runner import write_json_atomic

    t0 = time.perf_counter()
    dataset = data_lib.prepare(config.data, config.seed)
    workdir = Path(config.resolved_workdir).resolve()

    def progress(r: sweep.EpochReport) -> None:
        if config.train.progress and r.rows:
            best = min(
                (row["val_loss"] for row in r.rows.values() if row["val_loss"] is not None), default=float("nan")
            )
            stopped = "".join(f", member {i} stopped ({why})" for i, why in r.stopped.items())
            print(
                f"group {r.group} epoch {r.epoch}: {len(r.active)} active, best val loss {best:.4f}{stopped}",
                flush=True,
            )

    try:
        result = sweep.run_sweep(config, dataset, str(workdir), on_epoch=progress)
    except (ConfigError, sweep.SweepError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    table = result.table()
    print(f"\n{'member':>6}  {'values':<50} {'best val loss':>13} {'epoch':>5} {'run':>4}  stopped")
    for row in table:
        values = " ".join(f"{k}={v}" for k, v in row["values"].items())
        loss = "-" if row["best_val_loss"] is None else f"{row['best_val_loss']:.5f}"
        print(
            f"{row['member']:>6}  {values:<50} {loss:>13} {row['best_epoch']:>5} {row['epochs_run']:>4}  {row['stopped']}"
        )

    top = sweep.top_k(result, TOP)
    ensemble: dict[str, object] = {}
    if top:
        ids = [m.index for m in top]
        single = [ids[0]]
        for split, x, y in (("val", dataset.x_val, dataset.y_val), ("test", dataset.x_test, dataset.y_test)):
            ensemble[f"top{len(ids)}_{split}_log_loss"] = log_loss(y, result.predict(x, ids)[0])
            ensemble[f"best_member_{split}_log_loss"] = log_loss(y, result.predict(x, single)[0])
        ensemble["top"] = ids
        print(
            f"\ntop-{len(ids)} ensemble (members {ids}): val log loss {ensemble[f'top{len(ids)}_val_log_loss']:.5f}, "
            f"test {ensemble[f'top{len(ids)}_test_log_loss']:.5f}; best member {ids[0]}: "
            f"val {ensemble['best_member_val_log_loss']:.5f}, test {ensemble['best_member_test_log_loss']:.5f}"
        )
    wall = time.perf_counter() - t0
    summary = {
        "experiment": config.name,
        "workdir": str(workdir),
        "members": table,
        "ensemble": ensemble,
        "n_devices": result.n_devices,
        "timings": {**result.timings, "wall_in_process": wall},
        "dataset": {"source": dataset.source, "digest": dataset.digest, **dataset.split_sizes()},
    }
    write_json_atomic(workdir / "summary.json", summary)
    print(
        f"{len(table)} members in {len(result.groups)} program(s) on {result.n_devices} device(s): "
        f"compile {result.compile_seconds:.2f} s, train {result.train_seconds:.2f} s, wall {wall:.1f} s; "
        f"summary: {workdir / 'summary.json'}"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    raise SystemExit(main())
