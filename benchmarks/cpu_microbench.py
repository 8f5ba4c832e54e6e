"""Two XLA:CPU measurements behind round-4 decisions: dropout mask generators, and K small MLPs at once.

Command (from the project root):
    python -m benchmarks.cpu_microbench [--members 16] [--epochs 3]

1. **Dropout masks** (why ``mlp_jax.model.dropout_bits`` hashes positions instead of calling
   ``jax.random.bernoulli``): the project's own training loop (``train.fit``, the baseline
   experiment's config and data, 70,000 training rows, ``--epochs`` epochs, early stopping
   off), interleaved over ``--rounds`` rounds: no dropout, dropout 0.2 with the project's
   masks, and dropout 0.2 with ``mlp_jax.model.dropout`` swapped for a Threefry
   ``jax.random.bernoulli`` mask. Prints the median training samples/s of each.
2. **K members in one program** (why a 16-member sweep costs ~16x one member's arithmetic on
   2 CPU cores): the same epoch for 1 member, for K members ``vmap``-ed, and for K members
   unrolled as K separate chains in one program; then single matmuls: one 256x128x64, a
   K-way batched one, and one wide 4096x128x64, in microseconds.

The epochs are timed after a compile-and-run warm-up, median of ``--epochs`` runs. Figures
from this box are in benchmarks/RESULTS.md ("Training", "Sweeps and ensembles").
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlp_jax import model as model_lib

BATCH, STEPS, D, ROWS = 256, 273, 20, 70_000


def _init(key: jax.Array) -> dict[str, jax.Array]:
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w1": jax.random.normal(k1, (D, 128)) * 0.1,
        "b1": jnp.zeros(128),
        "w2": jax.random.normal(k2, (128, 64)) * 0.1,
        "b2": jnp.zeros(64),
        "w3": jax.random.normal(k3, (64, 2)) * 0.1,
        "b3": jnp.zeros(2),
    }


def _loss(p: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    h = jax.nn.relu(x @ p["w1"] + p["b1"])
    h = jax.nn.relu(h @ p["w2"] + p["b2"])
    return optax.softmax_cross_entropy_with_integer_labels(h @ p["w3"] + p["b3"], y).mean()


def _time(fn: Callable, args: tuple, epochs: int) -> float:
    out = fn(*args)
    jax.block_until_ready(out)
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _threefry_dropout(x: jax.Array, rate: Any, seed: jax.Array) -> jax.Array:
    """What dropout cost before: a Threefry ``bernoulli`` mask (the seed word folded into a key)."""
    keep = 1.0 - rate
    mask = jax.random.bernoulli(jax.random.fold_in(jax.random.key(0), seed), keep, x.shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def dropout_masks(epochs: int, rounds: int) -> dict[str, float]:
    """Median training samples/s of ``train.fit`` per mask generator, the cases interleaved."""
    from experiments.baseline import get_config
    from mlp_jax import data as data_lib
    from mlp_jax import train
    from mlp_jax.config import apply_overrides

    base = get_config()
    with contextlib.redirect_stdout(io.StringIO()):
        dataset = data_lib.prepare(base.data, base.seed)
    cases = {
        "no dropout": ("0", None),
        "project masks": ("0.2", None),
        "threefry bernoulli": ("0.2", _threefry_dropout),
    }
    rates: dict[str, list[float]] = {c: [] for c in cases}
    project_dropout = model_lib.dropout
    for _ in range(rounds):
        for case, (rate, replacement) in cases.items():
            config = apply_overrides(
                base,
                [
                    f"model.dropout={rate}",
                    f"train.epochs={epochs}",
                    "train.patience=0",
                    "train.progress=false",
                    "tracking.enabled=false",
                    "train.compare_sklearn=false",
                ],
            )
            model_lib.dropout = replacement or project_dropout  # looked up when the step is traced
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    result = train.fit(config, dataset)
            finally:
                model_lib.dropout = project_dropout
            rates[case].append(result.train_samples_per_second)
    return {c: float(np.median(v)) for c, v in rates.items()}


def members(k: int, epochs: int) -> dict[str, float]:
    """Seconds per epoch: 1 member, K vmapped, K unrolled; microseconds per matmul."""
    key = jax.random.key(0)
    x = jax.random.normal(key, (ROWS, D))
    y = (x[:, 0] > 0).astype(jnp.int32)
    opt = optax.adam(1e-3)

    def step(p, s, idx):
        g = jax.grad(lambda p: _loss(p, x[idx], y[idx]))(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    def unrolled(p, s, idx):
        outs = [step(*(jax.tree.map(lambda a, i=i: a[i], t) for t in (p, s)), idx[i]) for i in range(k)]
        return jax.tree.map(lambda *a: jnp.stack(a), *outs)

    def epoch_of(f: Callable) -> Callable:
        @jax.jit
        def epoch(p, s, order):
            return jax.lax.scan(lambda c, idx: (f(*c, idx), None), (p, s), order)[0]

        return epoch

    def orders(n: int) -> jax.Array:
        perm = jax.vmap(lambda kk: jax.random.permutation(kk, ROWS)[: STEPS * BATCH].reshape(STEPS, BATCH))
        return perm(jax.random.split(key, n)).transpose(1, 0, 2)  # [steps, members, batch]

    one = _init(key)
    stacked = jax.vmap(_init)(jax.random.split(key, k))
    out = {
        "one_member_s": _time(epoch_of(step), (one, opt.init(one), orders(1)[:, 0]), epochs),
        "vmapped_s": _time(epoch_of(jax.vmap(step)), (stacked, jax.vmap(opt.init)(stacked), orders(k)), epochs),
        "unrolled_s": _time(epoch_of(unrolled), (stacked, jax.vmap(opt.init)(stacked), orders(k)), epochs),
    }
    a, b = jnp.ones((k, 256, 128)), jnp.ones((k, 128, 64))
    for name, f in (
        ("matmul_256x128x64_us", lambda a, b: a[0] @ b[0]),
        (f"batched_{k}x256x128x64_us", lambda a, b: jnp.einsum("kbi,kio->kbo", a, b)),
        ("matmul_4096x128x64_us", lambda a, b: a.reshape(-1, 128)[:4096] @ b[0]),
    ):
        fn = jax.jit(f)
        fn(a, b).block_until_ready()
        t = time.perf_counter()
        for _ in range(200):
            r = fn(a, b)
        r.block_until_ready()
        out[name] = (time.perf_counter() - t) / 200 * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_microbench", description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3, help="epochs per case (median epoch; train.fit: epochs trained)")
    p.add_argument("--rounds", type=int, default=2, help="dropout section: interleaved rounds")
    args = p.parse_args(argv)
    print(f"backend {jax.default_backend()}, jax {jax.__version__}")
    masks = dropout_masks(max(args.epochs, 5), args.rounds)
    for kind, rate in masks.items():
        print(f"train.fit, {kind:<20} {rate:12,.0f} samples/s ({rate / masks['no dropout']:.2f}x no dropout)")
    m = members(args.members, args.epochs)
    for name, v in m.items():
        print(f"{name:<28} {v:10.3f}")
    print(
        f"{args.members} members: vmapped {m['vmapped_s'] / m['one_member_s']:.1f}x one member's epoch, "
        f"unrolled {m['unrolled_s'] / m['one_member_s']:.1f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
