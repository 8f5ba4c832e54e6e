"""The Flax NNX MLP classifier.

Trained functionally: ``graphdef, params = nnx.split(model)`` once, then pure functions
``nnx.merge(graphdef, params)(x)`` under plain ``jax.jit`` (see ``mlp_jax.train``).
Dropout takes its key as an argument, so the module holds no RNG state and the split
state is exactly the parameters.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "silu": jax.nn.silu, "tanh": jnp.tanh}


class MLP(nnx.Module):
    """``in -> [Linear -> activation -> dropout] * len(hidden_sizes) -> Linear(n_classes)`` logits."""

    def __init__(
        self,
        in_features: int,
        hidden_sizes: Sequence[int],
        n_classes: int,
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        sizes = [in_features, *hidden_sizes]
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)])
        self.head = nnx.Linear(sizes[-1], n_classes, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)
        self.activation = activation

    def __call__(self, x: jax.Array, *, dropout_key: jax.Array | None = None) -> jax.Array:
        """Logits ``[batch, n_classes]``; dropout is applied only when ``dropout_key`` is given."""
        act = ACTIVATIONS[self.activation]
        train = dropout_key is not None and self.dropout.rate > 0
        keys = jax.random.split(dropout_key, len(self.hidden)) if train else [None] * len(self.hidden)
        for layer, key in zip(self.hidden, keys, strict=True):
            x = act(layer(x))
            if train:
                x = self.dropout(x, deterministic=False, rngs=key)
        return self.head(x)


def create(
    in_features: int, n_classes: int, hidden_sizes: Sequence[int], activation: str, dropout: float, seed: int
) -> MLP:
    """A freshly initialised MLP (parameters depend only on the sizes and ``seed``)."""
    return MLP(
        in_features, tuple(hidden_sizes), n_classes, activation=activation, dropout=dropout, rngs=nnx.Rngs(params=seed)
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
