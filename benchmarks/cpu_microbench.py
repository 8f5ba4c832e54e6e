"""Two XLA:CPU measurements behind round-4 decisions: dropout mask generators, and K small MLPs at once.

Command (from the project root):
    python -m benchmarks.cpu_microbench [--members 16] [--epochs 3]

1. **Dropout masks** (why ``mlp_jax.model.dropout_bits`` hashes positions instead of calling
   ``jax.random.bernoulli``): one jitted ``lax.scan`` epoch of Adam steps on the baseline
   network (20-128-64-2, batch 256, 273 steps over 70,000 random rows), dropout 0.2 on both
   hidden layers, masks from: none, ``jax.random.bernoulli`` (Threefry), ``jax.random.bits``,
   and the project's ``mlp_jax.model.dropout``. Prints samples/s for each.
2. **K members in one program** (why a 16-member sweep costs ~16x one member's arithmetic on
   2 CPU cores): the same epoch for 1 member, for K members ``vmap``-ed, and for K members
   unrolled as K separate chains in one program; then single matmuls: one 256x128x64, a
   K-way batched one, and one wide 4096x128x64, in microseconds.

The epochs are timed after a compile-and-run warm-up, median of ``--epochs`` runs. Figures
from this box are in benchmarks/RESULTS.md ("Training", "Sweeps and ensembles").
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

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


def _masks(kind: str) -> Callable[[jax.Array, jax.Array, int], jax.Array]:
    def apply(h: jax.Array, key: jax.Array, i: int) -> jax.Array:
        k = jax.random.fold_in(key, i)
        if kind == "none":
            return h
        if kind == "project":
            return model_lib.dropout(h, 0.2, jax.random.bits(k, (), jnp.uint32))
        if kind == "bernoulli":
            keep = jax.random.bernoulli(k, 0.8, h.shape)
        else:  # bits
            keep = jax.random.bits(k, h.shape, jnp.uint32) >= jnp.uint32(int(0.2 * 2**32))
        return jnp.where(keep, h / 0.8, 0.0)

    return apply


def _loss(drop: Callable, p: dict, x: jax.Array, y: jax.Array, key: jax.Array) -> jax.Array:
    h = drop(jax.nn.relu(x @ p["w1"] + p["b1"]), key, 0)
    h = drop(jax.nn.relu(h @ p["w2"] + p["b2"]), key, 1)
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


def dropout_masks(epochs: int) -> dict[str, float]:
    """samples/s of one scan-fused epoch per mask generator."""
    key = jax.random.key(0)
    x = jax.random.normal(key, (ROWS, D))
    y = (x[:, 0] > 0).astype(jnp.int32)
    opt = optax.adam(1e-3)
    order = jax.random.permutation(key, ROWS)[: STEPS * BATCH].reshape(STEPS, BATCH)
    keys = jax.random.split(key, STEPS)
    out = {}
    for kind in ("none", "bernoulli", "bits", "project"):
        drop = _masks(kind)

        @jax.jit
        def epoch(p, s, drop=drop):
            def body(c, inp):
                (p, s), (idx, k) = c, inp
                g = jax.grad(lambda p: _loss(drop, p, x[idx], y[idx], k))(p)
                u, s = opt.update(g, s, p)
                return (optax.apply_updates(p, u), s), None

            return jax.lax.scan(body, (p, s), (order, keys))[0]

        p = _init(key)
        out[kind] = STEPS * BATCH / _time(epoch, (p, opt.init(p)), epochs)
    return out


def members(k: int, epochs: int) -> dict[str, float]:
    """Seconds per epoch: 1 member, K vmapped, K unrolled; microseconds per matmul."""
    key = jax.random.key(0)
    x = jax.random.normal(key, (ROWS, D))
    y = (x[:, 0] > 0).astype(jnp.int32)
    opt = optax.adam(1e-3)
    drop = _masks("none")

    def step(p, s, idx):
        g = jax.grad(lambda p: _loss(drop, p, x[idx], y[idx], key))(p)
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
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per case (median)")
    args = p.parse_args(argv)
    print(f"backend {jax.default_backend()}, jax {jax.__version__}")
    for kind, rate in dropout_masks(args.epochs).items():
        print(f"dropout masks {kind:<10} {rate:12,.0f} samples/s")
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
