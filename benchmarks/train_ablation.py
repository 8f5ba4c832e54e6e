"""Ablations of the training epoch: what each speed change buys, and settings that did not help.

Command (from the project root):
    python -m benchmarks.train_ablation                   # every variant, 3 interleaved rounds (~3 minutes)
    python -m benchmarks.train_ablation --rounds 1 --variants project,old-shuffle

Each variant is ``mlp_jax.train.make_train_epoch`` on the baseline task (20-128-64-2, batch
256, Adam, 70k rows) in a fresh subprocess, changed in one way: an XLA flag, a device count,
one CPU core, or one of the project's speed changes swapped back for what it replaced
(``jax.random.permutation`` for the shuffle, ``nnx.Linear``'s plain autodiff for the dense
layer). Rounds interleave the variants so a busy machine slows them alike; the table gives
the best epoch of each (and the median of per-round bests).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (description, XLA_FLAGS to add, patches to apply, run on one core)
VARIANTS: dict[str, tuple[str, str, tuple[str, ...], bool]] = {
    "project": ("the project's epoch as committed", "", (), False),
    "old-shuffle": (
        "`jax.random.permutation` shuffle (two 2-operand sorts) instead of `shuffle_indices`",
        "",
        ("shuffle",),
        False,
    ),
    "old-dense": (
        "`nnx.Linear` with plain autodiff (transposed-left kernel-gradient matmul) instead of `model.dense`",
        "",
        ("dense",),
        False,
    ),
    "old-both": ("both of the above: the epoch before this work", "", ("shuffle", "dense"), False),
    "one-core": ("one CPU core (`sched_setaffinity`)", "", (), True),
    "two-devices": (
        "2 virtual CPU devices, batch sharded (data parallel)",
        "--xla_force_host_platform_device_count=2",
        (),
        False,
    ),
    "eigen-1-thread": ("`--xla_cpu_multi_thread_eigen=false`", "--xla_cpu_multi_thread_eigen=false", (), False),
    "no-ynn-dot": (
        "YNNPACK dots off (Eigen for every matmul)",
        "--xla_cpu_experimental_ynn_fusion_type=-LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
        (),
        False,
    ),
    "ynn-all": (
        "YNNPACK dot+eltwise+reduce fusions",
        "--xla_cpu_experimental_ynn_fusion_type=+LIBRARY_FUSION_TYPE_DOT,+LIBRARY_FUSION_TYPE_ELTWISE,+LIBRARY_FUSION_TYPE_REDUCE",
        (),
        False,
    ),
    "xnn-graph": (
        "XNNPACK graph fusion (greedy)",
        "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
        (),
        False,
    ),
    "onednn": ("oneDNN on", "--xla_cpu_use_onednn=true", (), False),
    "fast-math": ("`--xla_cpu_enable_fast_math=true`", "--xla_cpu_enable_fast_math=true", (), False),
    "vector-512": ("`--xla_cpu_prefer_vector_width=512`", "--xla_cpu_prefer_vector_width=512", (), False),
    "concurrency-scheduler": (
        "`--xla_cpu_enable_concurrency_optimized_scheduler=true`",
        "--xla_cpu_enable_concurrency_optimized_scheduler=true",
        (),
        False,
    ),
}

CHILD = r"""
import json, os, sys, time
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from mlp_jax import data as data_lib, distributed, model as model_lib, train
from mlp_jax.config import Config, ModelConfig

patches, epochs, one_core = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3] == "1"
hidden = tuple(int(h) for h in sys.argv[4].split(","))
if one_core:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
if "shuffle" in patches:
    train.shuffle_indices = lambda key, n: jax.random.permutation(key, n)
if "dense" in patches:
    model_lib.dense = lambda x, kernel, bias: model_lib._affine(x, kernel, bias)
cfg = Config(model=ModelConfig(hidden_sizes=hidden))
ds = data_lib.prepare(cfg.data, cfg.seed)
mesh = distributed.make_mesh(0)
rep, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
n = len(ds.y_train)
state = distributed.put_replicated(train.create_state(cfg, train.network_spec(cfg, ds), n), rep)
x, y = distributed.put_rows(ds.x_train, rows), distributed.put_rows(ds.y_train, rows)
t = time.perf_counter()
epoch = train.make_train_epoch(cfg.train.batch_size, rows, n, rep).lower(state, x, y, train.epoch_key(0, 0)).compile()
compile_s = time.perf_counter() - t
state, m = epoch(state, x, y, train.epoch_key(0, 1)); jax.block_until_ready(m)
times = []
for e in range(2, 2 + epochs):
    t = time.perf_counter(); state, m = epoch(state, x, y, train.epoch_key(0, e)); jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
samples = (n // cfg.train.batch_size) * cfg.train.batch_size
print(json.dumps({"rates": [samples / t for t in times], "compile_s": compile_s, "devices": mesh.devices.size,
                  "loss": float(m["loss_sum"] / m["count"])}))
"""


def run_variant(name: str, epochs: int, hidden: str = "128,64") -> dict:
    """One subprocess: compile the epoch, one warm-up epoch, then ``epochs`` timed ones."""
    _, flags, patches, one_core = VARIANTS[name]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS", ""), flags]))
    env.setdefault("JAX_PLATFORMS", "cpu")
    cmd = [sys.executable, "-c", CHILD, ",".join(patches), str(epochs), "1" if one_core else "0", hidden]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.train_ablation [--rounds N] [--epochs N] [--variants a,b] [--json PATH]``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4, help="timed epochs per run")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--hidden", default="128,64", help="hidden sizes of the MLP (default: the baseline's)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.rounds < 1 or args.epochs < 1:
        p.error("--rounds and --epochs must be >= 1")
    try:
        if not all(int(h) > 0 for h in args.hidden.split(",")):
            raise ValueError
    except ValueError:
        p.error(f"--hidden: expected positive integers like 512,512, got {args.hidden!r}")
    if "one-core" in names and not hasattr(os, "sched_setaffinity"):
        names.remove("one-core")
    from benchmarks.train_throughput import _load, matmul_flops_per_second, train_flops_per_sample

    matmul = matmul_flops_per_second()["flops"]
    flops = train_flops_per_sample(20, [int(h) for h in args.hidden.split(",")], 2)  # the baseline task's sizes
    print(f"load average {_load()}; float32 matmul {matmul / 1e9:,.1f} GFLOP/s", flush=True)
    results: dict[str, list[dict]] = {n: [] for n in names}
    t0 = time.perf_counter()
    for r in range(args.rounds):
        for n in names:
            res = run_variant(n, args.epochs, args.hidden)
            results[n].append(res)
            shown = f"{max(res['rates']):,.0f} samples/s" if "rates" in res else res["error"]
            print(f"  round {r + 1} {n}: {shown}", flush=True)
    base = max((max(x["rates"]) for x in results.get("project", []) if "rates" in x), default=None)
    lines = [
        f"Hidden sizes {args.hidden}, batch 256, {args.rounds} round(s) of {args.epochs} timed epochs; "
        f"matmul rate {matmul / 1e9:,.0f} GFLOP/s.",
        "",
        "| variant | what changes | best samples/s | median of round bests | vs project | % of matmul rate |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for n in names:
        ok = [x for x in results[n] if "rates" in x]
        if not ok:
            lines.append(f"| {n} | {VARIANTS[n][0]} | failed: {results[n][0]['error']} | | | |")
            continue
        bests = [max(x["rates"]) for x in ok]
        rel = f"{max(bests) / base:.2f}x" if base else ""
        frac = 100 * max(bests) * flops / matmul
        lines.append(
            f"| {n} | {VARIANTS[n][0]} | {max(bests):,.0f} | {statistics.median(bests):,.0f} | {rel} | {frac:.0f}% |"
        )
    print("\n" + "\n".join(lines))
    print(f"\n(load average at end {_load()}; {time.perf_counter() - t0:.0f} s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
