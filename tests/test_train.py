import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mlp_jax import config as C
from mlp_jax import data as D
from mlp_jax import model
from mlp_jax import train as T
from mlp_jax.artifact import NetworkSpec
from tests.helpers import tiny_config


@pytest.fixture
def tiny(tmp_path, tiny_csv):
    cfg = tiny_config(tmp_path, tiny_csv)
    return cfg, D.prepare(cfg.data, cfg.seed)


def test_one_step_lowers_loss_on_a_fixed_batch(tiny):
    cfg, ds = tiny
    state = T.create_state(cfg, T.network_spec(cfg, ds), len(ds.y_train))
    batch = (jnp.asarray(ds.x_train[:64]), jnp.asarray(ds.y_train[:64]))
    step = jax.jit(T.train_step)
    key = jax.random.key(0)
    state1, m1 = step(state, batch, key)
    _, m2 = step(state1, batch, key)
    assert float(m2["loss_sum"]) < float(m1["loss_sum"])
    assert int(state1.step) == 1 and float(m1["count"]) == 64


def test_tiny_model_overfits_tiny_dataset(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=32).astype(np.int32)  # random labels: only memorisation fits them
    cfg = C.apply_overrides(C.Config(), ["model.hidden_sizes=64,64", "optim.learning_rate=1e-2", "train.batch_size=32"])
    state = T.create_state(cfg, NetworkSpec(5, 3, cfg.model.hidden_sizes), 32)
    step = jax.jit(T.train_step)
    key = jax.random.key(0)
    for i in range(300):
        state, m = step(state, (x, y), jax.random.fold_in(key, i))
    assert float(m["correct"]) == 32
    assert float(m["loss_sum"]) / 32 < 0.05


def test_epoch_is_traced_once_across_epochs(tiny, monkeypatch):
    cfg, ds = tiny
    traces = []
    real = T.train_step

    def counting(state, batch, key):
        traces.append(1)
        return real(state, batch, key)

    monkeypatch.setattr(T, "train_step", counting)
    result = T.fit(cfg, ds, workdir=None, progress=False)
    assert result.epochs_run == 4
    assert len(traces) == 1


def test_eval_handles_the_ragged_last_batch_exactly(tiny):
    cfg, ds = tiny
    state = T.create_state(cfg, T.network_spec(cfg, ds), len(ds.y_train))
    x, y = ds.x_val[:77], ds.y_val[:77]
    sums = T.make_evaluate()(state, *T.batch_for_eval(x, y, batch_size=32))
    logits = np.asarray(model.apply(state.graphdef, state.params, jnp.asarray(x)))
    ref_loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    got = T.finalize(jax.device_get(sums))
    assert float(sums["count"]) == 77
    assert got["loss"] == pytest.approx(float(ref_loss), rel=1e-5)
    assert got["accuracy"] == pytest.approx(float(np.mean(logits.argmax(1) == y)))


def test_epoch_key_is_a_pure_function_of_seed_and_epoch():
    k = lambda s, e: jax.random.key_data(T.epoch_key(s, e))  # noqa: E731
    np.testing.assert_array_equal(k(0, 3), k(0, 3))
    assert not np.array_equal(k(0, 3), k(0, 4))
    assert not np.array_equal(k(0, 3), k(1, 3))


@pytest.mark.parametrize(
    "overrides",
    [
        ["optim.name=adamw", "optim.weight_decay=1e-3"],
        ["optim.name=sgd", "optim.momentum=0.9", "optim.learning_rate=0.05"],
        ["optim.schedule=warmup_cosine", "optim.grad_clip_norm=1.0", "model.dropout=0.2", "model.activation=gelu"],
    ],
)
def test_optimiser_variants_train(tmp_path, tiny_csv, overrides):
    cfg = tiny_config(tmp_path, tiny_csv, **dict(o.split("=") for o in overrides))
    ds = D.prepare(cfg.data, cfg.seed)
    result = T.fit(cfg, ds, workdir=None, progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    if cfg.optim.schedule == "warmup_cosine":
        lrs = [h["learning_rate"] for h in result.history]
        assert lrs[-1] < max(lrs)


def test_early_stopping_keeps_best_params(tmp_path, tiny_csv):
    cfg = tiny_config(
        tmp_path, tiny_csv, **{"train.epochs": "40", "train.patience": "2", "optim.learning_rate": "0.05"}
    )
    result = T.fit(cfg, D.prepare(cfg.data, cfg.seed), workdir=None, progress=False)
    assert result.stopped_early and result.epochs_run < 40
    assert result.epochs_run - result.best_epoch == 2
    val = [h["val_loss"] for h in result.history]
    assert result.best_epoch == int(np.argmin(val)) + 1


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_csv, monkeypatch):
    from mlp_jax.artifact import read_meta_at
    from mlp_jax.checkpoint import Checkpointer

    cfg = tiny_config(tmp_path, tiny_csv, **{"train.epochs": "8", "train.checkpoint_every": "1"})
    ds = D.prepare(cfg.data, cfg.seed)
    steps = T.steps_per_epoch(len(ds.y_train), cfg.train.batch_size)
    real = T.train_step

    def diverging(state, batch, key):  # the parameters blow up during epoch 4
        new, metrics = real(state, batch, key)
        poison = jnp.where(state.step >= 3 * steps, jnp.nan, 0.0)
        return new.replace(params=jax.tree.map(lambda p: p + poison, new.params)), metrics

    monkeypatch.setattr(T, "train_step", diverging)
    with pytest.raises(T.NonFiniteLossError, match="non-finite loss at epoch 4"):
        T.fit(cfg, ds, workdir=cfg.resolved_workdir, progress=False)
    store = Checkpointer(cfg.resolved_workdir)
    assert store.latest_step() == 3
    store.close()
    meta = read_meta_at(cfg.resolved_workdir)
    assert [h["epoch"] for h in meta.history] == [1, 2, 3]
    assert all(np.isfinite(h["val_loss"]) for h in meta.history)


def test_batch_larger_than_training_set_is_a_config_error(tmp_path, tiny_csv):
    cfg = tiny_config(tmp_path, tiny_csv, **{"train.batch_size": "5000"})
    with pytest.raises(C.ConfigError, match=r"train\.batch_size"):
        T.fit(cfg, D.prepare(cfg.data, cfg.seed), workdir=None, progress=False)


def test_non_finite_loss_in_the_first_epoch_says_no_checkpoint_was_written(tmp_path, tiny_csv):
    from mlp_jax.checkpoint import Checkpointer

    cfg = tiny_config(tmp_path, tiny_csv, **{"optim.learning_rate": "1e30", "model.dropout": "0"})
    ds = D.prepare(cfg.data, cfg.seed)
    with pytest.raises(T.NonFiniteLossError) as info:
        T.fit(cfg, ds, workdir=cfg.resolved_workdir, progress=False)
    message = str(info.value)
    assert "non-finite loss at epoch 1" in message
    assert "no checkpoint was written: it diverged in the first epoch; lower optim.learning_rate" in message
    assert "last good checkpoint" not in message and "epoch 0" not in message
    store = Checkpointer(cfg.resolved_workdir)
    assert store.latest_step() is None  # and indeed none was
    store.close()
    with pytest.raises(T.NonFiniteLossError, match=r"nothing was saved \(no workdir\)"):
        T.fit(cfg, ds, workdir=None, progress=False)
