"""Pure jitted train/eval steps, the scan-fused epoch, and the fit loop.

The train state is a plain pytree (:class:`TrainState`) whose static fields carry the
NNX graph definition and the optax transformation, so ``train_step(state, batch, key)``
is a pure top-level function. One epoch is one compiled program: it shuffles the
device-resident training set with a key that depends only on (seed, epoch) and
``lax.scan``s the step over the batches; values reach the host once per epoch.

Ragged batches: training drops the last ``n % batch_size`` rows of each shuffled epoch
(different rows every epoch, so nothing is left out for good); evaluation pads to whole
batches and masks, summing (loss, correct, count) so the result is exact.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mlp_jax import model as model_lib
from mlp_jax import optim
from mlp_jax.config import Config, ConfigError, to_json
from mlp_jax.data import Dataset
from mlp_jax.writer import MetricWriter, NullWriter

Batch = tuple[jax.Array, jax.Array]
Metrics = dict[str, jax.Array]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""


class TrainState(struct.PyTreeNode):
    """Everything that changes during training, as one pytree (static: graphdef, tx).

    ``hparams``: traced per-run values the step reads (``"label_smoothing"``, ``"dropout"``),
    set from the config, not checkpointed; empty by default (no leaves, nothing changes).
    """

    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState
    graphdef: nnx.GraphDef = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    hparams: dict[str, jax.Array] = struct.field(default_factory=dict)

    def arrays(self) -> dict[str, Any]:
        """The checkpointable part (no static fields)."""
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state}

    def with_arrays(self, tree: dict[str, Any]) -> TrainState:
        return self.replace(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"])


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return n_train // batch_size


def create_state(config: Config, n_features: int, n_classes: int, n_train: int) -> TrainState:
    """A fresh state: parameters from ``config.seed``, optimiser from ``config.optim``."""
    m = config.model
    mlp = model_lib.create(n_features, n_classes, m.hidden_sizes, m.activation, m.dropout, config.seed)
    graphdef, params = nnx.split(mlp)
    tx = optim.make(config.optim, max(steps_per_epoch(n_train, config.train.batch_size), 1), config.train.epochs)
    ls = config.train.label_smoothing
    hparams = {"label_smoothing": jnp.asarray(ls, jnp.float32)} if ls > 0 else {}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        graphdef=graphdef,
        tx=tx,
        hparams=hparams,
    )


# ----------------------------------------------------------------------------- pure steps


def logits_fn(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    x: jax.Array,
    dropout_key: jax.Array | None = None,
    dropout_rate: jax.Array | None = None,
) -> jax.Array:
    if dropout_rate is None:
        return nnx.merge(graphdef, params)(x, dropout_key=dropout_key)
    return nnx.merge(graphdef, params)(x, dropout_key=dropout_key, dropout_rate=dropout_rate)


def train_loss(logits: jax.Array, y: jax.Array, label_smoothing: jax.Array | None = None) -> jax.Array:
    """Per-row cross-entropy, against smoothed one-hot labels when ``label_smoothing`` is given."""
    if label_smoothing is None:
        return optax.softmax_cross_entropy_with_integer_labels(logits, y)
    labels = optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype), label_smoothing)
    return optax.softmax_cross_entropy(logits, labels)


def train_step(state: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, Metrics]:
    """One optimiser update on one batch; metrics are sums (loss_sum, correct, count)."""
    x, y = batch

    def loss_fn(params: nnx.State) -> tuple[jax.Array, jax.Array]:
        logits = logits_fn(state.graphdef, params, x, key, state.hparams.get("dropout"))
        return train_loss(logits, y, state.hparams.get("label_smoothing")).mean(), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    n = y.shape[0]
    metrics = {
        "loss_sum": loss * n,
        "correct": jnp.sum(jnp.argmax(logits, -1) == y).astype(jnp.float32),
        "count": jnp.asarray(n, jnp.float32),
    }
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(state: TrainState, batch: tuple[jax.Array, jax.Array, jax.Array]) -> Metrics:
    """Masked sums over one (padded) batch: ``batch = (x, y, mask)``."""
    x, y, mask = batch
    logits = logits_fn(state.graphdef, state.params, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return {
        "loss_sum": jnp.sum(loss * mask),
        "correct": jnp.sum((jnp.argmax(logits, -1) == y) * mask),
        "count": jnp.sum(mask),
    }


def epoch_key(seed: int, epoch: int) -> jax.Array:
    """The key of epoch ``epoch``: a pure function of (seed, epoch), so resumes replay exactly."""
    return jax.random.fold_in(jax.random.key(seed), epoch)


_FMIX = (0x85EBCA6B, 0xC2B2AE35)  # murmur3's 32-bit finaliser constants (odd, so invertible mod 2**32)
_FMIX_INV = tuple(pow(c, -1, 2**32) for c in _FMIX)


def _xorshift(h: jax.Array, s: int, inverse: bool = False) -> jax.Array:
    if not inverse:
        return h ^ (h >> s)
    out = h
    for _ in range(32 // s):
        out = h ^ (out >> s)
    return out


def _fmix(h: jax.Array, inverse: bool = False) -> jax.Array:
    m1, m2 = (jnp.uint32(c) for c in (_FMIX_INV[::-1] if inverse else _FMIX))
    return _xorshift(_xorshift(_xorshift(h, 16, inverse) * m1, 13, inverse) * m2, 16, inverse)


def shuffle_indices(key: jax.Array, n: int) -> jax.Array:
    """A pseudo-random permutation of ``0..n-1`` (int32), a pure function of ``key``.

    ``jax.random.permutation`` sorts (random key, index) pairs in two rounds; XLA:CPU
    runs a sort with two operands through a comparator call per comparison (~15 ms per
    round for 70k rows: the two took a third of the baseline epoch), but a bare uint32
    array through a fast path (~3 ms). So each index goes through a keyed bijection of uint32 (three
    rounds of murmur3's finaliser with the key mixed in): the images are distinct, so one
    bare sort orders them with no ties, and the inverse bijection turns the sorted
    images back into the indices they came from.
    """
    if n >= 2**31:
        raise ValueError(f"shuffle_indices: {n} rows do not fit int32 indices")
    k = jax.random.bits(key, (3,), jnp.uint32)
    h = jax.lax.iota(jnp.uint32, n)
    h = _fmix(_fmix(_fmix(h ^ k[0]) + k[1]) ^ k[2])
    h = jnp.sort(h)
    return (_fmix(_fmix(_fmix(h, True) ^ k[2], True) - k[1], True) ^ k[0]).astype(jnp.int32)


def _sum(metrics: Metrics) -> Metrics:
    return jax.tree.map(lambda a: jnp.sum(a, axis=0), metrics)


def make_train_epoch(
    batch_size: int,
    batch_sharding: NamedSharding | None = None,
    n_rows: int | None = None,
    out_sharding: NamedSharding | None = None,
) -> Callable:
    """``train_epoch(state, x, y, key) -> (state, metric sums)``, jitted with the state donated.

    ``n_rows``: the real training rows when ``x`` is padded (to shard rows evenly over
    processes); the permutation never picks the padding. ``out_sharding``: where the new
    state and the sums live (replicated on the mesh), so every process can read them.
    """

    def train_epoch(state: TrainState, x: jax.Array, y: jax.Array, key: jax.Array) -> tuple[TrainState, Metrics]:
        shuffle_key, dropout_key = jax.random.split(key)
        rows = x.shape[0] if n_rows is None else n_rows
        steps = rows // batch_size
        order = shuffle_indices(shuffle_key, rows)[: steps * batch_size].reshape(steps, batch_size)

        def body(state: TrainState, inputs: tuple[jax.Array, jax.Array]) -> tuple[TrainState, Metrics]:
            idx, step_key = inputs
            xb, yb = x[idx], y[idx]
            if batch_sharding is not None:
                xb = jax.lax.with_sharding_constraint(xb, batch_sharding)
                yb = jax.lax.with_sharding_constraint(yb, batch_sharding)
            return train_step(state, (xb, yb), step_key)

        state, metrics = jax.lax.scan(body, state, (order, jax.random.split(dropout_key, steps)))
        return state, _sum(metrics)

    if out_sharding is None:
        return jax.jit(train_epoch, donate_argnums=0)
    return jax.jit(train_epoch, donate_argnums=0, out_shardings=out_sharding)


def make_evaluate(batch_sharding: NamedSharding | None = None, out_sharding: NamedSharding | None = None) -> Callable:
    """``evaluate(state, x, y, mask) -> metric sums`` over pre-batched ``[steps, batch, ...]`` arrays."""

    def evaluate(state: TrainState, x: jax.Array, y: jax.Array, mask: jax.Array) -> Metrics:
        def body(carry: None, batch: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[None, Metrics]:
            if batch_sharding is not None:
                batch = jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, batch_sharding), batch)
            return carry, eval_step(state, batch)

        _, metrics = jax.lax.scan(body, None, (x, y, mask))
        return _sum(metrics)

    return jax.jit(evaluate) if out_sharding is None else jax.jit(evaluate, out_shardings=out_sharding)


def batch_for_eval(x: np.ndarray, y: np.ndarray, batch_size: int, multiple: int = 1) -> tuple[np.ndarray, ...]:
    """Pads to whole batches and reshapes to ``[steps, batch, ...]`` with a 0/1 mask."""
    n = len(y)
    b = min(batch_size, n)
    b = max(multiple, math.ceil(b / multiple) * multiple)
    steps = math.ceil(n / b)
    pad = steps * b - n
    xp = np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)]).reshape(steps, b, x.shape[1])
    yp = np.concatenate([y, np.zeros(pad, y.dtype)]).reshape(steps, b)
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)]).reshape(steps, b)
    return xp, yp, mask


def finalize(sums: dict[str, Any]) -> dict[str, float]:
    """``{loss, accuracy}`` from sums (divide once, on the host)."""
    count = float(sums["count"])
    return {"loss": float(sums["loss_sum"]) / count, "accuracy": float(sums["correct"]) / count}


# ----------------------------------------------------------------------------- devices


def make_mesh(num_devices: int = 0) -> jax.sharding.Mesh:
    """A 1-D ``data`` mesh over the first ``num_devices`` devices (0 = all)."""
    devices = jax.devices()
    n = len(devices) if num_devices == 0 else num_devices
    if n > len(devices):
        raise ConfigError(f"train.num_devices: {n} requested but only {len(devices)} device(s) visible")
    return jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices[:n])


def put_replicated(tree: Any, sharding: NamedSharding) -> Any:
    """Places a host/local pytree on every device of the mesh (every process passes the same values)."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda a: jax.make_array_from_callback(np.shape(a), sharding, lambda i: np.asarray(a)[i]), tree)


def put_rows(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """The training rows on the mesh.

    One process: replicated on every local device (each device gathers its batch rows
    locally). Several processes: zero-padded to a multiple of the device count and
    sharded by rows, each process holding only its own contiguous block; the epoch's
    gather of shuffled rows then becomes a collective that XLA inserts.
    """
    mesh = sharding.mesh
    if jax.process_count() == 1:
        return jax.device_put(x, NamedSharding(mesh, P()))
    n_dev = mesh.devices.size
    padded = math.ceil(len(x) / n_dev) * n_dev
    x = np.concatenate([x, np.zeros((padded - len(x), *x.shape[1:]), x.dtype)])
    per_process = padded // jax.process_count()
    mine = x[jax.process_index() * per_process : (jax.process_index() + 1) * per_process]
    return jax.make_array_from_process_local_data(sharding, mine, x.shape)


def local_copy(tree: Any) -> Any:
    """A replicated (possibly multi-process) pytree as host numpy arrays of this process."""
    return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)) if isinstance(a, jax.Array) else a, tree)


def check_batch_divides(config: Config, n_devices: int) -> None:
    if config.train.batch_size % n_devices:
        raise ConfigError(
            f"train.batch_size: {config.train.batch_size} does not divide evenly over {n_devices} devices; "
            f"use a multiple of {n_devices} or set train.num_devices"
        )


# ----------------------------------------------------------------------------- fit loop


@dataclass
class EarlyStopping:
    """Patience on validation loss (state is JSON-able so it survives a resume)."""

    patience: int
    min_delta: float = 0.0
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, epoch: int, val_loss: float) -> bool:
        """Records one epoch; returns True when it is the new best."""
        if val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def to_dict(self) -> dict[str, Any]:
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}


@dataclass
class FitResult:
    state: TrainState  # after the last epoch run
    best_params: nnx.State  # parameters of the best validation epoch
    history: list[dict[str, float]]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    compile_seconds: float
    train_seconds: float
    train_samples_per_second: float
    resumed_from: int | None
    checkpoint_seconds: float
    best_checkpoint: str | None
    timings: dict[str, float] = field(default_factory=dict)


def fit(
    config: Config,
    dataset: Dataset,
    workdir: str | None = None,
    writer: MetricWriter | None = None,
    progress: bool | None = None,
) -> FitResult:
    """Trains with early stopping, checkpointing every ``train.checkpoint_every`` epochs.

    Resumes from the latest checkpoint in ``workdir`` when there is one (refusing one
    written with a different config, the epoch budget aside). ``workdir=None`` trains
    without checkpoints.
    """
    from mlp_jax import checkpoint as ckpt_lib  # checkpoint imports train: avoid the cycle at import time

    writer = writer or NullWriter()
    tc = config.train
    mesh = make_mesh(tc.num_devices)
    n_dev = mesh.devices.size
    check_batch_divides(config, n_dev)
    n_train = len(dataset.y_train)
    if n_train < tc.batch_size:
        raise ConfigError(f"train.batch_size: {tc.batch_size} is larger than the {n_train} training rows")
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    eval_sharding = NamedSharding(mesh, P(None, "data"))

    state = create_state(config, dataset.n_features, dataset.n_classes, n_train)
    state = put_replicated(state, replicated)
    best_params = state.params
    stopper = EarlyStopping(tc.patience, tc.min_delta)
    history: list[dict[str, float]] = []
    start_epoch = 0
    resumed_from = None
    store = ckpt_lib.Checkpointer(workdir) if workdir else None
    if store is not None and store.latest_step() is not None:
        restored = store.restore_train(state, config, replicated, dataset.digest)
        state, best_params = restored.state, restored.best_params
        history = restored.meta["history"]
        es = restored.meta["early_stopping"]
        stopper.best_loss, stopper.best_epoch, stopper.bad_epochs = es["best_loss"], es["best_epoch"], es["bad_epochs"]
        start_epoch = resumed_from = restored.step

    x_train = put_rows(dataset.x_train, batch_sharding)
    y_train = put_rows(dataset.y_train, batch_sharding)
    val = put_replicated(batch_for_eval(dataset.x_val, dataset.y_val, tc.eval_batch_size, n_dev), eval_sharding)
    _describe_layout(mesh, x_train, state)

    t0 = time.perf_counter()
    train_epoch = (
        make_train_epoch(tc.batch_size, batch_sharding, n_train, replicated)
        .lower(state, x_train, y_train, epoch_key(0, 0))
        .compile()
    )
    evaluate = make_evaluate(batch_sharding, replicated).lower(state, *val).compile()
    compile_seconds = time.perf_counter() - t0

    schedule = optim.schedule(config.optim, max(steps_per_epoch(n_train, tc.batch_size), 1), tc.epochs)
    steps = steps_per_epoch(n_train, tc.batch_size)
    train_seconds = 0.0
    checkpoint_seconds = 0.0
    samples = 0
    epochs = range(start_epoch + 1, tc.epochs + 1) if not stopper.should_stop else range(0)
    bar = _progress(epochs, start_epoch, tc.epochs, progress if progress is not None else tc.progress)
    last_saved = start_epoch
    epoch = start_epoch
    try:
        for epoch in bar:
            t = time.perf_counter()
            state, sums = train_epoch(state, x_train, y_train, epoch_key(config.seed, epoch))
            val_sums = evaluate(state, *val)
            sums, val_sums = jax.device_get((sums, val_sums))  # the one host sync of the epoch
            dt = time.perf_counter() - t
            train_m, val_m = finalize(sums), finalize(val_sums)
            if not (math.isfinite(train_m["loss"]) and math.isfinite(val_m["loss"])):
                raise NonFiniteLossError(
                    f"non-finite loss at epoch {epoch} (train {train_m['loss']}, val {val_m['loss']}); "
                    f"stopped; the last good checkpoint (epoch {last_saved}) is kept in {workdir}"
                )
            train_seconds += dt
            samples += steps * tc.batch_size
            row = {
                "epoch": epoch,
                "train_loss": train_m["loss"],
                "train_accuracy": train_m["accuracy"],
                "val_loss": val_m["loss"],
                "val_accuracy": val_m["accuracy"],
                "learning_rate": float(schedule(epoch * steps - 1)),
                "samples_per_second": steps * tc.batch_size / dt,
                "epoch_seconds": dt,
            }
            history.append(row)
            if stopper.update(epoch, val_m["loss"]):
                best_params = jax.tree.map(jnp.copy, state.params)  # state buffers are donated next epoch
            writer.write_scalars(epoch, {k: v for k, v in row.items() if k != "epoch"})
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(
                    loss=f"{row['train_loss']:.4f}",
                    acc=f"{row['train_accuracy']:.4f}",
                    val_loss=f"{row['val_loss']:.4f}",
                    val_acc=f"{row['val_accuracy']:.4f}",
                )
            last = epoch == tc.epochs or stopper.should_stop
            if store is not None and (epoch % tc.checkpoint_every == 0 or last):
                tc0 = time.perf_counter()
                store.save(epoch, state, best_params, _meta(config, dataset, history, stopper, n_dev))
                checkpoint_seconds += time.perf_counter() - tc0
                last_saved = epoch
            if stopper.should_stop:
                break
    finally:
        if hasattr(bar, "close"):
            bar.close()
        if store is not None:
            tc0 = time.perf_counter()
            store.close()  # waits for async saves
            checkpoint_seconds += time.perf_counter() - tc0

    best_checkpoint = str(store.step_path(last_saved)) if store is not None and last_saved else None
    return FitResult(
        state=state,
        best_params=best_params,
        history=history,
        best_epoch=stopper.best_epoch,
        epochs_run=history[-1]["epoch"] if history else 0,
        stopped_early=stopper.should_stop,
        compile_seconds=compile_seconds,
        train_seconds=train_seconds,
        train_samples_per_second=samples / train_seconds if train_seconds else 0.0,
        resumed_from=resumed_from,
        checkpoint_seconds=checkpoint_seconds,
        best_checkpoint=best_checkpoint,
        timings={"n_devices": n_dev, "n_processes": jax.process_count()},
    )


def _meta(config: Config, dataset: Dataset, history: list, stopper: EarlyStopping, n_devices: int) -> dict[str, Any]:
    return {
        "format": 1,
        "config": json.loads(to_json(config)),
        "feature_names": list(dataset.feature_names),
        "classes": list(dataset.classes),
        "standardizer": dataset.standardizer.to_dict(),
        "data": {"source": dataset.source, "digest": dataset.digest, **dataset.split_sizes()},
        "history": history,
        "metrics": history[-1] if history else {},
        "early_stopping": stopper.to_dict(),
        "n_devices": n_devices,
    }


def _describe_layout(mesh: jax.sharding.Mesh, x_train: jax.Array, state: TrainState) -> None:
    if jax.process_index() != 0:
        return
    replicated = all(a.sharding.is_fully_replicated for a in jax.tree.leaves(state))
    print(
        f"devices: {mesh.devices.size} {jax.devices()[0].platform} device(s) over {jax.process_count()} process(es); "
        f"batches sharded along 'data', train state {'replicated' if replicated else 'NOT replicated'}, "
        f"training rows {'replicated' if x_train.sharding.is_fully_replicated else 'sharded by rows'}",
        flush=True,
    )


def _progress(epochs: range, start: int, total: int, enabled: bool):
    if not enabled or jax.process_index() != 0:
        return epochs
    from tqdm.auto import tqdm

    return tqdm(epochs, initial=start, total=total, desc="epochs", unit="epoch", dynamic_ncols=True)


def predict_proba_fn(graphdef: nnx.GraphDef) -> Callable[[nnx.State, jax.Array], jax.Array]:
    """``f(params, x_standardised) -> probabilities`` (unjitted: callers jit or AOT-compile it)."""

    def f(params: nnx.State, x: jax.Array) -> jax.Array:
        return jax.nn.softmax(logits_fn(graphdef, params, x), axis=-1)

    return f


__all__ = [
    "EarlyStopping",
    "FitResult",
    "NonFiniteLossError",
    "TrainState",
    "batch_for_eval",
    "create_state",
    "epoch_key",
    "eval_step",
    "fit",
    "make_evaluate",
    "make_mesh",
    "make_train_epoch",
    "shuffle_indices",
    "train_step",
]
