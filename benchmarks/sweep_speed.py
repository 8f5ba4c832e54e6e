"""Wall time of a 16-member sweep in one program vs 1 member vs 16 sequential ``runner.run`` calls.

Command (from the project root):
    python -m benchmarks.sweep_speed [--epochs 3] [--members 16] [--no-sequential] [--out FILE.json]

All three train the baseline (20-128-64-2 MLP, Adam, batch 256) on the synthetic split for
the same number of epochs with early stopping off, in this process, compile included,
data loading excluded (done once), after an untimed warm-up on another network. The sweep varies the seed (``sweep.seed=0..K-1``); the
sequential runs use the same seeds through ``mlp_jax.runner.run`` with tracking off and
the persistent compilation cache off (each run also evaluates, plots and writes its
summary, as a user's loop would). Targets: K members <= 3x one member, >= 5x faster than
K sequential runs.

Devices: as ``python -m experiments.sweep`` does, the process asks JAX for one CPU device per
core (``distributed.use_cpu_cores``) before anything starts JAX, so the K members are sharded over the
cores; one member runs on one device either way. The sequential runs get ``train.num_devices=1``,
which is what ``python -m experiments.baseline`` has on a CPU host (splitting one run's batches
over the cores is slower; measured in ``mlp_jax.sweep``'s docstring).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLP_JAX_COMPILATION_CACHE", "off")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import jax

from mlp_jax import data as data_lib
from mlp_jax import distributed, runner, sweep
from mlp_jax.config import Config, apply_overrides

CPU_DEVICES = distributed.use_cpu_cores()  # before anything makes an array


def _config(epochs: int, workdir: str, extra: list[str]) -> Config:
    base = [
        f"train.epochs={epochs}",
        "train.patience=0",
        "train.progress=false",
        "train.compare_sklearn=false",
        "tracking.enabled=false",
        f"workdir={workdir}",
    ]
    return apply_overrides(Config(name="sweep_speed"), base + extra)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument(
        "--no-sequential",
        dest="sequential",
        action="store_false",
        help="skip the K sequential runner runs (to time larger K)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    k = args.members
    seeds = ",".join(map(str, range(k)))
    devices = jax.devices()
    out: dict = {
        "epochs": args.epochs,
        "members": k,
        "backend": jax.default_backend(),
        "device": devices[0].device_kind,
        "devices": len(devices),
        "cpu_devices": CPU_DEVICES,
    }
    with tempfile.TemporaryDirectory() as tmp:
        dataset = data_lib.prepare(_config(args.epochs, tmp, []).data, 0)
        # Untimed warm-up on another network and batch size, so that no program it compiles is
        # reused below: the process's first-use costs (backend start, first traces) would
        # otherwise land on whichever timed run comes first.
        sweep.run_sweep(_config(1, tmp, ["sweep.seed=0", "train.batch_size=64", "model.hidden_sizes=32"]), dataset)

        t = time.perf_counter()
        one = sweep.run_sweep(_config(args.epochs, tmp, ["sweep.seed=0"]), dataset)
        out["one_member_seconds"] = time.perf_counter() - t
        out["one_member_compile_seconds"] = one.compile_seconds

        t = time.perf_counter()
        many = sweep.run_sweep(_config(args.epochs, tmp, [f"sweep.seed={seeds}"]), dataset)
        out["sweep_seconds"] = time.perf_counter() - t
        out["sweep_compile_seconds"] = many.compile_seconds
        out["sweep_train_seconds"] = many.train_seconds
        out["one_member_train_seconds"] = one.train_seconds

        if args.sequential:
            t = time.perf_counter()
            for s in range(k):
                runner.run(_config(args.epochs, f"{tmp}/run{s}", [f"seed={s}", "train.num_devices=1"]), progress=False)
            out["sequential_seconds"] = time.perf_counter() - t

    out["sweep_over_one"] = out["sweep_seconds"] / out["one_member_seconds"]
    out["sweep_over_one_train_only"] = out["sweep_train_seconds"] / out["one_member_train_seconds"]
    if args.sequential:
        out["sequential_over_sweep"] = out["sequential_seconds"] / out["sweep_seconds"]
    out["load_average"] = os.getloadavg()
    print(json.dumps(out, indent=2))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
