"""Orbax checkpoints: save / resume / restore-for-inference, and the metadata format.

A run's workdir holds Orbax step folders named by epoch. Each step has two items:

- ``state``: ``{"train": {"step", "params", "opt_state"}, "best_params": params}``:
  the latest train state *and* the best-so-far parameters. Carrying the best parameters
  in every checkpoint means one restore resumes exactly and one restore serves the best
  model, whatever the save interval; no best-N bookkeeping can delete the latest step.
- ``meta``: JSON with the full config, feature names, class labels in order, the
  standardiser, the dataset digest, the metric history, early-stopping state and the
  metrics at that step. Everything a predictor needs; no pickle.

Orbax writes each step into a temporary folder and renames it when complete, so a run
killed mid-save leaves the previous step as the latest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint import checkpoint_managers

from mlp_jax.config import Config, diff, from_dict

#: Keys that may change between a run and its resume (they do not change the result).
RESUMABLE_KEYS = (
    "train.epochs",
    "train.progress",
    "train.compare_sklearn",
    "train.num_devices",  # a checkpoint written on N devices resumes on M
    "dist.",
    "tracking.",
    "workdir",
)


class CheckpointError(RuntimeError):
    """A path is not a usable checkpoint, or a resume is refused; the message says why."""


@dataclass
class Restored:
    step: int
    state: Any
    best_params: nnx.State
    meta: dict[str, Any]


class Checkpointer:
    """An Orbax ``CheckpointManager`` over one workdir (latest ``keep`` steps kept)."""

    def __init__(self, workdir: str | Path, keep: int = 2, read_only: bool = False):
        self.directory = Path(workdir).resolve()
        # read_only=True makes Orbax log warnings on every open; create=False is enough for readers.
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.LatestN(keep),
            cleanup_tmp_directories=not read_only,
            create=not read_only,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def step_path(self, step: int) -> Path:
        return self.directory / str(step)

    def save(self, step: int, state: Any, best_params: nnx.State, meta: dict[str, Any]) -> None:
        """Asynchronous save of the train state, best parameters and JSON metadata."""
        tree = {"train": state.arrays(), "best_params": best_params}
        args = ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta))
        self.manager.save(step, args=args, force=True)

    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint steps in {self.directory}")
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore_train(
        self, template: Any, config: Config, sharding: jax.sharding.Sharding, data_digest: str | None = None
    ) -> Restored:
        """Restores the latest step into the structure of ``template`` (a TrainState).

        Raises:
          CheckpointError: when the stored config differs from ``config`` in anything
            but :data:`RESUMABLE_KEYS`, or the data file's digest differs.
        """
        step = self.latest_step()
        meta = self.read_meta(step)
        stored_digest = meta.get("data", {}).get("digest")
        if data_digest is not None and stored_digest != data_digest:
            raise CheckpointError(
                f"refusing to resume {self.directory} (epoch {step}): the data changed "
                f"(digest {stored_digest} in the checkpoint, {data_digest} now: {meta['data'].get('source')})"
            )
        stored = from_dict(meta["config"])
        differing = diff(stored, config, ignore=RESUMABLE_KEYS)
        if differing:
            from mlp_jax.config import to_flat_dict

            a, b = to_flat_dict(stored), to_flat_dict(config)
            detail = "; ".join(f"{k}: checkpoint {a[k]!r} vs now {b[k]!r}" for k in differing)
            raise CheckpointError(
                f"refusing to resume {self.directory} (epoch {step}): config differs in {', '.join(differing)} "
                f"({detail}). Use another workdir, or the checkpoint's settings."
            )
        target = {"train": template.arrays(), "best_params": template.params}
        abstract = abstract_like(target, sharding)
        tree = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
        return Restored(step, template.with_arrays(tree["train"]), tree["best_params"], meta)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """ShapeDtypeStructs of ``tree`` placed on ``sharding`` (lets a checkpoint from other devices load here)."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


# ----------------------------------------------------------------------------- inference


@dataclass
class InferenceCheckpoint:
    """What a predictor needs: graph, best parameters and metadata (no optimiser)."""

    graphdef: nnx.GraphDef
    params: nnx.State
    meta: dict[str, Any]
    step: int
    path: Path

    @property
    def config(self) -> Config:
        return from_dict(self.meta["config"])


def resolve(path: str | Path) -> tuple[Path, int]:
    """``(workdir, step)`` for a workdir (latest step) or a step folder ``workdir/<step>``.

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
    steps = sorted(int(c.name) for c in p.iterdir() if c.is_dir() and c.name.isdigit() and (c / "meta").exists())
    if not steps:
        raise CheckpointError(f"not a checkpoint: no complete step folders in {p.resolve()}")
    return p.resolve(), steps[-1]


def restore_for_inference(path: str | Path, device: jax.Device | None = None) -> InferenceCheckpoint:
    """Best parameters + metadata from a workdir or step folder, on ``device`` (default: first local).

    Works whatever devices wrote the checkpoint (8 CPU devices, a GPU): the target carries
    this process's placement.
    """
    from mlp_jax import train  # train imports checkpoint lazily; this import is one-way at runtime

    workdir, step = resolve(path)
    store = Checkpointer(workdir, read_only=True)
    try:
        meta = store.read_meta(step)
        config = from_dict(meta["config"])
        template = jax.eval_shape(
            lambda: train.create_state(config, len(meta["feature_names"]), len(meta["classes"]), meta["data"]["train"])
        )
        sharding = jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])
        target = {"train": template.arrays(), "best_params": template.params}
        tree = store.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_like(target, sharding)))
        )
    except CheckpointError:
        raise
    except (KeyError, ValueError, FileNotFoundError) as e:
        raise CheckpointError(f"cannot restore checkpoint {workdir}/{step}: {e}") from e
    finally:
        store.manager.close()
    return InferenceCheckpoint(template.graphdef, tree["state"]["best_params"], meta, step, workdir / str(step))
