"""Typed, frozen configuration for every setting, with ``key=value`` overrides.

A config is a tree of frozen dataclasses (one level of groups under :class:`Config`).
Every leaf has a flat dotted key (``optim.learning_rate``) used for command-line
overrides and for tracking params; :func:`to_json` / :func:`from_json` round-trip the
whole tree so it can be stored beside a checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Activation = Literal["relu", "gelu", "silu", "tanh"]
OptimizerName = Literal["adam", "adamw", "sgd"]
ScheduleName = Literal["constant", "warmup_cosine"]
Task = Literal["classification", "regression"]
MissingPolicy = Literal["impute", "error"]
ScalingName = Literal["robust", "standard"]

#: Where the synthetic task lives; the runner generates it there when it is missing.
SYNTHETIC_PATH = "data/classification_data.csv"
#: Where the Friedman #1 regression task lives (``experiments.regression_baseline``); generated when missing.
FRIEDMAN1_PATH = "data/friedman1.csv"


class ConfigError(ValueError):
    """A config override or value is invalid; the message names the key."""


@dataclass(frozen=True)
class DataConfig:
    """Where the rows come from, which columns are what, and how they are split.

    Column roles are inferred (numbers, booleans, text); see ``mlp_jax/features.py`` for the
    preprocessing these settings steer.
    """

    path: str = SYNTHETIC_PATH  # CSV or Parquet (.parquet/.pq file or folder); generated when it is SYNTHETIC_PATH
    target: str = "target"  # label column; regression may name several: a,b
    task: Task = "classification"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    drop: tuple[str, ...] = ()  # columns to ignore (ids, leaks)
    categorical: tuple[str, ...] = ()  # columns to treat as categories even when numeric (codes, zip codes)
    missing: MissingPolicy = "impute"  # impute = median + 0/1 "was missing" input; error = refuse missing values
    scaling: ScalingName = "robust"  # robust = (x - median) / (IQR / 1.349); standard = (x - mean) / std
    clip: float = 5.0  # scaled numbers are clipped to [-clip, clip]; 0 turns clipping off
    min_category_count: int = 5  # rarer training values share the "unknown" slot with unseen ones
    onehot_max_cardinality: int = 10  # slots (incl. missing + unknown) up to which a category is one-hot
    embedding_max_dim: int = 32  # cap on fast.ai's embedding width rule min(cap, round(1.6 * slots**0.56))
    # make_classification settings for the synthetic task (used only to generate SYNTHETIC_PATH)
    n_samples: int = 100_000
    n_features: int = 20
    n_informative: int = 10
    n_redundant: int = 5
    n_classes: int = 2
    class_sep: float = 1.0
    flip_y: float = 0.01
    synthetic_seed: int = 42

    @property
    def target_names(self) -> tuple[str, ...]:
        """``target`` split on commas (one name for classification, one or more for regression)."""
        return tuple(t.strip() for t in self.target.split(",") if t.strip())


@dataclass(frozen=True)
class ModelConfig:
    """The MLP's shape; ``dropout`` is the probability of zeroing each hidden unit while training.

    Defaults chosen on validation rows only, never the test rows (benchmarks/RESULTS.md "Quality"):

    - ``python -m benchmarks.quality --study --seeds 3`` (the 9 suite tables + a 5k synthetic
      sample, auto budget): mean validation loss relative to 128,64 without dropout was 0.925
      for 128,64 with dropout 0.2 and 0.909 for 256,256 with 0.2. 128,64 with dropout had the
      lower loss on 7 of the 10 tables (breast cancer 0.73x, digits 0.83x, synthetic 0.83x);
      256,256's lower mean comes from wine (178 rows, 27 validation rows: 0.46x). An earlier run
      of the same study (Threefry masks) had 0.944 and 0.895; 0.1 and 0.3 gave 0.917 and 0.893
      for 256,256, a cosine schedule 0.907.
    - The 100k synthetic baseline (70,000 training rows): validation log loss 0.0461 without
      dropout, 0.0382 with 0.2, at 98% of the samples/s thanks to the cheap masks of
      :func:`mlp_jax.model.dropout_bits` (Threefry masks cost ~40%); 256,256 with 0.2: 0.0430
      at a third of the samples/s.

    So one rule for every table: 128,64 with dropout 0.2. Dropout as in Srivastava et al.
    2014; RealMLP (arXiv 2407.04491) and TabM (arXiv 2410.24210) also tune their MLPs to
    dropout ~0.1-0.2.
    """

    hidden_sizes: tuple[int, ...] = (128, 64)
    activation: Activation = "relu"
    dropout: float = 0.2


@dataclass(frozen=True)
class OptimConfig:
    """Optax optimiser and learning-rate schedule."""

    name: OptimizerName = "adam"
    learning_rate: float = 1e-3
    schedule: ScheduleName = "constant"
    warmup_epochs: int = 1  # only for warmup_cosine
    momentum: float = 0.9  # only for sgd
    weight_decay: float = 0.0  # decoupled for adamw, L2-in-gradient for adam/sgd
    grad_clip_norm: float = 0.0  # 0 turns clipping off


#: ``train.batch_size`` / ``train.epochs`` = 0 and ``train.patience`` = -1 mean "from the training rows".
AUTO = 0
AUTO_PATIENCE = -1
#: What ``key=auto`` means on the command line, per key.
AUTO_VALUES: dict[str, Any] = {
    "train.batch_size": AUTO,
    "train.epochs": AUTO,
    "train.patience": AUTO_PATIENCE,
    "train.members": AUTO,
}
#: ``train.members=auto`` below this many training rows: a deep ensemble of this many seeds.
AUTO_MEMBERS = 8
AUTO_MEMBERS_BELOW_ROWS = 2_000


@dataclass(frozen=True)
class TrainConfig:
    """The fit loop.

    ``batch_size``, ``epochs`` and ``patience`` default to "auto": :func:`resolve_auto` sets them
    from the number of training rows once the data is split (see :func:`auto_budget`).
    """

    epochs: int = AUTO  # 0 = auto (200 below 2,000 training rows, 100 below 20,000, else 30)
    batch_size: int = AUTO  # 0 = auto: min(256, max(16, n_train // 16)) rounded down to a multiple of 8
    eval_batch_size: int = 4096
    patience: int = AUTO_PATIENCE  # epochs without val-loss improvement before stopping; 0 disables; -1 = auto
    min_delta: float = 0.0
    checkpoint_every: int = 10  # epochs (and always the last); the best params ride in every checkpoint
    num_devices: int = 0  # 0 = every local device
    progress: bool = True
    compare_sklearn: bool = False  # also fit scikit-learn's MLPClassifier/MLPRegressor on the same split and print both
    loss: Literal["mse", "huber"] = "mse"  # regression loss on standardised targets (classification: cross-entropy)
    huber_delta: float = 1.0  # huber only: quadratic within this many target standard deviations
    label_smoothing: float = 0.0  # classification training loss only; validation and test losses stay plain log loss
    members: int = AUTO  # seeds trained as one program and served as one ensemble; 0 = auto (see auto_members)
    kfold_members: bool = True  # with members > 1: member k early-stops on fold k of train+val rows, trains on the rest


@dataclass(frozen=True)
class DistConfig:
    """Several processes as one JAX program (``jax.distributed``); empty = single process.

    Each field falls back to an environment variable when left at its default:
    ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``.
    """

    coordinator_address: str = ""  # host:port of process 0
    num_processes: int = 0  # 0 = from the environment, else 1 (single process)
    process_id: int = -1  # -1 = from the environment
    timeout_seconds: int = 60  # how long to wait for the coordinator / the other processes
    cpu_collectives: Literal["gloo", "mpi"] = "gloo"  # cross-process collectives on CPU


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking (imported only when enabled)."""

    enabled: bool = True
    uri: str = ""  # "" = MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db
    experiment: str = "mlp-jax"
    registered_model: str = "mlp-jax"


@dataclass(frozen=True)
class SweepConfig:
    """Many members trained as one program (``mlp_jax.sweep``); empty ``axes`` = no sweep.

    Set through overrides ``sweep.<key>=<values>``: ``sweep.optim.learning_rate=1e-3,3e-3``
    (a list; ``/`` separates items of a tuple-valued key: ``sweep.model.hidden_sizes=64,32/128``)
    or, with ``samples > 0``, a range ``sweep.optim.learning_rate=1e-4:1e-2``. Each value is
    parsed as that key's type; ``axes`` keeps the ``"key=spec"`` texts in the order given.
    """

    samples: int = 0  # 0 = grid (cartesian product of the lists); N = N random draws seeded by `seed`
    axes: tuple[str, ...] = ()
    ensemble_top_k: int = 0  # K > 1: also register the top-K members (of the best member's group) as one ensemble


@dataclass(frozen=True)
class Config:
    """A whole experiment."""

    name: str = "baseline"
    seed: int = 0
    workdir: str = ""  # "" = checkpoints/<name>
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    @property
    def resolved_workdir(self) -> str:
        return self.workdir or f"checkpoints/{self.name}"


# ----------------------------------------------------------------------------- flat view


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_specs(config: Config) -> dict[str, tuple[Any, Any]]:
    """Flat ``{dotted key: (type, current value)}`` for every leaf, in declaration order."""
    out: dict[str, tuple[Any, Any]] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            hints = _hints(type(value))
            for sub in dataclasses.fields(value):
                out[f"{f.name}.{sub.name}"] = (hints[sub.name], getattr(value, sub.name))
        else:
            out[f.name] = (_hints(Config)[f.name], value)
    return out


def to_flat_dict(config: Config) -> dict[str, Any]:
    """``{dotted key: value}`` (tuples kept as tuples)."""
    return {k: v for k, (_, v) in field_specs(config).items()}


def to_json(config: Config) -> str:
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


def from_dict(d: dict[str, Any]) -> Config:
    """Inverse of ``dataclasses.asdict`` (lists become tuples where the field is a tuple)."""
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        if f.name not in d:
            continue
        if f.default_factory is not dataclasses.MISSING:  # a group
            cls = f.default_factory
            hints = _hints(cls)
            sub = {k: (tuple(v) if _is_tuple(hints[k]) else v) for k, v in d[f.name].items() if k in hints}
            groups[f.name] = cls(**sub)
        else:
            groups[f.name] = d[f.name]
    return Config(**groups)


def from_json(text: str) -> Config:
    return from_dict(json.loads(text))


# ----------------------------------------------------------------------------- overrides


def _is_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple


def type_name(tp: Any) -> str:
    """Human-readable name of a field type, for ``--help`` and errors."""
    if typing.get_origin(tp) is Literal:
        return "{" + ",".join(map(str, typing.get_args(tp))) + "}"
    if _is_tuple(tp):
        return f"{typing.get_args(tp)[0].__name__},..."
    return getattr(tp, "__name__", str(tp))


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_value(key: str, tp: Any, raw: str) -> Any:
    """Parses ``raw`` as type ``tp``; raises ConfigError naming ``key`` on failure."""
    origin = typing.get_origin(tp)
    if raw.strip().lower() == "auto" and (base := key.removeprefix("sweep.")) in AUTO_VALUES:
        return AUTO_VALUES[base]
    try:
        if origin is Literal:
            choices = typing.get_args(tp)
            if raw not in choices:
                raise ConfigError(f"{key}: {raw!r} is not one of {', '.join(map(str, choices))}")
            return raw
        if _is_tuple(tp):
            (item,) = [a for a in typing.get_args(tp) if a is not Ellipsis]
            inner = raw.replace("(", "").replace(")", "")
            parts = inner.split(",")
            if parts[-1].strip() == "" and len(parts) > 1:  # one trailing comma, as in a Python tuple
                parts = parts[:-1]
            if any(not p.strip() for p in parts) and inner.strip():
                raise ConfigError(f"{key}: empty item in {raw!r} (items are separated by ',')")
            return tuple(parse_value(key, item, p.strip()) for p in parts if p.strip())
        if tp is bool:
            low = raw.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if tp is int:
            value = float(raw)  # accept 1e5
            if not value.is_integer():
                raise ValueError
            return int(value)
        if tp is float:
            return float(raw)
        if tp is str:
            return raw
    except ConfigError:
        raise
    except (ValueError, OverflowError):
        raise ConfigError(f"{key}: expected {type_name(tp)}, got {raw!r}") from None
    raise ConfigError(f"{key}: unsupported type {tp}")


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Returns a new config with ``key=value`` overrides applied and validated.

    ``sweep.<key>=<values>`` items become sweep axes (see :class:`SweepConfig`).

    Raises:
      ConfigError: for a malformed item, an unknown key (with the closest valid ones),
        a value of the wrong type, or a value out of range.
    """
    specs = field_specs(config)
    changes: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    axes = dict(a.partition("=")[::2] for a in config.sweep.axes)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        if key.startswith("sweep.") and key not in specs:
            axis = parse_sweep_axis(specs, key.removeprefix("sweep."), raw)  # typed errors now, not later
            axes[axis.key] = raw.strip()
            continue
        if key not in specs:
            close = difflib.get_close_matches(key, specs.keys(), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(close)}?" if close else "; see --help for every key"
            raise ConfigError(f"unknown config key {key!r}{hint}")
        tp, _ = specs[key]
        value = parse_value(key, tp, raw)
        group, dot, leaf = key.partition(".")
        if dot:
            changes.setdefault(group, {})[leaf] = value
        else:
            top[group] = value
    if axes != dict(a.partition("=")[::2] for a in config.sweep.axes):
        sweep = changes.get("sweep", {})
        sweep["axes"] = (*sweep.get("axes", ()), *(f"{k}={v}" for k, v in axes.items()))
        changes["sweep"] = sweep
    for group, kv in changes.items():
        top[group] = dataclasses.replace(getattr(config, group), **kv)
    new = dataclasses.replace(config, **top)
    validate(new)
    return new


#: The largest ``seed`` (and ``data.synthetic_seed``) accepted.
MAX_SEED = 2_000_000_000


def validate(c: Config) -> None:
    """Range checks that types alone cannot express."""

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {msg} (got {to_flat_dict(c)[key]!r})")

    # every float (and float item of a tuple) must be finite: inf / nan slip past range checks
    # such as ``x > 0`` (inf) or reach the step and poison every parameter (nan)
    for key, (tp, value) in field_specs(c).items():
        items = value if isinstance(value, tuple) else (value,)
        if (tp is float or (_is_tuple(tp) and float in typing.get_args(tp))) and not all(
            np.isfinite(float(v)) for v in items
        ):
            raise ConfigError(f"{key}: must be a finite number (got {value!r})")

    d, m, o, t = c.data, c.model, c.optim, c.train
    # scikit-learn's random_state takes [0, 2**32); splits use seed + 1, ensembles seed .. seed + K - 1,
    # sweeps hold seeds as int32: a round bound that leaves room for all of them
    need(0 <= c.seed <= MAX_SEED, "seed", f"must be in [0, {MAX_SEED:_}]")
    need(0 <= d.synthetic_seed <= MAX_SEED, "data.synthetic_seed", f"must be in [0, {MAX_SEED:_}]")
    need(0 < d.val_fraction < 1, "data.val_fraction", "must be in (0, 1)")
    need(0 < d.test_fraction < 1, "data.test_fraction", "must be in (0, 1)")
    need(d.val_fraction + d.test_fraction < 1, "data.test_fraction", "val_fraction + test_fraction must be < 1")
    need(bool(d.target_names), "data.target", "must name a column")
    need(
        d.task == "regression" or len(d.target_names) == 1,
        "data.target",
        "classification takes one target column (several only with data.task=regression)",
    )
    need(len(set(d.target_names)) == len(d.target_names), "data.target", "names a column twice")
    need(not set(d.drop) & set(d.target_names), "data.drop", "names the target column (a target is never an input)")
    need(bool(d.path), "data.path", "must be a CSV or Parquet path")
    need(d.clip >= 0, "data.clip", "must be >= 0 (0 = no clipping)")
    need(d.min_category_count >= 1, "data.min_category_count", "must be >= 1")
    need(d.onehot_max_cardinality >= 0, "data.onehot_max_cardinality", "must be >= 0")
    need(d.embedding_max_dim >= 1, "data.embedding_max_dim", "must be >= 1")
    need(d.n_samples >= 10, "data.n_samples", "must be >= 10")
    need(d.n_classes >= 2, "data.n_classes", "must be >= 2")
    need(d.n_features >= d.n_informative + d.n_redundant, "data.n_features", "must be >= n_informative + n_redundant")
    need(len(m.hidden_sizes) > 0 and all(h > 0 for h in m.hidden_sizes), "model.hidden_sizes", "needs positive sizes")
    # in float32 (how the step computes), so a rate like 0.999999999 that rounds to 1 is refused too
    need(0 <= m.dropout and float(np.float32(m.dropout)) < 1, "model.dropout", "must be in [0, 1) in float32")
    need(o.learning_rate > 0, "optim.learning_rate", "must be > 0")
    need(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    need(o.grad_clip_norm >= 0, "optim.grad_clip_norm", "must be >= 0")
    need(0 <= o.momentum < 1, "optim.momentum", "must be in [0, 1)")
    need(o.warmup_epochs >= 0, "optim.warmup_epochs", "must be >= 0")
    need(t.epochs >= 0, "train.epochs", "must be >= 1 (0 = auto)")
    need(t.batch_size >= 0, "train.batch_size", "must be >= 1 (0 = auto)")
    need(t.eval_batch_size >= 1, "train.eval_batch_size", "must be >= 1")
    need(t.patience >= -1, "train.patience", "must be >= 0 (0 = never stop early; -1 = auto)")
    need(t.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1")
    need(t.num_devices >= 0, "train.num_devices", "must be >= 0")
    need(c.dist.num_processes >= 0, "dist.num_processes", "must be >= 0")
    need(c.dist.timeout_seconds >= 1, "dist.timeout_seconds", "must be >= 1")
    need(t.members >= 0, "train.members", "must be >= 1 (0 = auto)")
    need(
        t.members <= 1 or not c.sweep.axes,
        "train.members",
        "a sweep's members are its grid: leave train.members at auto or 1 with sweep.<key>=<values>",
    )
    need(t.huber_delta > 0, "train.huber_delta", "must be > 0")
    need(t.min_delta >= 0, "train.min_delta", "must be >= 0 (the validation-loss improvement that counts)")
    need(0 <= t.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)")
    need(c.sweep.samples >= 0, "sweep.samples", "must be >= 0")
    need(not c.sweep.samples or bool(c.sweep.axes), "sweep.samples", "needs at least one sweep.<key>=<values>")
    if c.sweep.axes:
        sweep_axes(c)


# ----------------------------------------------------------------------------- auto budget


def auto_budget(n_train: int) -> dict[str, int]:
    """``{"batch_size", "epochs", "patience"}`` for a table with ``n_train`` training rows.

    The batch gives an epoch at least ~16 optimiser steps (a 400-row table trains on batches
    of 16, not on one batch per epoch) and is 256 from 4,096 training rows up; it is a multiple
    of 8 so it divides over 1, 2, 4 or 8 devices (and never more than the training rows).
    Small tables get more epochs and more patience (their epochs are cheap and noisy).

    Chosen on validation rows only (``python -m benchmarks.quality --study``, never the test
    rows): against a fixed batch 256 / 30 epochs / patience 5 (128,64 MLP), the mean
    validation loss over the 9 suite tables and a 5k synthetic sample fell to 0.706x with
    this rule (3 seeds; every table improved); see benchmarks/RESULTS.md "Quality".
    """
    batch = min(256, max(16, (n_train // 16) // 8 * 8), max(n_train, 1))
    if n_train < 2_000:
        epochs, patience = 200, 20
    elif n_train < 20_000:
        epochs, patience = 100, 10
    else:
        epochs, patience = 30, 5
    return {"batch_size": batch, "epochs": epochs, "patience": patience}


def auto_members(config: Config, n_train: int, n_processes: int = 1) -> int:
    """How many seeds a single run trains (``train.members``; auto: :data:`AUTO_MEMBERS` below
    :data:`AUTO_MEMBERS_BELOW_ROWS` training rows in one process, else 1).

    The members are seeds ``seed, seed+1, ...`` of the same configuration, trained as one
    program (``mlp_jax.sweep``: stacked states, a vmapped step, each member with its own early
    stopping) and served as one deep ensemble (mean of the members' probabilities or
    predictions; their standard deviation as the spread). Small tables are where a single
    network's seed matters most and where K networks cost little. Chosen on validation rows
    only (``python -m benchmarks.quality --holdout``: every split's training rows re-split for
    early stopping, scored on its validation rows): 8 seeds against 1 lowered the holdout log
    loss or RMSE on 8 of the 9 suite tables (mean rank 1.67 vs 2.67 among five contenders;
    diabetes RMSE 56.5 -> 55.0, digits log loss 0.124 -> 0.105, wine 0.068 -> 0.046; breast
    cancer 0.074 -> 0.075), as deep ensembles and TabM (arXiv 2410.24210) report. A sweep sets
    its members itself; several processes train one model (members need one process).
    With ``train.kfold_members`` (the default) the members are also cross-fitted: member i
    early-stops on fold i of the pooled training + validation rows and trains on the other
    folds (:func:`mlp_jax.sweep.kfold_rows`). Chosen on validation rows only, like the
    members: ``python -m benchmarks.quality --holdout --contenders "ours,ours k-fold"``
    (``benchmarks/RESULTS.md``, "Quality", round 10).
    """
    if config.train.members != AUTO:
        return config.train.members
    return AUTO_MEMBERS if n_train < AUTO_MEMBERS_BELOW_ROWS and n_processes == 1 else 1


def resolve_auto(config: Config, n_train: int) -> Config:
    """``config`` with its auto ``train.batch_size`` / ``epochs`` / ``patience`` set from ``n_train``.

    A pure function of (config, n_train), so a resume resolves to the same values and the
    checkpoint's config (which stores the resolved ones) still matches.
    """
    t = config.train
    rule = auto_budget(n_train)
    resolved = {
        "batch_size": rule["batch_size"] if t.batch_size == AUTO else t.batch_size,
        "epochs": rule["epochs"] if t.epochs == AUTO else t.epochs,
        "patience": rule["patience"] if t.patience == AUTO_PATIENCE else t.patience,
    }
    return dataclasses.replace(config, train=dataclasses.replace(t, **resolved))


# ----------------------------------------------------------------------------- sweeps

#: Keys a sweep cannot vary: members share one dataset, one process group, one run.
UNSWEEPABLE = (
    "data.",
    "dist.",
    "tracking.",
    "sweep.",
    "name",
    "workdir",
    "train.num_devices",
    "train.progress",
    "train.checkpoint_every",
    "train.compare_sklearn",
)


@dataclass(frozen=True)
class SweepAxis:
    """One swept key: a list of typed ``values``, or a ``low:high`` range (random search only)."""

    key: str
    values: tuple[Any, ...] = ()
    low: Any = None
    high: Any = None

    @property
    def is_range(self) -> bool:
        return self.low is not None


def parse_sweep_axis(specs: dict[str, tuple[Any, Any]], key: str, raw: str) -> SweepAxis:
    """Parses ``sweep.<key>=<raw>`` with ``key``'s own type; raises ConfigError naming ``sweep.<key>``."""
    where = f"sweep.{key}"
    if key not in specs:
        close = difflib.get_close_matches(key, specs.keys(), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join('sweep.' + k for k in close)}?" if close else "; see --help for every key"
        raise ConfigError(f"unknown sweep key {where!r}{hint}")
    if key == "train.members":
        raise ConfigError(f"{where}: cannot be swept (a sweep's members are its grid; sweep.seed=0,1,2 trains seeds)")
    if key.startswith(UNSWEEPABLE):
        raise ConfigError(f"{where}: cannot be swept (members share one dataset, device set and run)")
    tp, _ = specs[key]
    text = raw.strip()
    if not text:
        raise ConfigError(f"{where}: empty value list (give e.g. {where}=a,b,c)")
    if ":" in text and tp in (int, float):
        lo_s, _, hi_s = text.partition(":")
        if ":" in hi_s or "," in text or not lo_s.strip() or not hi_s.strip():
            raise ConfigError(f"{where}: malformed range {raw!r} (expected low:high)")
        lo, hi = parse_value(where, tp, lo_s.strip()), parse_value(where, tp, hi_s.strip())
        if not lo < hi:
            raise ConfigError(f"{where}: range {raw!r} needs low < high")
        return SweepAxis(key, low=lo, high=hi)
    sep = "/" if _is_tuple(tp) else ","
    items = [s.strip() for s in text.split(sep)]
    if not all(items):
        raise ConfigError(f"{where}: empty item in {raw!r} (items are separated by {sep!r})")
    values = tuple(parse_value(where, tp, s) for s in items)
    if len(set(values)) != len(values):
        raise ConfigError(f"{where}: duplicate values in {raw!r}")
    return SweepAxis(key, values=values)


def with_values(config: Config, values: dict[str, Any]) -> Config:
    """``config`` with flat keys replaced by already-typed values (not validated)."""
    groups: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in values.items():
        group, dot, leaf = key.partition(".")
        if dot:
            groups.setdefault(group, {})[leaf] = value
        else:
            top[key] = value
    for group, kv in groups.items():
        top[group] = dataclasses.replace(getattr(config, group), **kv)
    return dataclasses.replace(config, **top)


def sweep_axes(config: Config) -> tuple[SweepAxis, ...]:
    """The parsed, checked axes of ``config.sweep`` (every value valid for its key)."""
    specs = field_specs(config)
    base = dataclasses.replace(config, sweep=SweepConfig())
    out: list[SweepAxis] = []
    for entry in config.sweep.axes:
        key, sep, raw = entry.partition("=")
        if not sep:
            raise ConfigError(f"sweep.axes: {entry!r} is not of the form key=values")
        if any(a.key == key.strip() for a in out):
            raise ConfigError(f"sweep.axes: {key.strip()!r} is swept twice")
        axis = parse_sweep_axis(specs, key.strip(), raw)
        if axis.is_range and not config.sweep.samples:
            raise ConfigError(f"sweep.{axis.key}: a range ({raw}) needs sweep.samples=N; give a list for a grid")
        for value in (axis.low, axis.high) if axis.is_range else axis.values:
            try:
                validate(with_values(base, {axis.key: value}))
            except ConfigError as e:
                raise ConfigError(f"sweep.{axis.key}={raw}: {e}") from None
        out.append(axis)
    return tuple(out)


def help_text(config: Config) -> str:
    """One line per key: name, type, default."""
    specs = field_specs(config)
    width = max(map(len, specs))
    lines = ["Config keys (override with key=value):"]
    for key, (tp, value) in specs.items():
        if key in AUTO_VALUES and value == AUTO_VALUES[key]:
            shown = "auto"
        elif key == "workdir" and not value:
            shown = f"{config.resolved_workdir} (checkpoints/<experiment name>)"
        else:
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        lines.append(f"  {key:<{width}}  {type_name(tp):<28} default: {shown}")
    return "\n".join(lines)


def diff(a: Config, b: Config, ignore: tuple[str, ...] = ()) -> list[str]:
    """Flat keys whose values differ between two configs (``ignore`` = key prefixes)."""
    fa, fb = to_flat_dict(a), to_flat_dict(b)
    return [k for k in fa if fa[k] != fb.get(k) and not k.startswith(ignore)]


__all__ = [
    "AUTO",
    "AUTO_MEMBERS",
    "AUTO_PATIENCE",
    "SYNTHETIC_PATH",
    "Config",
    "ConfigError",
    "DataConfig",
    "DistConfig",
    "ModelConfig",
    "OptimConfig",
    "SweepAxis",
    "SweepConfig",
    "TrackingConfig",
    "TrainConfig",
    "apply_overrides",
    "auto_budget",
    "auto_members",
    "diff",
    "field_specs",
    "from_dict",
    "from_json",
    "help_text",
    "parse_sweep_axis",
    "resolve_auto",
    "sweep_axes",
    "to_flat_dict",
    "to_json",
    "validate",
    "with_values",
]
