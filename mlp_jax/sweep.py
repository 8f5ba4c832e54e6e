"""Many MLPs trained as one compiled program: stacked states, a vmapped step, per-member stopping.

A sweep (``sweep.<key>=<values>`` in the config, see :class:`mlp_jax.config.SweepConfig`)
expands to members (:func:`expand`: a grid, or ``sweep.samples`` random draws). Members
whose configs differ only in *value keys* (:data:`VALUE_KEYS`: learning rate, weight decay,
dropout, label smoothing, seed) and *host keys* (:data:`HOST_KEYS`: patience, min_delta)
share one program: their train states are stacked along a leading member axis and the
scan-fused epoch ``vmap``s :func:`mlp_jax.train.train_step` over it. Learning rate and
weight decay live in the optimiser state (``optax.inject_hyperparams``), dropout rate and
label smoothing in ``TrainState.hparams``, so each member reads its own. Keys that change
shapes or the program (hidden sizes, batch size, epochs, optimiser name...) split the
members into groups, trained one after the other, one compilation each.

Each member has its own early stopping, shuffling and dropout keys
(``epoch_key(member seed, epoch)``, as in a single run). A stopped member is frozen:
the epoch computes it with the others and ``jnp.where(active, new, old)`` keeps its old
state, so nothing recompiles. A member whose train or validation loss is NaN/inf stops
with reason ``non-finite``; its best parameters stay the last finite best. Per-member
metric sums reach the host once per epoch (one ``device_get``).

K-fold members (:class:`MemberRows`, what a run's ``train.members`` ensemble uses by default,
``train.kfold_members``): member k draws its batches only from its own rows (an index set per
member, shuffled with its key, inside the same scan-fused epoch) and its validation metrics are
masked to its fold, so cross-fitting K members costs one program too.

Devices: *members* are sharded over a 1-D ``members`` mesh and the training rows are
replicated on every device, so a step needs no collective at all. Sharding batches
instead would all-reduce every member's gradients on every step (K models' traffic for a
step that is already tiny for these MLPs) and sum each gradient in another order on every
device count (member sharding changes only how many members XLA compiles per device: the
same losses to ~1e-5 relative, tested against 8 devices); the price of member sharding is
that a member must fit one device (these do) and that K is padded to a multiple of the
devices used with frozen copies (the device count is chosen to keep that padding small).
Single process only.

On a CPU-only host JAX makes one CPU device, and XLA:CPU runs a device's program on about one
core for matmuls this small, so a sweep would leave the other cores idle.
:func:`mlp_jax.distributed.use_cpu_cores` (called by ``python -m experiments.sweep`` before JAX
starts) makes one CPU device per core, so the members' shards run side by side: on this
project's 2-core box, 16 baseline members train in 1.4-1.6 s per epoch instead of 2.6-2.7 s
(``benchmarks/sweep_speed.py``). A single run does not gain from it (its batch split over two
CPU devices trained 10 epochs in 6.5 s instead of 5.5 s), nor do ``train.members`` ensembles
of small tables (penguins, 8 members: 1.6-2.0 s of training on 1 or 2 devices), so the runner
does not ask for them, and a single model's data mesh keeps one of those devices
(:func:`mlp_jax.distributed.make_mesh`). Each device holds its own copy of the rows, so a CPU
sweep uses no more devices than a quarter of the machine's memory holds copies
(:func:`cpu_copies_that_fit`).

Checkpoints: one Orbax manager per group (``<workdir>/group-<g>``) holding the stacked
train arrays and every member's best parameters (unpadded, so a run resumes on another
device count), plus JSON metadata with the members, their values, stopper state, stop
reasons and histories. The epoch keys are pure functions of (seed, epoch), so a resume
replays exactly what an uninterrupted run does.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from orbax.checkpoint import checkpoint_managers

from mlp_jax import distributed, optim, train
from mlp_jax import model as model_lib
from mlp_jax.artifact import NetworkSpec, init_params
from mlp_jax.config import (
    Config,
    ConfigError,
    SweepConfig,
    diff,
    from_dict,
    resolve_auto,
    sweep_axes,
    to_flat_dict,
    to_json,
    validate,
    with_values,
)
from mlp_jax.data import Dataset
from mlp_jax.interrupt import EpochBoundary

#: Per-member arrays inside one program.
VALUE_KEYS = ("optim.learning_rate", "optim.weight_decay", "model.dropout", "train.label_smoothing", "seed")
#: Per-member settings that only the host loop reads.
HOST_KEYS = ("train.patience", "train.min_delta")
#: Keys that may change between a sweep and its resume.
RESUMABLE_KEYS = (
    "train.epochs",
    "train.progress",
    "train.compare_sklearn",
    "train.num_devices",
    "train.checkpoint_every",
    "dist.",
    "tracking.",
    "sweep.ensemble_top_k",
    "workdir",
)
STOP_REASONS = ("patience", "non-finite", "budget")
META_FORMAT = 1


class SweepError(RuntimeError):
    """A sweep cannot run or resume; the message says why."""


class SweepResumeError(SweepError):
    """A resume against a checkpoint of another sweep: ``stored`` is the checkpoint's config,
    ``differing`` the flat keys in which it differs (so a caller that built the sweep, such as
    the runner's ``train.members``, can say it in its own keys)."""

    def __init__(self, message: str, stored: Config, differing: Sequence[str], step: int) -> None:
        super().__init__(message)
        self.stored, self.differing, self.step = stored, tuple(differing), step


# ----------------------------------------------------------------------------- members


@dataclass(frozen=True)
class Member:
    """One point of the sweep: its index, swept values and full config (``sweep`` cleared)."""

    index: int
    values: dict[str, Any]
    config: Config


def group_dir(workdir: str | Path, group: int = 0) -> Path:
    """Where group ``group`` of a sweep in ``workdir`` keeps its training checkpoints
    (``train.members`` ensembles are one group: ``workdir/group-0``)."""
    return Path(workdir) / f"group-{group}"


def expand(config: Config) -> list[Member]:
    """The members of ``config.sweep``: the cartesian product, or ``sweep.samples`` draws.

    Random draws (seeded by ``config.seed``): a list picks uniformly; a range of ints draws
    uniformly from ``low..high`` inclusive; a range of floats draws log-uniformly when
    ``0 < low`` and ``high / low > 10``, uniformly otherwise.

    Raises:
      ConfigError: no axes, or an invalid spec (see :func:`mlp_jax.config.sweep_axes`).
    """
    axes = sweep_axes(config)
    if not axes:
        raise ConfigError(
            "sweep: nothing to sweep; give sweep.<key>=<values> (e.g. sweep.optim.learning_rate=1e-3,3e-3)"
        )
    base = dataclasses.replace(config, sweep=SweepConfig())
    if config.sweep.samples == 0:
        combos = [
            dict(zip([a.key for a in axes], vals, strict=True)) for vals in itertools.product(*(a.values for a in axes))
        ]
    else:
        rng = np.random.default_rng(config.seed)
        combos = [{a.key: _draw(a, rng) for a in axes} for _ in range(config.sweep.samples)]
    members = []
    for i, values in enumerate(combos):
        member = with_values(base, values)
        validate(member)
        members.append(Member(i, values, member))
    return members


def _draw(axis: Any, rng: np.random.Generator) -> Any:
    if not axis.is_range:
        return axis.values[int(rng.integers(len(axis.values)))]
    lo, hi = axis.low, axis.high
    if isinstance(lo, int):
        return int(rng.integers(lo, hi + 1))
    if lo > 0 and hi / lo > 10:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


def static_key(config: Config) -> str:
    """What must match for two members to share a program (everything but value and host keys)."""
    flat = to_flat_dict(config)
    return json.dumps({k: v for k, v in flat.items() if k not in VALUE_KEYS + HOST_KEYS}, sort_keys=True, default=str)


def group_members(members: Sequence[Member]) -> list[list[Member]]:
    """Members grouped by :func:`static_key`, groups in order of their first member."""
    groups: dict[str, list[Member]] = {}
    for m in members:
        groups.setdefault(static_key(m.config), []).append(m)
    return list(groups.values())


# ----------------------------------------------------------------------------- stacked state


def create_states(
    members: Sequence[Member], swept: Sequence[str], spec: NetworkSpec, n_train: int, task: str = "classification"
) -> train.TrainState:
    """The members' fresh train states stacked along a leading axis (one graphdef, one tx).

    ``swept``: the swept keys; a swept dropout rate or label smoothing becomes a traced
    per-member value (an unswept one stays as a single run has it).
    """
    cfg0 = resolve_auto(members[0].config, n_train)  # auto batch size / epochs from the training rows
    tc = cfg0.train
    spe = max(train.steps_per_epoch(n_train, tc.batch_size), 1)
    decay = any(m.config.optim.weight_decay > 0 for m in members)
    tx = optim.make_injectable(cfg0.optim, spe, tc.epochs, decay=decay)
    graphdef, params = init_params(spec, [m.config.seed for m in members])  # one program for every member
    opt_state = jax.vmap(tx.init)(params)
    opt_state = opt_state._replace(
        hyperparams={
            "learning_rate": _per_member([m.config.optim.learning_rate for m in members]),
            "weight_decay": _per_member([m.config.optim.weight_decay for m in members]),
        }
    )
    hparams = {}
    if "model.dropout" in swept:
        hparams["dropout"] = _per_member([m.config.model.dropout for m in members])
    if "train.label_smoothing" in swept or any(m.config.train.label_smoothing > 0 for m in members):
        hparams["label_smoothing"] = _per_member([m.config.train.label_smoothing for m in members])
    return train.TrainState(
        step=jnp.zeros((len(members),), jnp.int32),
        params=params,
        opt_state=opt_state,
        graphdef=graphdef,
        tx=tx,
        loss=train.loss_name(cfg0, task),
        huber_delta=cfg0.train.huber_delta,
        hparams=hparams,
    )


def _per_member(values: Sequence[float]) -> jax.Array:
    """``[K]`` float32: one value per member (each rounded to float32 as a single run's scalar is)."""
    return jnp.asarray(np.asarray(values, np.float32))


def _rows(mask: jax.Array, a: jax.Array) -> jax.Array:
    return jnp.reshape(mask, mask.shape + (1,) * (a.ndim - 1))


def freeze(active: jax.Array, new: Any, old: Any) -> Any:
    """``new`` for active members, ``old`` for the others (leaves stacked along axis 0)."""
    return jax.tree.map(lambda n, o: jnp.where(_rows(active, n), n, o), new, old)


#: Training rows (members x batch) a CPU device steps at once when its members are stepped in
#: turns (:func:`member_chunk`).
CPU_ROWS_PER_TURN = 512


def member_chunk(per_device: int, batch_size: int) -> int | None:
    """How many of a CPU device's ``per_device`` members to step at once (:func:`make_sweep_epoch`'s
    ``chunk``), or None for all of them.

    In turns only when the device would otherwise step more than ``2 * CPU_ROWS_PER_TURN``
    member-rows per step, and then the most members (a divisor of ``per_device``, at least 2)
    whose rows fit ``CPU_ROWS_PER_TURN``. Measured on the 2-core box (benchmarks/RESULTS.md,
    "Sweeps and ensembles", round 11): 8 members x batch 256 per device train ~1.2x faster two
    at a time; the small tables' 8 k-fold members (batch 24-88) train ~1.3x slower in turns
    (the loop's own cost exceeds what the caches win), so they keep one vmap.
    """
    if per_device * batch_size <= 2 * CPU_ROWS_PER_TURN:
        return None
    fits = [d for d in range(2, per_device) if per_device % d == 0 and d * batch_size <= CPU_ROWS_PER_TURN]
    return max(fits) if fits else None


def make_sweep_epoch(
    batch_size: int, n_rows: int, kfold: bool = False, devices: int = 1, chunk: int | None = None
) -> Callable:
    """``epoch(states, active, x, y, keys[, rows, counts]) -> (states, metric sums [K])``, jitted, states donated.

    Member k shuffles and drops out with ``keys[k]`` exactly as ``train.make_train_epoch``
    does with its key, so a member follows the same batches as a single run of its config on
    the same split. (The sweep splits the data once, with the base config's seed; a single run
    with ``seed=N`` also draws its split from N, so only the base seed's members match single
    runs exactly.)

    ``kfold``: member k trains only on its own rows, ``rows[k, :counts[k]]`` (int32 ``[K, L]``,
    padded; :class:`MemberRows`), shuffled with its key; ``n_rows`` is then the fewest rows a
    member has, which sets the steps per epoch (every member's shuffle puts its own rows first,
    so the padding is never drawn).

    ``chunk``: None steps all K members at once (one ``vmap``: what a GPU wants, batched
    matmuls). An int (needs ``K`` a multiple of ``devices * chunk``) steps each device's block
    of ``K / devices`` members ``chunk`` at a time: a ``jax.lax.map`` over the turns, each turn
    vmapping ``chunk`` members of every block, so each device still steps only its own members.
    On XLA:CPU this trains faster: one core stepping 8 members vmapped spends 1.3-1.6x a lone
    member's time on each, 2 at a time ~1.0x (the step's working set, K x (activations +
    parameters + Adam moments), outgrows the core's 512 KB L2); 16 members on 2 CPU devices
    train 1.2-1.3x faster, for 0.8-1.2 s more compile (benchmarks/RESULTS.md, "Sweeps and
    ensembles", round 11). The values are the vmapped step's up to floating-point rounding:
    a member stepped in a turn of 2 gives exactly what a 2-member vmapped sweep gives, and
    differs from the all-at-once (16-wide) kernels by rounding that training can amplify (one
    epoch on the tests' tiny table: within 1e-5; best validation losses of the 16 baseline
    members after 2 epochs: up to ~1e-3 relative, where 1 vs 2 CPU devices already differ by
    2e-4).
    """
    steps = n_rows // batch_size

    def epoch(
        states: train.TrainState,
        active: jax.Array,
        x: jax.Array,
        y: jax.Array,
        keys: jax.Array,
        rows: jax.Array | None = None,
        counts: jax.Array | None = None,
    ):
        def member_plan(key: jax.Array, own: jax.Array | None, count: jax.Array | None) -> tuple[jax.Array, jax.Array]:
            shuffle_key, dropout_key = jax.random.split(key)
            if own is None:
                order = train.shuffle_indices(shuffle_key, n_rows)
            else:  # the member's rows in shuffled order, its padding (positions >= count) last
                pos = train.shuffle_indices(shuffle_key, own.shape[0])
                order = own[pos[jnp.argsort(pos >= count, stable=True)]]
            order = order[: steps * batch_size].reshape(steps, batch_size)
            return order, jax.random.split(dropout_key, steps)

        order, step_keys = jax.vmap(member_plan)(keys, rows, counts)  # [K, steps, batch], [K, steps]

        def member_step(state: train.TrainState, idx: jax.Array, key: jax.Array):
            return train.train_step(state, (x[idx], y[idx]), key)

        def split(a: jax.Array) -> jax.Array:  # [K = devices * turns * chunk, ...] -> [turns, devices * chunk, ...]
            a = a.reshape(devices, -1, chunk, *a.shape[1:])
            return jnp.swapaxes(a, 0, 1).reshape(a.shape[1], devices * chunk, *a.shape[3:])

        def join(a: jax.Array) -> jax.Array:  # the inverse of split
            a = a.reshape(a.shape[0], devices, chunk, *a.shape[2:])
            return jnp.swapaxes(a, 0, 1).reshape(-1, *a.shape[3:])

        per_step = (jnp.swapaxes(order, 0, 1), jnp.swapaxes(step_keys, 0, 1))  # [steps, K, ...]
        if chunk is None:
            new, metrics = jax.lax.scan(lambda s, i: jax.vmap(member_step)(s, *i), states, per_step)
        else:
            # The states stay in the turns layout for the whole epoch. Each step loops over the
            # turns, a turn stepping `chunk` members of every device's block, so each device
            # still steps only its own members.
            def body(s: train.TrainState, inputs: tuple[jax.Array, jax.Array]):
                return jax.lax.map(lambda a: jax.vmap(member_step)(*a), (s, *inputs))

            per_step = jax.tree.map(jax.vmap(split), per_step)  # [steps, turns, devices * chunk, ...]
            new, metrics = jax.lax.scan(body, jax.tree.map(split, states), per_step)
            new, metrics = jax.tree.map(join, new), jax.tree.map(jax.vmap(join), metrics)
        return freeze(active, new, states), jax.tree.map(lambda a: jnp.sum(a, axis=0), metrics)

    if not kfold:
        return jax.jit(lambda states, active, x, y, keys: epoch(states, active, x, y, keys), donate_argnums=0)
    return jax.jit(epoch, donate_argnums=0)


def make_sweep_evaluate(kfold: bool = False) -> Callable:
    """``evaluate(states, x, y, mask) -> metric sums [K]`` over pre-batched validation arrays.

    ``mask``: 0/1 ``[batches, batch]`` shared by every member, or with ``kfold`` one per member,
    ``[K, batches, batch]`` (member k's early-stopping rows: its fold).
    """

    def evaluate(states: train.TrainState, x: jax.Array, y: jax.Array, mask: jax.Array):
        if kfold:

            def body(carry: None, batch: tuple[jax.Array, jax.Array, jax.Array]):
                xb, yb, mb = batch
                return carry, jax.vmap(lambda s, m: train.eval_step(s, (xb, yb, m)))(states, mb)

            _, metrics = jax.lax.scan(body, None, (x, y, jnp.swapaxes(mask, 0, 1)))
        else:

            def body(carry: None, batch: tuple[jax.Array, jax.Array, jax.Array]):
                return carry, jax.vmap(train.eval_step, in_axes=(0, None))(states, batch)

            _, metrics = jax.lax.scan(body, None, (x, y, mask))
        return jax.tree.map(lambda a: jnp.sum(a, axis=0), metrics)

    return jax.jit(evaluate)


@dataclass(frozen=True)
class MemberRows:
    """K-fold cross-fitting: the rows each member trains and early-stops on.

    ``fold``: int ``[n]``, the fold (= the member) that holds each row of the training matrix
    out: member k trains on every row whose fold is not k and early-stops on those whose fold
    is k (K-fold bagging, as AutoGluon-Tabular trains its models: Erickson et al. 2020,
    arXiv 2003.06505). Each row is then held out by exactly one member, whose prediction for
    it is an out-of-fold prediction.
    """

    fold: np.ndarray

    @property
    def k(self) -> int:
        return int(self.fold.max()) + 1

    def train_rows(self, k_pad: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows int32 [k_pad, L], counts int32 [k_pad])``: member k's training rows, padded
        with its own first row to the longest; padding members (k >= K) copy member 0."""
        own = [np.flatnonzero(self.fold != k).astype(np.int32) for k in range(self.k)]
        own += [own[0]] * (k_pad - len(own))
        width = max(len(r) for r in own)
        rows = np.stack([np.concatenate([r, np.full(width - len(r), r[0], np.int32)]) for r in own])
        return rows, np.asarray([len(r) for r in own], np.int32)

    @property
    def min_train_rows(self) -> int:
        return int(len(self.fold) - np.bincount(self.fold).max())


def kfold_rows(y: np.ndarray, k: int, seed: int, task: str) -> MemberRows:
    """Stratified K folds of the training rows for classification (plain K folds when a class
    has fewer than ``k`` rows, and for regression), shuffled with ``seed``.

    Raises:
      ConfigError: fewer rows than folds.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    if len(y) < 2 * k:
        raise ConfigError(f"train.kfold_members: {len(y)} training + validation rows are too few for {k} folds")
    stratify = task == "classification" and np.bincount(y).min(initial=k) >= k
    splitter = (
        StratifiedKFold(k, shuffle=True, random_state=seed) if stratify else KFold(k, shuffle=True, random_state=seed)
    )
    fold = np.empty(len(y), np.int32)
    for i, (_, held) in enumerate(splitter.split(np.zeros(len(y)), y if stratify else None)):
        fold[held] = i
    return MemberRows(fold)


@partial(jax.jit, donate_argnums=0)
def _keep_best(best: nnx.State, params: nnx.State, improved: jax.Array) -> nnx.State:
    return freeze(improved, params, best)


@jax.jit
def _epoch_keys(seeds: jax.Array, epoch: jax.Array) -> jax.Array:
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), epoch))(seeds)  # = train.epoch_key per member


# ----------------------------------------------------------------------------- results


@dataclass
class MemberResult:
    index: int
    group: int
    values: dict[str, Any]
    best_val_loss: float  # inf when no epoch ended with a finite loss
    best_epoch: int  # 0 = the initial parameters
    epochs_run: int
    stopped: str  # one of STOP_REASONS
    history: list[dict[str, Any]]

    def row(self) -> dict[str, Any]:
        """The table row (JSON-able: tuples as lists, inf as None)."""
        return {
            "member": self.index,
            "group": self.group,
            "values": {k: list(v) if isinstance(v, tuple) else v for k, v in self.values.items()},
            "best_val_loss": self.best_val_loss if math.isfinite(self.best_val_loss) else None,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "stopped": self.stopped,
        }


@dataclass
class GroupResult:
    config: Config  # the first member's config (the static part is shared)
    members: tuple[int, ...]  # global member indices, in stack order
    state: train.TrainState  # stacked, after the last epoch run
    best_params: nnx.State  # stacked best parameters, one row per member

    @property
    def graphdef(self) -> nnx.GraphDef:
        return self.state.graphdef


@dataclass
class SweepResult:
    members: list[MemberResult]
    groups: list[GroupResult]
    compile_seconds: float = 0.0
    train_seconds: float = 0.0
    n_devices: int = 1
    timings: dict[str, float] = field(default_factory=dict)
    task: str = "classification"  # regression: outputs are standardised targets, not probabilities

    def table(self) -> list[dict[str, Any]]:
        return [m.row() for m in self.members]

    def locate(self, index: int) -> tuple[GroupResult, int]:
        """The group holding member ``index`` and its row in that group's stack."""
        g = self.groups[self.members[index].group]
        return g, g.members.index(index)

    def params_of(self, index: int) -> tuple[nnx.GraphDef, nnx.State]:
        """Member ``index``'s best parameters (unstacked) and graph definition."""
        g, row = self.locate(index)
        return g.graphdef, jax.tree.map(lambda a: a[row], g.best_params)

    def predict(self, x: np.ndarray, members: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std across members)`` of ``members``' (any groups) outputs on ``x``: class
        probabilities, or regression predictions in standardised target units."""
        return _mean_std(np.concatenate([p for p in self._outputs(x, members)], axis=0))

    def _outputs(self, x: np.ndarray, members: Sequence[int]) -> list[np.ndarray]:
        out = []
        for gi, g in enumerate(self.groups):
            rows = [g.members.index(i) for i in members if self.members[i].group == gi]
            if rows:
                out.append(member_outputs(g.graphdef, g.best_params, x, rows, self.task))
        if not out:
            raise ValueError("predict: no members given")
        return out


def top_k(result: SweepResult, k: int) -> list[MemberResult]:
    """The ``k`` members with the lowest best validation loss (finite ones only), best first."""
    ranked = sorted(
        (m for m in result.members if math.isfinite(m.best_val_loss)), key=lambda m: (m.best_val_loss, m.index)
    )
    return ranked[:k]


@partial(jax.jit, static_argnums=(0, 3))
def _outputs_all(graphdef: nnx.GraphDef, stacked: nnx.State, x: jax.Array, classify: bool) -> jax.Array:
    def one(p: nnx.State) -> jax.Array:
        out = model_lib.apply(graphdef, p, x)
        return jax.nn.softmax(out, axis=-1) if classify else out

    return jax.vmap(one)(stacked)


def member_outputs(
    graphdef: nnx.GraphDef,
    stacked_params: nnx.State,
    x: np.ndarray,
    members: Sequence[int] | None = None,
    task: str = "classification",
) -> np.ndarray:
    """Rows ``members`` of a stack on ``x``: class probabilities ``[len(members), n, classes]``, or
    regression predictions ``[len(members), n, targets]`` in standardised target units."""
    if members is not None:
        idx = np.asarray(members, np.int32)
        stacked_params = jax.tree.map(lambda a: a[idx], stacked_params)
    return np.asarray(_outputs_all(graphdef, stacked_params, jnp.asarray(x, jnp.float32), task == "classification"))


def _mean_std(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return probs.mean(axis=0), probs.std(axis=0)


def ensemble_predict(
    graphdef: nnx.GraphDef,
    stacked_params: nnx.State,
    x: np.ndarray,
    members: Sequence[int] | None = None,
    task: str = "classification",
) -> tuple[np.ndarray, np.ndarray]:
    """``(mean [n, C], std across members [n, C])`` of stacked members' outputs (see :func:`member_outputs`).

    ``members``: rows of the stack (default: all). The std is the members' disagreement.
    """
    return _mean_std(member_outputs(graphdef, stacked_params, x, members, task))


# ----------------------------------------------------------------------------- checkpoints


class _Store:
    """An Orbax manager for one group: ``state`` (stacked arrays + best params) and JSON ``meta``."""

    def __init__(self, directory: Path):
        self.directory = directory.resolve()
        options = ocp.CheckpointManagerOptions(preservation_policy=checkpoint_managers.LatestN(2), create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, tree: Any, meta: dict[str, Any]) -> None:
        args = ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta))
        self.manager.save(step, args=args, force=True)

    def meta(self, step: int) -> dict[str, Any]:
        """The step's JSON metadata alone (checked before any array is restored)."""
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, step: int, template: Any) -> tuple[Any, dict[str, Any]]:
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), template)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        out = self.manager.restore(step, args=args)
        return out["state"], out["meta"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _stopper_dict(s: train.EarlyStopping) -> dict[str, Any]:
    return {"best_loss": _jsonable(s.best_loss), "best_epoch": s.best_epoch, "bad_epochs": s.bad_epochs}


# ----------------------------------------------------------------------------- the loop


@dataclass
class EpochReport:
    """What ``on_epoch`` receives after each epoch of a group (after any checkpoint)."""

    group: int
    epoch: int
    rows: dict[int, dict[str, Any]]  # member index -> metrics of the members trained this epoch
    active: list[int]  # members still training
    stopped: dict[int, str]  # member index -> reason, for members that stopped this epoch


def _member_devices(n_members: int, num_devices: int, auto_cap: int | None = None) -> tuple[int, int]:
    """(devices used, padded member count): as few padding members as the per-device load allows.

    ``auto_cap`` bounds the device count when ``num_devices`` is 0 (every device).
    """
    available = len(jax.devices())
    wanted = available if num_devices == 0 else num_devices
    if num_devices == 0 and auto_cap is not None:
        wanted = max(1, min(wanted, auto_cap))
    if wanted > available:
        raise ConfigError(f"train.num_devices: {wanted} requested but only {available} device(s) visible")
    per_device = math.ceil(n_members / wanted)
    used = math.ceil(n_members / per_device)
    return used, used * per_device


#: The share of the machine's memory that the replicated training and validation rows may take in all.
CPU_DATA_SHARE = 0.25


def cpu_copies_that_fit(data_bytes: int, memory_bytes: int | None = None) -> int:
    """How many CPU devices may each hold a copy of ``data_bytes`` of rows (at least 1).

    Every device holds its own copy of the training and validation rows (a replicated array is
    one buffer per device, also on CPU devices that share the host's memory), so one CPU device
    per core would multiply a large table's memory by the core count. With ``train.num_devices=0``
    a CPU sweep uses no more devices than :data:`CPU_DATA_SHARE` of ``memory_bytes`` (the
    machine's physical memory, capped by a container's limit, by default) holds copies.
    """
    if memory_bytes is None:
        memory_bytes = distributed.usable_memory_bytes()
    return max(1, int(memory_bytes * CPU_DATA_SHARE) // max(data_bytes, 1))


def _pad(tree: Any, n: int) -> Any:
    """A host (NumPy) copy with copies of row 0 appended up to ``n`` rows (frozen padding members).

    On the host, so that placing it on the members' devices slices it in NumPy instead of
    compiling a slicing program per leaf shape (~0.5 s of a sweep's start-up).
    """

    def pad(a: Any) -> np.ndarray:
        a = np.array(a)  # a copy: JAX may read a CPU array zero-copy, and the state is donated
        return np.concatenate([a, np.repeat(a[:1], n - a.shape[0], axis=0)]) if n > a.shape[0] else a

    return jax.tree.map(pad, tree)


def check(config: Config, dataset: Dataset, member_rows: MemberRows | None = None) -> list[Member]:
    """The sweep's members, or the error that :func:`run_sweep` would raise, before anything is written.

    Callers (``experiments/sweep.py``) run it before opening tracking or creating the
    workdir, so an empty or malformed spec leaves no MLflow run and no folder behind.

    Raises:
      ConfigError: no axes, a malformed spec, an invalid member, a batch larger than the
        training set, or ``sweep.ensemble_top_k`` < 0.
      SweepError: more than one process.
    """
    if jax.process_count() > 1:
        raise SweepError("sweeps run in one process (members are sharded over its local devices)")
    if config.sweep.ensemble_top_k < 0:
        raise ConfigError(f"sweep.ensemble_top_k: {config.sweep.ensemble_top_k} must be >= 0 (0 or 1: no ensemble)")
    n_train = _n_train(dataset, member_rows)
    members = [dataclasses.replace(m, config=resolve_auto(m.config, n_train)) for m in expand(config)]  # "auto" budgets
    if member_rows is not None and (len(group_members(members)) > 1 or len(members) != member_rows.k):
        raise ConfigError(f"k-fold members: {member_rows.k} folds for {len(members)} members of one network shape")
    for g in group_members(members):
        if n_train < g[0].config.train.batch_size:
            whose = (
                ""
                if member_rows is None
                else f" of the smallest k-fold member ({len(member_rows.fold)} training + validation rows in "
                f"{member_rows.k} folds, each member training on the others; use a smaller batch or "
                "train.kfold_members=false)"
            )
            raise ConfigError(
                f"train.batch_size: {g[0].config.train.batch_size} is larger than the {n_train} training rows{whose}"
            )
    return members


def kfold_dataset(dataset: Dataset, k: int, seed: int) -> tuple[Dataset, MemberRows]:
    """``dataset`` with its training and validation rows pooled as the training matrix (no
    validation rows left), and the :func:`kfold_rows` of that pool: what :func:`run_sweep` takes
    for k-fold members (``train.kfold_members``). The preprocessing stays the one fitted on the
    training rows; the test rows are untouched."""
    x = np.concatenate([dataset.x_train, dataset.x_val])
    y = np.concatenate([dataset.y_train, dataset.y_val])
    pooled = dataclasses.replace(dataset, x_train=x, y_train=y, x_val=x[:0], y_val=y[:0])
    return pooled, kfold_rows(y, k, seed, dataset.task)


def member_data(config: Config, dataset: Dataset, k: int) -> tuple[Dataset, MemberRows | None]:
    """What ``train.members=k`` trains on: :func:`kfold_dataset` with ``train.kfold_members`` when the
    pooled training + validation rows number at least 2k, else ``(dataset, None)`` (shared rows)."""
    if config.train.kfold_members and len(dataset.y_train) + len(dataset.y_val) >= 2 * k:
        return kfold_dataset(dataset, k, config.seed)
    return dataset, None


def out_of_fold(result: SweepResult, members: Sequence[int], x: np.ndarray, rows: MemberRows) -> np.ndarray:
    """Out-of-fold outputs ``[n, C]`` on the pooled training matrix ``x``: each row answered by the
    member that held it out (its best parameters); rows of a member not in ``members`` (left out
    for a loss that was never finite) by the mean of ``members``."""
    out = result.predict(x, members)[0]
    for i in members:
        held = rows.fold == i
        out[held] = result.predict(x[held], [i])[0]
    return out


def _n_train(dataset: Dataset, member_rows: MemberRows | None) -> int:
    """Training rows per member: all of ``x_train``, or with k-fold members the fewest any member has."""
    return len(dataset.y_train) if member_rows is None else member_rows.min_train_rows


def run_sweep(
    config: Config,
    dataset: Dataset,
    workdir: str | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    member_rows: MemberRows | None = None,
) -> SweepResult:
    """Trains every member of ``config.sweep``; resumes from ``workdir`` when it holds checkpoints.

    ``member_rows``: k-fold cross-fitting (one group, one member per fold): member k trains on
    the rows of ``dataset.x_train`` outside its fold and early-stops on its fold (its
    validation metrics are its fold's; ``dataset.x_val`` is not used).

    ``on_epoch`` is called after every epoch (after its checkpoint); an exception from it
    stops the sweep with the checkpoints kept (how tests simulate a crash).

    Raises:
      ConfigError: invalid sweep, or a batch larger than the training set.
      SweepError: a resume against a checkpoint of another sweep or other data.
    """
    members = check(config, dataset, member_rows)
    swept = [a.key for a in sweep_axes(config)]
    groups = group_members(members)

    results: dict[int, MemberResult] = {}
    group_results: list[GroupResult] = []
    timings = {"compile": 0.0, "train": 0.0, "checkpoint": 0.0}
    n_dev_max = 1
    for gi, group in enumerate(groups):
        gres, mres, t, n_dev = _run_group(config, gi, group, swept, dataset, workdir, on_epoch, member_rows)
        group_results.append(gres)
        results.update({m.index: m for m in mres})
        for k in timings:
            timings[k] += t[k]
        n_dev_max = max(n_dev_max, n_dev)
    return SweepResult(
        members=[results[m.index] for m in members],
        groups=group_results,
        compile_seconds=timings["compile"],
        train_seconds=timings["train"],
        n_devices=n_dev_max,
        timings=timings,
        task=dataset.task,
    )


def _run_group(
    config: Config,
    gi: int,
    group: list[Member],
    swept: list[str],
    dataset: Dataset,
    workdir: str | None,
    on_epoch: Callable[[EpochReport], None] | None,
    member_rows: MemberRows | None = None,
) -> tuple[GroupResult, list[MemberResult], dict[str, float], int]:
    cfg0 = group[0].config
    tc = cfg0.train
    k = len(group)
    n_train = _n_train(dataset, member_rows)
    cap = None
    if jax.default_backend() == "cpu":
        rows = (dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val)
        cap = cpu_copies_that_fit(sum(np.asarray(a).nbytes for a in rows))
    n_dev, k_pad = _member_devices(k, config.train.num_devices, cap)
    mesh = jax.make_mesh(
        (n_dev,), ("members",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:n_dev]
    )
    by_member, replicated = NamedSharding(mesh, P("members")), NamedSharding(mesh, P())

    states = create_states(group, swept, train.network_spec(group[0].config, dataset), n_train, dataset.task)
    best = states.params
    stoppers = [train.EarlyStopping(m.config.train.patience, m.config.train.min_delta) for m in group]
    reasons: list[str | None] = [None] * k
    histories: list[list[dict[str, Any]]] = [[] for _ in group]
    start = 0
    timings = {"compile": 0.0, "train": 0.0, "checkpoint": 0.0}

    store = _Store(group_dir(workdir, gi)) if workdir else None
    member_meta = [{"index": m.index, "values": {kk: _jsonable(v) for kk, v in m.values.items()}} for m in group]
    if member_rows is not None:  # in the members' record, so that no resume mixes k-fold and shared rows
        for j, mm in enumerate(member_meta):
            mm["kfold_rows"] = int(np.sum(member_rows.fold == j))
    if store is not None and store.latest_step() is not None:
        step = store.latest_step()
        # checked first: another member count would otherwise fail inside Orbax on the array shapes
        _check_resume(store.meta(step), config, member_meta, dataset, store.directory, step)
        tree, meta = store.restore(step, {"train": states.arrays(), "best_params": best})
        states, best = states.with_arrays(tree["train"]), tree["best_params"]
        for s, d in zip(stoppers, meta["stoppers"], strict=True):
            s.best_loss = math.inf if d["best_loss"] is None else d["best_loss"]
            s.best_epoch, s.bad_epochs = d["best_epoch"], d["bad_epochs"]
        reasons, histories, start = meta["reasons"], meta["histories"], step

    interrupt = EpochBoundary()  # a Ctrl-C stops after the epoch's checkpoint (mlp_jax/interrupt.py)
    try:
        states = jax.device_put(_pad(states, k_pad), by_member)
        best = jax.device_put(_pad(best, k_pad), by_member)  # its own host copy: never aliases the donated state
        x_train = jax.device_put(dataset.x_train, replicated)
        y_train = jax.device_put(dataset.y_train, replicated)
        kfold = member_rows is not None
        if kfold:  # every row of x_train, each member's mask its own fold
            xv, yv, shared = train.batch_for_eval(dataset.x_train, dataset.y_train, tc.eval_batch_size)
            fold = np.concatenate([member_rows.fold, np.full(shared.size - len(member_rows.fold), -1, np.int32)])
            masks = np.stack([(fold == j).reshape(shared.shape) for j in range(k_pad)]).astype(np.float32)
            val = (*jax.device_put((xv, yv), replicated), jax.device_put(masks, by_member))
            rows, counts = jax.device_put(member_rows.train_rows(k_pad), by_member)
            own_rows: tuple[jax.Array, ...] = (rows, counts)
        else:
            val = jax.device_put(train.batch_for_eval(dataset.x_val, dataset.y_val, tc.eval_batch_size), replicated)
            own_rows = ()
        seeds = jax.device_put(
            np.asarray([m.config.seed for m in group] + [group[0].config.seed] * (k_pad - k), np.int32), by_member
        )
        active = np.asarray([r is None for r in reasons] + [False] * (k_pad - k))

        t0 = time.perf_counter()
        keys0 = _epoch_keys(seeds, jnp.int32(0))
        active_dev = jax.device_put(active, by_member)
        train_epoch = (
            make_sweep_epoch(
                tc.batch_size,
                n_train,
                kfold,
                devices=n_dev,
                chunk=member_chunk(k_pad // n_dev, tc.batch_size) if jax.default_backend() == "cpu" else None,
            )
            .lower(states, active_dev, x_train, y_train, keys0, *own_rows)
            .compile()
        )
        evaluate = make_sweep_evaluate(kfold).lower(states, *val).compile()
        timings["compile"] = time.perf_counter() - t0

        epoch = start
        interrupt.install()
        for epoch in range(start + 1, tc.epochs + 1):
            if not active.any():
                break
            t = time.perf_counter()
            keys = _epoch_keys(seeds, jnp.int32(epoch))
            states, sums = train_epoch(states, jax.device_put(active, by_member), x_train, y_train, keys, *own_rows)
            val_sums = evaluate(states, *val)
            sums, val_sums = jax.device_get((sums, val_sums))  # the one host transfer of the epoch
            improved = np.zeros(k_pad, bool)
            rows, stopped_now = {}, {}
            for j, m in enumerate(group):
                if not active[j]:
                    continue
                tr = train.finalize({n: v[j] for n, v in sums.items()})
                va = train.finalize({n: v[j] for n, v in val_sums.items()})
                row = {  # loss + accuracy, or loss + rmse (standardised units) for regression
                    "epoch": epoch,
                    **{f"train_{n}": v for n, v in tr.items()},
                    **{f"val_{n}": v for n, v in va.items()},
                }
                if not (math.isfinite(tr["loss"]) and math.isfinite(va["loss"])):
                    reasons[j] = "non-finite"
                    row = {n: _jsonable(v) for n, v in row.items()}
                elif stoppers[j].update(epoch, va["loss"]):
                    improved[j] = True
                if reasons[j] is None and stoppers[j].should_stop:
                    reasons[j] = "patience"
                histories[j].append(row)
                rows[m.index] = row
                if reasons[j] is not None:
                    active[j] = False
                    stopped_now[m.index] = reasons[j]
            if improved.any():
                best = _keep_best(best, states.params, jax.device_put(improved, by_member))
            jax.block_until_ready(best)
            timings["train"] += time.perf_counter() - t

            last = epoch == tc.epochs or not active.any() or interrupt.requested
            if store is not None and (epoch % config.train.checkpoint_every == 0 or last):
                tc0 = time.perf_counter()
                # a[:k] is the live array when unpadded: Orbax copies it to host memory in the blocking
                # part of save, before the next epoch donates it (tested: resumes are bitwise)
                unpadded = jax.tree.map(lambda a: a[:k], {"train": states.arrays(), "best_params": best})
                meta = {
                    "format": META_FORMAT,
                    "config": json.loads(to_json(config)),
                    "group": gi,
                    "members": member_meta,
                    "data": {"source": dataset.source, "digest": dataset.digest},
                    "stoppers": [_stopper_dict(s) for s in stoppers],
                    "reasons": reasons,
                    "histories": histories,
                }
                store.save(epoch, unpadded, meta)
                timings["checkpoint"] += time.perf_counter() - tc0
            if on_epoch is not None:
                on_epoch(EpochReport(gi, epoch, rows, [m.index for j, m in enumerate(group) if active[j]], stopped_now))
            interrupt.check()  # a Ctrl-C during this epoch stops here, its checkpoint saved
    finally:
        interrupt.restore()
        if store is not None:
            tc0 = time.perf_counter()
            store.close()
            timings["checkpoint"] += time.perf_counter() - tc0

    final = jax.tree.map(lambda a: a[:k], states)
    best = jax.tree.map(lambda a: a[:k], best)
    mres = []
    for j, m in enumerate(group):
        s = stoppers[j]
        mres.append(
            MemberResult(
                index=m.index,
                group=gi,
                values=m.values,
                best_val_loss=s.best_loss,
                best_epoch=s.best_epoch,
                epochs_run=histories[j][-1]["epoch"] if histories[j] else 0,
                stopped=reasons[j] or "budget",
                history=histories[j],
            )
        )
    return GroupResult(cfg0, tuple(m.index for m in group), final, best), mres, timings, n_dev


# ----------------------------------------------------------------------------- artifacts


def ensemble_members(result: SweepResult, k: int, ceiling: float = math.inf) -> list[int]:
    """The top-``k`` members that can form one ensemble artifact: best first, all in one group.

    An ensemble artifact holds one network shape, so when the global top-k span groups
    (different hidden sizes, say) the ensemble is the top-k *within the best member's group*
    (it may then hold fewer than ``k`` members). Members after the best one join only with a
    best validation loss below ``ceiling`` (:func:`trivial_val_loss`: a member that never
    beat predicting the training targets' mean or class frequencies, e.g. one that diverged
    to a huge but finite loss, would only drag the ensemble's mean away).
    """
    ranked = top_k(result, len(result.members))
    if not ranked or k < 1:
        return []
    best, *rest = [m for m in ranked if m.group == ranked[0].group]
    return [best.index, *[m.index for m in rest if m.best_val_loss < ceiling][: k - 1]]


def trivial_val_loss(config: Config, dataset: Dataset) -> float:
    """The validation loss of a model that learned nothing: the training class frequencies for
    every row (log loss), or the training targets' mean (``train.loss``, MSE or Huber, in
    standardised target units), as the members' ``val_loss`` measures it. inf when a
    validation class never occurs in training (then no member is ever left out for it)."""
    if dataset.task == "classification":
        counts = np.bincount(dataset.y_train, minlength=len(dataset.classes)).astype(np.float64)
        prior = counts[dataset.y_val] / counts.sum()
        with np.errstate(divide="ignore"):
            return float(-np.mean(np.log(prior))) if len(prior) else math.inf
    y_train = np.asarray(dataset.y_train, np.float64)
    residual = np.abs(np.asarray(dataset.y_val, np.float64) - y_train.mean(axis=0))
    if len(residual) == 0:
        return math.inf
    if train.loss_name(config, dataset.task) == "huber":
        d = config.train.huber_delta
        per = np.where(residual <= d, 0.5 * residual**2, d * (residual - 0.5 * d))
    else:
        per = residual**2
    return float(np.mean(per))


def seeds_config(config: Config, k: int) -> Config:
    """``config`` as a sweep over seeds ``seed .. seed+k-1`` (a single run's ``train.members=k``)."""
    seeds = ",".join(str(config.seed + i) for i in range(k))
    train_cfg = dataclasses.replace(config.train, members=1)
    return dataclasses.replace(config, train=train_cfg, sweep=SweepConfig(axes=(f"seed={seeds}",)))


def save_artifact(
    result: SweepResult,
    members: Sequence[int],
    dataset: Dataset,
    directory: str | Path,
    config: Config,
    keep: int | None = 1,
) -> Path:
    """Writes members of one group as a model artifact step folder; returns it.

    One member: an ordinary single model (``meta.members`` = 1, its best parameters and its
    config, history and early-stopping state), served and registered like a runner's
    checkpoint. Several: a deep ensemble (``meta.members`` = K, ``best_params`` stacked in
    the order given, best first; config and history of the first member, plus one history
    row with the ensemble's validation log loss and accuracy). The step is the largest
    best epoch among them. The folder holds ``best_params`` and ``meta`` only (no train
    state: an artifact from a sweep is served, never resumed). ``keep``: step folders kept in
    ``directory`` (None: all; the runner keeps every one, so nothing older is deleted).

    Raises:
      ValueError: no members, or members of different groups (different network shapes).
    """
    from mlp_jax import artifact

    members = list(members)
    if not members:
        raise ValueError("save_artifact: no members given")
    groups = {result.members[i].group for i in members}
    if len(groups) > 1:
        raise ValueError(f"save_artifact: members {members} span groups {sorted(groups)} (different network shapes)")
    g = result.groups[groups.pop()]
    rows = np.asarray([g.members.index(i) for i in members], np.int32)
    stacked = jax.tree.map(lambda a: np.asarray(jax.device_get(a))[rows], g.best_params)
    first = result.members[members[0]]
    member_config = with_values(dataclasses.replace(config, sweep=SweepConfig()), first.values)
    spec = train.network_spec(member_config, dataset)
    history = list(first.history)
    if len(members) > 1:
        mean, _ = ensemble_predict(g.graphdef, stacked, dataset.x_val, task=dataset.task)
        history.append(
            {
                "epoch": max(result.members[i].best_epoch for i in members),
                "ensemble_members": members,
                **ensemble_scores(dataset.task, dataset.y_val, mean, "val_"),
            }
        )
        params = stacked
    else:
        params = jax.tree.map(lambda a: a[0], stacked)
    stopper = train.EarlyStopping(0, best_loss=_jsonable(first.best_val_loss), best_epoch=first.best_epoch)
    meta = dataclasses.replace(
        train.artifact_meta(member_config, dataset, spec, history, stopper, result.n_devices), members=len(members)
    )
    step = max(1, max(result.members[i].best_epoch for i in members))
    directory = Path(directory).resolve()
    mngr = artifact.manager(directory, read_only=False, keep=keep)
    try:
        args = ocp.args.Composite(best_params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta.to_dict()))
        if step in mngr.all_steps():  # a rerun of a finished sweep or run: the same members, saved again
            mngr.delete(step)
        mngr.save(step, args=args, force=True)
        mngr.wait_until_finished()
    finally:
        mngr.close()
    return directory / str(step)


def log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log probability of the true classes (probabilities clipped at 1e-7)."""
    p = np.clip(np.asarray(probs, np.float64)[np.arange(len(y)), y], 1e-7, 1.0)
    return float(-np.mean(np.log(p)))


def ensemble_scores(task: str, y: np.ndarray, mean: np.ndarray, prefix: str = "") -> dict[str, float]:
    """An ensemble's mean outputs against ``y``: ``loss`` (log loss) and ``accuracy`` for
    classification; ``loss`` (MSE averaged over targets) and ``rmse`` for regression, both in
    standardised target units, as the members' own ``val_loss`` / ``val_rmse``."""
    if task == "classification":
        return {f"{prefix}loss": log_loss(y, mean), f"{prefix}accuracy": float(np.mean(mean.argmax(axis=1) == y))}
    mse = float(np.mean(np.square(np.asarray(mean, np.float64) - y)))
    return {f"{prefix}loss": mse, f"{prefix}rmse": math.sqrt(mse)}


def _check_resume(
    meta: dict[str, Any], config: Config, member_meta: list, dataset: Dataset, where: Path, step: int
) -> None:
    if meta.get("format") != META_FORMAT:
        raise SweepError(f"{where}/{step}: sweep checkpoint format {meta.get('format')!r}, expected {META_FORMAT}")
    if meta["data"]["digest"] != dataset.digest:
        raise SweepError(
            f"refusing to resume {where} (epoch {step}): the data changed (the checkpoint was trained on "
            f"{meta['data']['source']}); to train on other data, use another workdir (e.g. workdir=checkpoints/my-sweep)"
        )
    stored = from_dict(meta["config"])
    differing = diff(stored, config, ignore=RESUMABLE_KEYS)
    if differing or meta["members"] != json.loads(json.dumps(member_meta)):
        raise SweepResumeError(
            f"refusing to resume {where} (epoch {step}): the sweep differs"
            f"{' in ' + ', '.join(differing) if differing else ' in its members'}; use another workdir",
            stored,
            differing,
            step,
        )


__all__ = [
    "HOST_KEYS",
    "VALUE_KEYS",
    "EpochReport",
    "GroupResult",
    "Member",
    "MemberResult",
    "MemberRows",
    "SweepError",
    "SweepResult",
    "SweepResumeError",
    "check",
    "create_states",
    "ensemble_members",
    "ensemble_predict",
    "ensemble_scores",
    "expand",
    "freeze",
    "group_dir",
    "group_members",
    "kfold_dataset",
    "kfold_rows",
    "log_loss",
    "make_sweep_epoch",
    "make_sweep_evaluate",
    "member_chunk",
    "member_data",
    "member_outputs",
    "out_of_fold",
    "run_sweep",
    "save_artifact",
    "seeds_config",
    "static_key",
    "top_k",
]
