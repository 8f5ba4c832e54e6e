import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mlp_jax import model as M


def test_shapes_and_parameter_count():
    mlp = M.create(20, 3, (128, 64), "relu", 0.0, seed=0)
    out = mlp(jnp.ones((5, 20)))
    assert out.shape == (5, 3)
    _, params = nnx.split(mlp)
    n = sum(p.size for p in jax.tree.leaves(params))
    assert n == M.count_params(20, (128, 64), 3) == 20 * 128 + 128 + 128 * 64 + 64 + 64 * 3 + 3
    assert M.forward_flops(20, (128, 64), 3) == 2 * (20 * 128 + 128 * 64 + 64 * 3)


def test_init_depends_only_on_seed():
    a = nnx.split(M.create(4, 2, (8,), "tanh", 0.0, seed=1))[1]
    b = nnx.split(M.create(4, 2, (8,), "tanh", 0.0, seed=1))[1]
    c = nnx.split(M.create(4, 2, (8,), "tanh", 0.0, seed=2))[1]
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(c), strict=True))


def test_dropout_only_with_a_key_and_keyed():
    mlp = M.create(8, 2, (256,), "relu", 0.5, seed=0)
    x = jnp.ones((4, 8))
    np.testing.assert_array_equal(mlp(x), mlp(x))  # deterministic without a key
    k1, k2 = jax.random.split(jax.random.key(0))
    assert not np.allclose(mlp(x, dropout_key=k1), mlp(x))
    np.testing.assert_array_equal(mlp(x, dropout_key=k1), mlp(x, dropout_key=k1))
    assert not np.allclose(mlp(x, dropout_key=k1), mlp(x, dropout_key=k2))
    # no parameters besides the Linear layers: the split state is exactly the params
    _, state = nnx.split(mlp)
    assert all(isinstance(v, nnx.Param) for _, v in nnx.to_flat_state(state))
