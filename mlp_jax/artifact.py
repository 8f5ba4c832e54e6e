"""The model artifact: one typed definition of what a checkpoint step (and a registered model) holds.

A checkpoint step folder ``<workdir>/<epoch>/`` written by :mod:`mlp_jax.checkpoint` has three
Orbax items (format 2):

- ``best_params``: the best-so-far network parameters, an ``nnx.State`` restorable from a
  template built by :func:`mlp_jax.model.create` alone (no optimiser, no train state, no
  training-set size). This is what every predictor reads.
- ``state``: the latest train state ``{"step", "params", "opt_state"}``, read only to resume.
- ``meta``: :class:`ArtifactMeta` as JSON: the config, the task, the input columns and the
  preprocessing fitted on the training split, class labels in order (or the regression
  targets and their statistics), the network's shape, the dataset, the metric history and
  the early-stopping state. Plain JSON, never pickle.

An *ensemble* (``meta.members`` = K > 1, written by :func:`mlp_jax.sweep.save_ensemble`)
is the same format 2 with ``best_params`` stacked: every leaf has a leading member axis of
length K (one network shape, K parameter sets), and no ``state`` item (an ensemble is
served, never resumed). A single model has ``members`` = 1 and loads exactly as before;
metadata without the field (older format-2 artifacts) reads as 1.

Format 1 (mlp-jax before the artifact module: best parameters nested inside ``state``,
``meta`` an untyped dict with a ``standardizer``) still loads for serving: its best
parameters are read without a template and matched by name to the network of format 2.

Every reader (predictor, pyfunc, serve, batch, tracking) learns what an artifact holds from
this module and nowhere else. Orbax writes each step into a temporary folder and renames it
when complete, so a step folder that exists is a finished save.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from mlp_jax import model as model_lib
from mlp_jax.config import Config, from_dict

#: The format this code writes. Readers accept :data:`READABLE_FORMATS`.
FORMAT = 2
READABLE_FORMATS = (1, 2)
#: Orbax item names of a step folder (format 2).
ITEMS = ("state", "best_params", "meta")


class CheckpointError(RuntimeError):
    """A path is not a usable checkpoint/artifact, or a resume is refused; the message says why."""


@dataclass(frozen=True)
class NetworkSpec:
    """The network's shape: enough to rebuild it with :func:`mlp_jax.model.create`.

    ``in_features`` counts the columns of the preprocessed matrix: ``n_dense`` dense inputs
    followed by one integer-code column per categorical input (``cardinalities`` slots each,
    one-hot when its ``embedding_dims`` entry is 0, else a learned embedding of that width).
    """

    in_features: int
    n_outputs: int
    hidden_sizes: tuple[int, ...]
    activation: str = "relu"
    dropout: float = 0.0
    n_dense: int = -1  # -1: every column is dense
    cardinalities: tuple[int, ...] = ()
    embedding_dims: tuple[int, ...] = ()

    def create(self, seed: int = 0) -> model_lib.MLP:
        return model_lib.create(
            self.in_features,
            self.n_outputs,
            self.hidden_sizes,
            self.activation,
            self.dropout,
            seed,
            n_dense=self.n_dense,
            cardinalities=self.cardinalities,
            embedding_dims=self.embedding_dims,
        )


@dataclass(frozen=True)
class DataInfo:
    """Where the training rows came from (file digest) and the split sizes."""

    source: str
    digest: str
    train: int
    val: int
    test: int


@dataclass(frozen=True)
class ArtifactMeta:
    """Everything a predictor needs besides the parameters, and what a resume checks.

    Attributes:
      format: the artifact format version (:data:`FORMAT` when written by this code).
      config: the full experiment config as JSON (``mlp_jax.config.to_json``).
      task: ``"classification"`` or ``"regression"``.
      input_columns: the raw column names a prediction request sends, in order.
      preprocessing: the fitted input preprocessing as plain JSON (see ``mlp_jax.features``);
        format 1 stored a standardiser ``{"mean": [...], "scale": [...]}``, kept as
        ``{"kind": "standardize", "mean": ..., "scale": ...}``.
      classes: class labels in output order (classification; JSON values, exactly as in the data).
      targets: regression target column names, in output order.
      target_stats: regression ``{"mean": [...], "scale": [...]}`` per target (predictions are
        ``network output * scale + mean``, in the target's original units).
      network: the network's shape.
      data: the training data's source, digest and split sizes.
      history: one dict of metrics per epoch run.
      early_stopping: ``{"best_loss", "best_epoch", "bad_epochs"}`` at this step.
      n_devices: devices the run trained on.
      members: 1 for a single model; K > 1 for a deep ensemble whose ``best_params`` leaves
        have a leading member axis of length K (predictions: the mean of the members'
        probabilities, their standard deviation as the spread).
    """

    config: dict[str, Any]
    input_columns: tuple[str, ...]
    preprocessing: dict[str, Any]
    network: NetworkSpec
    data: DataInfo
    task: str = "classification"
    classes: tuple[Any, ...] = ()
    targets: tuple[str, ...] = ()
    target_stats: dict[str, Any] = field(default_factory=dict)
    history: tuple[dict[str, Any], ...] = ()
    early_stopping: dict[str, Any] = field(default_factory=dict)
    n_devices: int = 1
    members: int = 1
    format: int = FORMAT

    # ------------------------------------------------------------------ views

    @property
    def experiment(self) -> Config:
        """The config as the typed tree."""
        return from_dict(self.config)

    @property
    def name(self) -> str:
        return str(self.config.get("name") or "")

    @property
    def metrics(self) -> dict[str, Any]:
        """Metrics of the parameters this artifact serves: a deep ensemble's own row (the last,
        with ``ensemble_members``), else the best epoch's row (``early_stopping.best_epoch``; a
        checkpoint or a sweep member may hold later epochs too), else the last row; empty before
        the first epoch."""
        if not self.history:
            return {}
        last = self.history[-1]
        if "ensemble_members" in last:
            return dict(last)
        best = self.early_stopping.get("best_epoch")
        row = next((h for h in reversed(self.history) if h.get("epoch") == best), last)
        return dict(row)

    @property
    def n_outputs(self) -> int:
        return self.network.n_outputs

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_columns"] = list(self.input_columns)
        d["classes"] = list(self.classes)
        d["targets"] = list(self.targets)
        d["history"] = list(self.history)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArtifactMeta:
        """Reads format 2, or upgrades a format-1 dict in memory.

        Raises:
          CheckpointError: an unknown format, or a field missing or malformed.
        """
        fmt = d.get("format")
        if fmt not in READABLE_FORMATS:
            raise CheckpointError(
                f"model artifact format {fmt!r} is not readable by this mlp-jax (it reads formats "
                f"{', '.join(map(str, READABLE_FORMATS))}); load it with the mlp-jax version that wrote it, or retrain"
            )
        try:
            if fmt == 1:
                return _from_format_1(d)
            net = dict(d["network"])
            for k in ("hidden_sizes", "cardinalities", "embedding_dims"):
                net[k] = tuple(net.get(k, ()))
            return cls(
                config=d["config"],
                input_columns=tuple(d["input_columns"]),
                preprocessing=d["preprocessing"],
                network=NetworkSpec(**net),
                data=DataInfo(**d["data"]),
                task=d.get("task", "classification"),
                classes=tuple(d.get("classes", ())),
                targets=tuple(d.get("targets", ())),
                target_stats=d.get("target_stats", {}),
                history=tuple(d.get("history", ())),
                early_stopping=d.get("early_stopping", {}),
                n_devices=int(d.get("n_devices", 1)),
                members=_members(d.get("members", 1)),
                format=int(fmt),
            )._checked()
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(
                f"malformed model artifact metadata (format {fmt}): {type(e).__name__}: {e}"
            ) from None

    def _checked(self) -> ArtifactMeta:
        """``self`` if its parts agree with each other and with the network, else ValueError naming the field.

        A hand-edited or damaged metadata file otherwise served wrong answers (three class labels
        on a two-output network: 200 with two probabilities) or failed later with a traceback.
        """
        n = self.network.n_outputs
        if self.task == "classification":
            if len(self.classes) != n:
                raise ValueError(f"classes lists {len(self.classes)} labels but the network has {n} outputs")
            if len({json.dumps(c) for c in self.classes}) != len(self.classes):
                raise ValueError(f"classes repeats a label: {list(self.classes)}")
        elif self.task == "regression":
            if len(self.targets) != n:
                raise ValueError(f"targets lists {len(self.targets)} columns but the network has {n} outputs")
            for key in ("mean", "scale"):
                values = self.target_stats.get(key)
                if not isinstance(values, list) or len(values) != n:
                    raise ValueError(f"target_stats.{key} must list {n} numbers, got {values!r}")
                if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                    raise ValueError(f"target_stats.{key} holds a value that is not a finite number: {values}")
            if not all(v > 0 for v in self.target_stats["scale"]):
                raise ValueError(f"target_stats.scale must be positive, got {self.target_stats['scale']}")
        else:
            raise ValueError(f"task must be 'classification' or 'regression', got {self.task!r}")
        return self

    @classmethod
    def from_json(cls, text: str) -> ArtifactMeta:
        try:
            d = json.loads(text)
        except ValueError as e:
            raise CheckpointError(f"model artifact metadata is not JSON: {e}") from None
        if not isinstance(d, dict):
            raise CheckpointError("model artifact metadata is not a JSON object")
        return cls.from_dict(d)


def _members(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"members must be a positive integer, got {v!r}")
    return v


def _from_format_1(d: dict[str, Any]) -> ArtifactMeta:
    cfg = d["config"]
    m = cfg["model"]
    names = tuple(d["feature_names"])
    classes = tuple(d["classes"])
    return ArtifactMeta(
        config=cfg,
        input_columns=names,
        preprocessing={"kind": "standardize", **d["standardizer"]},
        network=NetworkSpec(len(names), len(classes), tuple(m["hidden_sizes"]), m["activation"], m["dropout"]),
        data=DataInfo(**{k: d["data"][k] for k in ("source", "digest", "train", "val", "test")}),
        classes=classes,
        history=tuple(d.get("history", ())),
        early_stopping=d.get("early_stopping", {}),
        n_devices=int(d.get("n_devices", 1)),
        format=1,
    )


# ----------------------------------------------------------------------------- locating


def step_folders(workdir: Path) -> list[int]:
    """Epochs of the complete step folders in ``workdir``, ascending."""
    return sorted(int(c.name) for c in workdir.iterdir() if c.is_dir() and c.name.isdigit() and (c / "meta").exists())


def resolve(path: str | Path) -> tuple[Path, int]:
    """``(workdir, step)`` for a workdir (its latest step) or a step folder ``workdir/<step>``.

    Raises:
      CheckpointError: missing path, or no complete checkpoint there.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"checkpoint path does not exist: {p.resolve()}")
    if not p.is_dir():
        raise CheckpointError(f"checkpoint path is a file, not a checkpoint folder: {p.resolve()}")
    if p.name.isdigit() and (p / "meta").exists():
        return p.parent.resolve(), int(p.name)
    steps = step_folders(p)
    if not steps:
        raise CheckpointError(f"not a checkpoint: no complete step folders in {p.resolve()}")
    return p.resolve(), steps[-1]


def manager(workdir: Path, read_only: bool = True, keep: int | None = 2) -> ocp.CheckpointManager:
    """An Orbax manager over ``workdir`` with this format's items (latest ``keep`` steps kept; None: all)."""
    from orbax.checkpoint import checkpoint_managers

    # read_only=True makes Orbax log warnings on every open; create=False is enough for readers.
    options = ocp.CheckpointManagerOptions(
        preservation_policy=checkpoint_managers.LatestN(keep),
        cleanup_tmp_directories=not read_only,
        create=not read_only,
    )
    return ocp.CheckpointManager(workdir, options=options, item_names=ITEMS)


def read_meta(mngr: ocp.CheckpointManager, step: int) -> ArtifactMeta:
    """The step's metadata (any readable format)."""
    raw = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if not isinstance(raw, dict):
        raise CheckpointError(f"step {step} in {mngr.directory}: metadata is not a JSON object")
    return ArtifactMeta.from_dict(raw)


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """ShapeDtypeStructs of ``tree`` placed on ``sharding`` (lets a checkpoint from other devices load here)."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


# ----------------------------------------------------------------------------- inference


@dataclass
class LoadedArtifact:
    """What a predictor needs: the network's graph, its best parameters and the metadata.

    For an ensemble (``meta.members`` > 1) ``params`` is stacked along a leading member axis.
    """

    graphdef: nnx.GraphDef
    params: nnx.State
    meta: ArtifactMeta
    step: int
    path: Path  # the step folder


def network_template(spec: NetworkSpec, members: int = 1) -> tuple[nnx.GraphDef, nnx.State]:
    """``(graphdef, abstract params)`` of ``spec``'s network, without allocating parameters.

    ``members`` > 1: every leaf gets a leading member axis of that length (an ensemble's stack).
    """
    graphdef, params = nnx.split(nnx.eval_shape(lambda: spec.create()))
    if members > 1:
        params = jax.tree.map(lambda a: jax.ShapeDtypeStruct((members, *a.shape), a.dtype), params)
    return graphdef, params


def init_params(spec: NetworkSpec, seeds: int | Sequence[int]) -> tuple[nnx.GraphDef, nnx.State]:
    """``(graphdef, parameters)`` of ``spec``'s network initialised from ``seeds``, by one compiled program.

    ``seeds``: an int (parameters as :meth:`NetworkSpec.create` makes them) or a sequence of
    ints in [0, 2**31) (one network per seed, every leaf stacked along a leading axis
    ``[len(seeds), ...]``, by a vmapped program; member k's values are bitwise those for
    ``seeds[k]`` alone). Against eager ``nnx.split(spec.create(seed))``: the dense layers are
    bitwise equal, embedding tables within 1 ulp (XLA fuses the normal draw with its scale;
    tested). Why not eagerly: eager initialisation compiles
    every initialiser once per layer shape (2.7 s for the baseline's three layers on the 2-core
    CPU box) and then dispatches ~30 ms of small ops per network; one program compiles once
    whatever the member count, and is kept for the process (per network shape and member
    count). On CPU it is compiled at XLA backend optimisation level 1
    (0.9 s instead of 2.3 s; it runs once, on a few KB, and gives the same bits as the default).
    """
    stacked = not isinstance(seeds, int | np.integer)
    arg = np.asarray(seeds if stacked else int(seeds), np.int32)
    graphdef, program = _init_program(spec, len(arg) if stacked else None, jax.default_backend())
    return graphdef, program(arg)


@functools.lru_cache(maxsize=16)
def _init_program(spec: NetworkSpec, members: int | None, backend: str) -> tuple[nnx.GraphDef, Callable]:
    """:func:`init_params`' compiled program for ``members`` seeds (None: one, unstacked), kept per process."""
    graphdef, _ = network_template(spec)

    def one(seed: jax.Array) -> nnx.State:
        return nnx.state(spec.create(jax.random.key(seed)))

    arg = jax.ShapeDtypeStruct(() if members is None else (members,), np.int32)
    fn = jax.jit(one if members is None else jax.vmap(one))
    options = {"xla_backend_optimization_level": 1} if backend == "cpu" else None
    return graphdef, fn.lower(arg).compile(options)


def load(path: str | Path, device: jax.Device | None = None) -> LoadedArtifact:
    """Best parameters + metadata from a workdir or step folder, on ``device`` (default: first local).

    Works whatever devices wrote the checkpoint (8 CPU devices, a GPU): the target carries
    this process's placement. Needs only the network's code: no optimiser, no train state.
    Pointed at a workdir whose newest step is damaged (a truncated or missing file), it
    loads the newest intact step instead and says so on stderr; pointed at a step folder,
    a damaged step is an error naming it.

    Raises:
      CheckpointError: not a checkpoint, an unreadable format, or damaged files (one line
        naming the step and the damage).
    """
    p = Path(path).expanduser()
    workdir, step = resolve(p)
    if p.resolve() != workdir:  # a step folder: exactly that step
        return _load_step(workdir, step, device)
    steps = step_folders(workdir)
    errors = []
    for s in reversed(steps):
        try:
            loaded = _load_step(workdir, s, device)
        except CheckpointError as e:
            if "format" in str(e) and "readable" in str(e):
                raise
            errors.append(str(e))
            continue
        if errors:
            print(f"warning: {errors[0]}; using the newest intact step {s} instead", file=sys.stderr, flush=True)
        return loaded
    raise CheckpointError(f"no intact checkpoint step in {workdir}: {errors[0]}")


def _load_step(workdir: Path, step: int, device: jax.Device | None) -> LoadedArtifact:
    _silence_closed_loop_noise()  # a damaged file's late callbacks may fire before the restore raises
    mngr = manager(workdir, read_only=True)
    try:
        meta = read_meta(mngr, step)
        graphdef, abstract = network_template(meta.network, meta.members)
        sharding = jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])
        if meta.format == 1:
            params = _best_params_format_1(mngr, step, abstract, sharding)
        else:
            params = mngr.restore(
                step, args=ocp.args.Composite(best_params=ocp.args.StandardRestore(abstract_like(abstract, sharding)))
            )["best_params"]
            jax.block_until_ready(params)
    except CheckpointError:
        raise
    except Exception as e:  # Orbax / tensorstore raise many types for missing or damaged files
        _silence_closed_loop_noise()
        raise CheckpointError(
            f"checkpoint step {workdir / str(step)} is damaged or unreadable: {type(e).__name__}: {_first_line(e)}"
        ) from None
    finally:
        mngr.close()
    return LoadedArtifact(graphdef, params, meta, step, workdir / str(step))


def _first_line(e: BaseException) -> str:
    line = (str(e).strip().splitlines() or [""])[0]
    return line.split(" [tensorstore_spec")[0][:400]  # tensorstore appends its whole JSON spec


_previous_unraisable_hook = sys.unraisablehook


def _quiet_closed_loop(unraisable: Any) -> None:
    """Drops tensorstore's late callbacks into Orbax's closed event loop; passes everything else on.

    When a restore fails on a damaged file, Orbax's ``asyncio.run`` ends while tensorstore
    still holds reads of the other arrays; each then calls back into the closed loop and
    Python prints ``RuntimeError: Event loop is closed`` as an unraisable exception (about
    ten tracebacks before the real, one-line error; issue #16). They carry no information.
    """
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return
    _previous_unraisable_hook(unraisable)


def _silence_closed_loop_noise() -> None:
    if sys.unraisablehook is not _quiet_closed_loop:
        global _previous_unraisable_hook
        _previous_unraisable_hook = sys.unraisablehook
        sys.unraisablehook = _quiet_closed_loop


def _best_params_format_1(
    mngr: ocp.CheckpointManager, step: int, abstract: nnx.State, sharding: jax.sharding.Sharding
) -> nnx.State:
    """Format 1 kept the best parameters inside ``state``; read that item without a template.

    Leaves are matched to the format-2 network by their key path, so no optimiser template
    is needed to read an old checkpoint.
    """
    tree = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]["best_params"]
    found = {_path_key(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    out = []
    for p, a in leaves:
        k = _path_key(p)
        if k not in found or found[k].shape != a.shape:
            raise CheckpointError(f"format-1 checkpoint step {step}: parameter {k} missing or of another shape")
        out.append(jax.device_put(found[k].astype(a.dtype), sharding))
    return jax.tree_util.tree_unflatten(treedef, out)


def _path_key(path: tuple[Any, ...]) -> str:
    parts = []
    for k in path:
        name = getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))
        if str(name) == "value":  # nnx.Variable's leaf
            continue
        parts.append(str(name))
    return "/".join(parts)


def read_meta_at(path: str | Path) -> ArtifactMeta:
    """The metadata of a workdir's latest step, or of a step folder."""
    workdir, step = resolve(path)
    mngr = manager(workdir, read_only=True)
    try:
        return read_meta(mngr, step)
    finally:
        mngr.close()
