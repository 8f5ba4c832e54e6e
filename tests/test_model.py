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


def test_dropout_masks_drop_the_rate_scale_the_rest_and_differ_by_seed():
    x = jnp.ones((512, 256))
    seeds = jax.random.bits(jax.random.key(3), (8,), jnp.uint32)
    for rate in (0.1, 0.2, 0.5):
        y = M.dropout(x, rate, seeds[0])
        kept = np.asarray(y) != 0
        assert abs(kept.mean() - (1 - rate)) < 0.005  # 131,072 draws: 5 sigma is ~0.007 at rate 0.5
        np.testing.assert_allclose(np.asarray(y)[kept], 1 / (1 - rate), rtol=1e-6)
        # no structure along either axis: every row's and every column's keep rate is near 1 - rate
        assert np.abs(kept.mean(axis=1) - (1 - rate)).max() < 0.15
        assert np.abs(kept.mean(axis=0) - (1 - rate)).max() < 0.15
    np.testing.assert_array_equal(M.dropout(x, 0.0, seeds[0]), x)  # rate 0: identity
    np.testing.assert_array_equal(M.dropout(x, 0.3, seeds[1]), M.dropout(x, 0.3, seeds[1]))
    masks = np.stack([np.asarray(M.dropout(x, 0.5, s)) != 0 for s in seeds]).reshape(len(seeds), -1)
    agree = (masks[:, None, :] == masks[None, :, :]).mean(axis=-1)  # two independent masks agree on ~half
    off_diagonal = agree[~np.eye(len(seeds), dtype=bool)]
    assert np.abs(off_diagonal - 0.5).max() < 0.01
    # a traced rate (a sweep member's) gives the same mask as the static one
    traced = jax.jit(M.dropout)(x, jnp.float32(0.2), seeds[2])
    np.testing.assert_array_equal(traced, M.dropout(x, 0.2, seeds[2]))


def test_init_params_one_program_for_one_or_many_seeds():
    """The single-seed and the vmapped program agree bitwise (a sweep member starts exactly where a single
    run does); against eager ``spec.create(seed)`` the dense layers are bitwise equal and the embedding
    tables within 1 ulp (XLA fuses the normal draw with its scale)."""
    from mlp_jax.artifact import NetworkSpec, init_params

    spec = NetworkSpec(
        in_features=5, n_outputs=3, hidden_sizes=(16, 8), n_dense=3, cardinalities=(4, 6), embedding_dims=(0, 3)
    )
    seeds = (0, 7, 2_000_000_000)
    _, stacked = init_params(spec, list(seeds))
    for k, seed in enumerate(seeds):
        graphdef, one = init_params(spec, seed)
        eager_graphdef, eager = nnx.split(spec.create(seed))
        assert graphdef == eager_graphdef
        for (path, a), b, c in zip(
            jax.tree_util.tree_leaves_with_path(eager), jax.tree.leaves(one), jax.tree.leaves(stacked), strict=True
        ):
            assert c.shape == (3, *a.shape)
            np.testing.assert_array_equal(np.asarray(b), np.asarray(c)[k])
            if "embedding" in jax.tree_util.keystr(path):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2.5e-7, atol=0)
            else:
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
