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
from dataclasses import dataclass
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
from mlp_jax.artifact import ArtifactMeta, DataInfo, NetworkSpec, init_params
from mlp_jax.checkpoint import Checkpointer
from mlp_jax.config import Config, ConfigError, resolve_auto, to_json
from mlp_jax.data import Dataset
from mlp_jax.distributed import local_copy, make_mesh, put_replicated, put_rows
from mlp_jax.interrupt import EpochBoundary
from mlp_jax.writer import MetricWriter, NullWriter

Batch = tuple[jax.Array, jax.Array]
Metrics = dict[str, jax.Array]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; the last good checkpoint, when one was written, is kept."""


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
    loss: str = struct.field(pytree_node=False, default="cross_entropy")  # or "mse" / "huber" (regression)
    huber_delta: float = struct.field(pytree_node=False, default=1.0)
    hparams: dict[str, jax.Array] = struct.field(default_factory=dict)

    def arrays(self) -> dict[str, Any]:
        """The checkpointable part (no static fields)."""
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state}

    def with_arrays(self, tree: dict[str, Any]) -> TrainState:
        return self.replace(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"])


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return n_train // batch_size


def network_spec(config: Config, dataset: Dataset) -> NetworkSpec:
    """The network for ``dataset``'s inputs and outputs, shaped by ``config.model``."""
    m = config.model
    pre = dataset.preprocessor
    return NetworkSpec(
        in_features=dataset.n_features,
        n_outputs=dataset.n_classes if dataset.task == "classification" else dataset.n_targets,
        hidden_sizes=tuple(m.hidden_sizes),
        activation=m.activation,
        dropout=m.dropout,
        n_dense=pre.n_dense,
        cardinalities=tuple(pre.cardinalities),
        embedding_dims=tuple(pre.embedding_dims),
    )


def loss_name(config: Config, task: str) -> str:
    """Cross-entropy for classification, ``train.loss`` (MSE or Huber) for regression."""
    return "cross_entropy" if task == "classification" else config.train.loss


def create_state(config: Config, spec: NetworkSpec, n_train: int, task: str = "classification") -> TrainState:
    """A fresh state: parameters from ``config.seed``, optimiser from ``config.optim``.

    ``n_train`` (training rows) sets the steps per epoch, which learning-rate schedules need.
    """
    config = resolve_auto(config, n_train)
    graphdef, params = init_params(spec, config.seed)
    tx = optim.make(config.optim, max(steps_per_epoch(n_train, config.train.batch_size), 1), config.train.epochs)
    ls = config.train.label_smoothing if task == "classification" else 0.0
    hparams = {"label_smoothing": jnp.asarray(ls, jnp.float32)} if ls > 0 else {}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        graphdef=graphdef,
        tx=tx,
        loss=loss_name(config, task),
        huber_delta=config.train.huber_delta,
        hparams=hparams,
    )


# ----------------------------------------------------------------------------- pure steps


def row_losses(
    state: TrainState, outputs: jax.Array, y: jax.Array, label_smoothing: jax.Array | None = None
) -> jax.Array:
    """Loss per row ``[batch]``: cross-entropy on integer labels (against smoothed one-hot labels when
    ``label_smoothing`` is given: Szegedy et al. 2016), or MSE / Huber averaged over targets."""
    if state.loss == "cross_entropy":
        if label_smoothing is None:
            return optax.softmax_cross_entropy_with_integer_labels(outputs, y)
        labels = optax.smooth_labels(jax.nn.one_hot(y, outputs.shape[-1], dtype=outputs.dtype), label_smoothing)
        return optax.softmax_cross_entropy(outputs, labels)
    if state.loss == "huber":
        return jnp.mean(optax.huber_loss(outputs, y, delta=state.huber_delta), axis=-1)
    return jnp.mean(jnp.square(outputs - y), axis=-1)


def row_scores(state: TrainState, outputs: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """The second metric per row: 1/0 correct (classification) or the squared error over targets (regression)."""
    if state.loss == "cross_entropy":
        return {"correct": (jnp.argmax(outputs, -1) == y).astype(jnp.float32)}
    return {"sq_err": jnp.mean(jnp.square(outputs - y), axis=-1)}


def train_step(state: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, Metrics]:
    """One optimiser update on one batch; metrics are sums (loss_sum, correct or sq_err_sum, count)."""
    x, y = batch

    def loss_fn(params: nnx.State) -> tuple[jax.Array, jax.Array]:
        outputs = model_lib.apply(state.graphdef, params, x, key, state.hparams.get("dropout"))
        return row_losses(state, outputs, y, state.hparams.get("label_smoothing")).mean(), outputs

    (loss, outputs), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    n = y.shape[0]
    metrics = {
        "loss_sum": loss * n,
        **{f"{k}_sum" if k == "sq_err" else k: jnp.sum(v) for k, v in row_scores(state, outputs, y).items()},
        "count": jnp.asarray(n, jnp.float32),
    }
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(state: TrainState, batch: tuple[jax.Array, jax.Array, jax.Array]) -> Metrics:
    """Masked sums over one (padded) batch: ``batch = (x, y, mask)``."""
    x, y, mask = batch
    outputs = model_lib.apply(state.graphdef, state.params, x)
    return {
        "loss_sum": jnp.sum(row_losses(state, outputs, y) * mask),
        **{f"{k}_sum" if k == "sq_err" else k: jnp.sum(v * mask) for k, v in row_scores(state, outputs, y).items()},
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
    yp = np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)]).reshape(steps, b, *y.shape[1:])
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)]).reshape(steps, b)
    return xp, yp, mask


def finalize(sums: dict[str, Any]) -> dict[str, float]:
    """``{loss, accuracy}`` (classification) or ``{loss, rmse}`` (regression, standardised units) from sums.

    Divides once, on the host.
    """
    count = float(sums["count"])
    if "correct" in sums:
        return {"loss": float(sums["loss_sum"]) / count, "accuracy": float(sums["correct"]) / count}
    return {"loss": float(sums["loss_sum"]) / count, "rmse": math.sqrt(float(sums["sq_err_sum"]) / count)}


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
    last_checkpoint: str | None  # the last step saved; it carries the best parameters too
    n_devices: int = 1
    n_processes: int = 1
    config: Config | None = None  # the config trained with: auto batch size / epochs / patience resolved

    @property
    def resolved(self) -> dict[str, int]:
        """The batch size, epoch budget and patience this run used (after "auto")."""
        t = self.config.train if self.config is not None else None
        return {"batch_size": t.batch_size, "epochs": t.epochs, "patience": t.patience} if t else {}


def _kept(workdir: str | None, last_saved: int, epoch: int, every: int) -> str:
    """What a divergence at ``epoch`` leaves behind, for :class:`NonFiniteLossError`'s message."""
    if workdir is None:
        return "nothing was saved (no workdir); lower optim.learning_rate"
    if last_saved:
        return f"the last good checkpoint (epoch {last_saved}) is kept in {workdir}"
    if epoch == 1:
        return "no checkpoint was written: it diverged in the first epoch; lower optim.learning_rate"
    return (
        f"no checkpoint was written: it diverged before the first one (train.checkpoint_every={every}); "
        "lower optim.learning_rate"
    )


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
    without checkpoints. Auto ``train.batch_size`` / ``epochs`` / ``patience`` are resolved
    from the training rows first (:func:`mlp_jax.config.resolve_auto`); checkpoints and
    ``FitResult.config`` hold the resolved values.
    """
    writer = writer or NullWriter()
    n_train = len(dataset.y_train)
    config = resolve_auto(config, n_train)
    tc = config.train
    mesh = make_mesh(tc.num_devices)
    n_dev = mesh.devices.size
    check_batch_divides(config, n_dev)
    if n_train < tc.batch_size:
        raise ConfigError(f"train.batch_size: {tc.batch_size} is larger than the {n_train} training rows")
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    eval_sharding = NamedSharding(mesh, P(None, "data"))

    spec = network_spec(config, dataset)
    state = put_replicated(create_state(config, spec, n_train, dataset.task), replicated)
    best_params = state.params
    stopper = EarlyStopping(tc.patience, tc.min_delta)
    history: list[dict[str, float]] = []
    start_epoch = 0
    resumed_from = None
    store = Checkpointer(workdir) if workdir else None
    if store is not None and store.latest_step() is not None:
        restored = store.restore(state.arrays(), state.params, config, replicated, dataset.digest)
        state, best_params = state.with_arrays(restored.arrays), restored.best_params
        history = list(restored.meta.history)
        es = restored.meta.early_stopping
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
    interrupt = EpochBoundary()
    try:
        if jax.process_count() == 1:  # with several processes, one saving alone would wait on the others
            interrupt.install()
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
                    f"stopped; {_kept(workdir, last_saved, epoch, tc.checkpoint_every)}"
                )
            train_seconds += dt
            samples += steps * tc.batch_size
            row = {
                "epoch": epoch,
                **{f"train_{k}": v for k, v in train_m.items()},
                **{f"val_{k}": v for k, v in val_m.items()},
                "learning_rate": float(schedule(epoch * steps - 1)),
                "samples_per_second": steps * tc.batch_size / dt,
                "epoch_seconds": dt,
            }
            history.append(row)
            if stopper.update(epoch, val_m["loss"]):
                best_params = jax.tree.map(jnp.copy, state.params)  # state buffers are donated next epoch
            writer.write_scalars(epoch, {k: v for k, v in row.items() if k != "epoch"})
            if hasattr(bar, "set_postfix"):
                bar.set_postfix({k: f"{row[k]:.4f}" for k in row if k.startswith(("train_", "val_"))})
            last = epoch == tc.epochs or stopper.should_stop or interrupt.requested
            if store is not None and (epoch % tc.checkpoint_every == 0 or last):
                tc0 = time.perf_counter()
                store.save(
                    epoch, state.arrays(), best_params, artifact_meta(config, dataset, spec, history, stopper, n_dev)
                )
                checkpoint_seconds += time.perf_counter() - tc0
                last_saved = epoch
            if stopper.should_stop:
                break
            interrupt.check()  # a Ctrl-C during this epoch stops here, its checkpoint saved
    finally:
        interrupt.restore()
        if hasattr(bar, "close"):
            bar.close()
        if store is not None:
            tc0 = time.perf_counter()
            store.close()  # waits for async saves
            checkpoint_seconds += time.perf_counter() - tc0

    last_checkpoint = str(store.step_path(last_saved)) if store is not None and last_saved else None
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
        last_checkpoint=last_checkpoint,
        n_devices=n_dev,
        n_processes=jax.process_count(),
        config=config,
    )


def artifact_meta(
    config: Config, dataset: Dataset, spec: NetworkSpec, history: list, stopper: EarlyStopping, n_devices: int
) -> ArtifactMeta:
    """The typed metadata saved beside the arrays of every checkpoint step."""
    return ArtifactMeta(
        config=json.loads(to_json(config)),
        input_columns=tuple(dataset.feature_names),
        preprocessing=dataset.preprocessor.to_dict(),
        network=spec,
        data=DataInfo(dataset.source, dataset.digest, **dataset.split_sizes()),
        task=dataset.task,
        classes=tuple(dataset.classes),
        targets=tuple(dataset.target_names) if dataset.task == "regression" else (),
        target_stats={"mean": list(dataset.target.mean), "scale": list(dataset.target.scale)}
        if dataset.task == "regression"
        else {},
        history=tuple(history),
        early_stopping=stopper.to_dict(),
        n_devices=n_devices,
    )


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
    "local_copy",
    "make_evaluate",
    "make_train_epoch",
    "network_spec",
    "shuffle_indices",
    "train_step",
]
