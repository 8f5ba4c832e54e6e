"""The Flax NNX MLP (classification logits or regression outputs).

Trained functionally: ``graphdef, params = nnx.split(model)`` once, then pure functions
``nnx.merge(graphdef, params)(x)`` under plain ``jax.jit`` (see ``mlp_jax.train``).
Dropout takes its key as an argument, so the module holds no RNG state and the split
state is exactly the parameters.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "silu": jax.nn.silu, "tanh": jnp.tanh}


def _affine(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
    return y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))


@jax.custom_vjp
def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """``x @ kernel + bias``, computed exactly as ``nnx.Linear`` does, with a CPU-friendly gradient.

    The kernel gradient ``x.T @ g`` contracts the batch axis, the leading axis of both
    operands. XLA:CPU hands matmuls with a row-major left operand to its fast
    YNNPACK kernels but runs this "transposed-left" one in Eigen, slower (63 vs 41 us
    for the 128x64 kernel at batch 256), and it folds any transpose written in JAX back
    into the dot. So on CPU the backward pass materialises the transpose of the narrower
    operand behind an ``optimization_barrier`` (a copy of at most ``batch x width``
    floats): the 20-128-64-2 epoch runs ~1.1x faster on a quiet 2-core machine, ~1.3x on a
    busy one (benchmarks/RESULTS.md). Reverse mode only (no ``jax.jvp``).
    """
    return _affine(x, kernel, bias)


def _dense_fwd(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return _affine(x, kernel, bias), (x, kernel)


def _dense_bwd(res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    x, kernel = res
    dx = jax.lax.dot_general(g, kernel, (((g.ndim - 1,), (1,)), ((), ())))
    x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    if jax.default_backend() != "cpu":  # cuBLAS and friends take any operand layout at full speed
        dkernel = jax.lax.dot_general(x2, g2, (((0,), (0,)), ((), ())))
    elif x2.shape[1] <= g2.shape[1]:
        dkernel = jax.lax.optimization_barrier(x2.T) @ g2
    else:  # the outer barrier stops XLA from turning (g.T @ x).T back into x.T @ g
        dkernel = jax.lax.optimization_barrier(jax.lax.optimization_barrier(g2.T) @ x2).T
    return dx, dkernel, jnp.sum(g2, axis=0)


dense.defvjp(_dense_fwd, _dense_bwd)


class MLP(nnx.Module):
    """``inputs -> [Linear -> activation -> dropout] * len(hidden_sizes) -> Linear(n_outputs)``.

    The input matrix ``x`` ``[batch, in_features]`` holds ``n_dense`` dense columns followed by
    one column per categorical input carrying its integer code (a float holding an exact
    integer, so one matrix travels through the scan-fused epoch and the serving buckets).
    Each categorical column becomes a one-hot vector (``embedding_dims[i] == 0``) or a
    learned embedding of width ``embedding_dims[i]`` (Guo & Berkhahn 2016, "Entity
    Embeddings of Categorical Variables"), concatenated after the dense block.
    Outputs are class logits (classification) or standardised targets (regression).
    """

    def __init__(
        self,
        in_features: int,
        hidden_sizes: Sequence[int],
        n_classes: int,
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        n_dense: int = -1,
        cardinalities: Sequence[int] = (),
        embedding_dims: Sequence[int] = (),
        rngs: nnx.Rngs,
    ):
        self.cardinalities = tuple(int(c) for c in cardinalities)
        self.embedding_dims = tuple(int(d) for d in embedding_dims) or (0,) * len(self.cardinalities)
        if len(self.embedding_dims) != len(self.cardinalities):
            raise ValueError("embedding_dims must give one width (0 = one-hot) per categorical input")
        self.n_dense = in_features - len(self.cardinalities) if n_dense < 0 else n_dense
        if self.n_dense + len(self.cardinalities) != in_features:
            raise ValueError(
                f"in_features {in_features} != n_dense {self.n_dense} + {len(self.cardinalities)} categorical"
            )
        self.embeddings = nnx.List(
            [nnx.Embed(c, d, rngs=rngs) for c, d in zip(self.cardinalities, self.embedding_dims, strict=True) if d > 0]
        )
        width = self.n_dense + sum(d or c for c, d in zip(self.cardinalities, self.embedding_dims, strict=True))
        sizes = [width, *hidden_sizes]
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)])
        self.head = nnx.Linear(sizes[-1], n_classes, rngs=rngs)
        self.dropout_rate = float(dropout)
        self.activation = activation

    def embed_inputs(self, x: jax.Array) -> jax.Array:
        """``[batch, in_features]`` -> ``[batch, width]``: dense block, then one-hot / embedded codes."""
        if not self.cardinalities:
            return x
        parts = [x[:, : self.n_dense]]
        codes = x[:, self.n_dense :].astype(jnp.int32)
        embeds = iter(self.embeddings)
        for i, (card, dim) in enumerate(zip(self.cardinalities, self.embedding_dims, strict=True)):
            c = jnp.clip(codes[:, i], 0, card - 1)
            parts.append(next(embeds)(c) if dim > 0 else jax.nn.one_hot(c, card, dtype=x.dtype))
        return jnp.concatenate(parts, axis=-1)

    def __call__(
        self, x: jax.Array, *, dropout_key: jax.Array | None = None, dropout_rate: jax.Array | None = None
    ) -> jax.Array:
        """Outputs ``[batch, n_outputs]``; dropout is applied only when ``dropout_key`` is given.

        ``dropout_rate``: a traced rate that replaces the static one (a sweep member's own).
        """
        act = ACTIVATIONS[self.activation]
        x = self.embed_inputs(x)
        rate = self.dropout_rate if dropout_rate is None else dropout_rate
        train = dropout_key is not None and (dropout_rate is not None or self.dropout_rate > 0)
        if train:  # one random 32-bit word per layer from the key; the masks come from hashing it
            seeds = jax.random.bits(dropout_key, (len(self.hidden),), jnp.uint32)
        for i, layer in enumerate(self.hidden):
            x = act(dense(x, layer.kernel[...], layer.bias[...]))
            if train:
                x = dropout(x, rate, seeds[i])
        return dense(x, self.head.kernel[...], self.head.bias[...])


def _lowbias32(x: jax.Array) -> jax.Array:
    """A 32-bit integer hash with low bias (xor-shift-multiply; "lowbias32", C. Wellons' hash-prospector)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def dropout_bits(seed: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 ``[*shape]``, uniform: ``hash(hash(position) ^ seed)``, a counter-based generator.

    Counter-based, as Threefry and Philox are (Salmon et al. 2011, "Parallel random numbers:
    as easy as 1, 2, 3"), but two rounds of a cheap integer hash instead of Threefry's 20: on
    XLA:CPU, dropout 0.2 with ``jax.random.bernoulli`` (Threefry) masks trains the 20-128-64-2
    baseline at ~0.6x the samples/s of no dropout; with these masks at ~0.98x
    (``python -m benchmarks.cpu_microbench``; benchmarks/RESULTS.md "Training").
    Good enough for dropout masks, not for anything that needs a cryptographic-quality stream.
    """
    return _lowbias32(_lowbias32(jax.lax.iota(jnp.uint32, math.prod(shape))) ^ seed).reshape(shape)


def dropout(x: jax.Array, rate: float | jax.Array, seed: jax.Array) -> jax.Array:
    """Inverted dropout of ``x`` with probability ``rate`` (Srivastava et al. 2014): kept units scaled by 1/(1-rate).

    ``rate`` may be traced (a sweep member's own); ``seed`` is a uint32 scalar: the same seed,
    shape and rate give the same mask. Rate 0 is the identity.
    """
    keep = 1.0 - rate
    # the top 24 bits against rate * 2^24 (exact in float32): P(dropped) = rate to within 6e-8
    threshold = (jnp.asarray(rate, jnp.float32) * 16777216.0).astype(jnp.uint32)
    mask = (dropout_bits(seed, x.shape) >> 8) >= threshold
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def create(
    in_features: int,
    n_classes: int,
    hidden_sizes: Sequence[int],
    activation: str,
    dropout: float,
    seed: int,
    *,
    n_dense: int = -1,
    cardinalities: Sequence[int] = (),
    embedding_dims: Sequence[int] = (),
) -> MLP:
    """A freshly initialised MLP (parameters depend only on the sizes and ``seed``)."""
    return MLP(
        in_features,
        tuple(hidden_sizes),
        n_classes,
        activation=activation,
        dropout=dropout,
        n_dense=n_dense,
        cardinalities=cardinalities,
        embedding_dims=embedding_dims,
        rngs=nnx.Rngs(params=seed),
    )


def layer_sizes(in_features: int, hidden_sizes: Sequence[int], n_classes: int) -> list[int]:
    return [in_features, *hidden_sizes, n_classes]


def count_params(in_features: int, hidden_sizes: Sequence[int], n_classes: int) -> int:
    """Weights + biases of the dense layers."""
    s = layer_sizes(in_features, hidden_sizes, n_classes)
    return sum(a * b + b for a, b in itertools.pairwise(s))


def forward_flops(in_features: int, hidden_sizes: Sequence[int], n_classes: int) -> int:
    """Matmul FLOPs of one forward pass for one row (2 per weight)."""
    s = layer_sizes(in_features, hidden_sizes, n_classes)
    return sum(2 * a * b for a, b in itertools.pairwise(s))


def apply(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    x: jax.Array,
    dropout_key: jax.Array | None = None,
    dropout_rate: jax.Array | None = None,
) -> jax.Array:
    """The network's raw outputs ``[batch, n_outputs]`` (logits, or standardised regression targets).

    ``dropout_rate``: a traced rate replacing the static one (a sweep member's own).
    """
    return nnx.merge(graphdef, params)(x, dropout_key=dropout_key, dropout_rate=dropout_rate)


def probabilities_fn(graphdef: nnx.GraphDef) -> Callable[[nnx.State, jax.Array], jax.Array]:
    """``f(params, x) -> class probabilities [batch, n_classes]`` (unjitted: callers jit or AOT-compile it).

    ``x`` is the preprocessed input matrix (see :class:`MLP`).
    """

    def f(params: nnx.State, x: jax.Array) -> jax.Array:
        return jax.nn.softmax(apply(graphdef, params, x), axis=-1)

    return f
