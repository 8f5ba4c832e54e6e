"""Training checkpoints: save every few epochs and resume exactly (the format is :mod:`mlp_jax.artifact`).

Each step folder holds the latest train state *and* the best-so-far parameters (their own
item) plus :class:`mlp_jax.artifact.ArtifactMeta`. Carrying the best parameters in every
checkpoint means one restore resumes exactly and one restore serves the best model,
whatever the save interval; no best-N bookkeeping can delete the latest step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from mlp_jax import artifact
from mlp_jax.artifact import ArtifactMeta, CheckpointError, abstract_like
from mlp_jax.config import Config, diff, from_dict, to_flat_dict

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

__all__ = ["RESUMABLE_KEYS", "CheckpointError", "Checkpointer", "Restored"]


@dataclass
class Restored:
    step: int
    arrays: dict[str, Any]  # {"step", "params", "opt_state"} of the train state
    best_params: nnx.State
    meta: ArtifactMeta


class _Damaged(CheckpointError):
    """A step's files are missing or truncated (an older step may still be intact)."""


class Checkpointer:
    """An Orbax ``CheckpointManager`` over one workdir (latest ``keep`` steps kept)."""

    def __init__(self, workdir: str | Path, keep: int = 2):
        self.directory = Path(workdir).resolve()
        self.manager = artifact.manager(self.directory, read_only=False, keep=keep)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def step_path(self, step: int) -> Path:
        return self.directory / str(step)

    def save(self, step: int, arrays: dict[str, Any], best_params: nnx.State, meta: ArtifactMeta) -> None:
        """Asynchronous save of the train state's arrays, the best parameters and the metadata."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(arrays),
            best_params=ocp.args.StandardSave(best_params),
            meta=ocp.args.JsonSave(meta.to_dict()),
        )
        self.manager.save(step, args=args, force=True)

    def restore(
        self,
        arrays: dict[str, Any],
        best_params: nnx.State,
        config: Config,
        sharding: jax.sharding.Sharding,
        data_digest: str | None = None,
    ) -> Restored:
        """Restores the latest step into the structure of ``arrays`` / ``best_params`` (templates).

        Raises:
          CheckpointError: when the stored config differs from ``config`` in anything
            but :data:`RESUMABLE_KEYS`, the data file's digest differs, or the step was
            written in another artifact format.
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no checkpoint steps in {self.directory}")
        damage = []
        for step in steps:  # the newest intact step: a damaged newest one (truncated file) is skipped, and said
            try:
                restored = self._restore_step(step, arrays, best_params, config, sharding, data_digest)
            except _Damaged as e:
                damage.append(str(e))
                continue
            if damage:
                moved = self._set_aside([s for s in steps if s > step])
                print(
                    f"warning: {damage[0]}; resuming from the newest intact step {step} "
                    f"(damaged step(s) moved to {', '.join(moved)})",
                    flush=True,
                )
            return restored
        raise CheckpointError(f"no intact checkpoint step to resume in {self.directory}: {damage[0]}")

    def _set_aside(self, steps: list[int]) -> list[str]:
        """Renames damaged step folders to ``damaged-<step>[-n]`` (kept for inspection, out of Orbax's way)."""
        moved = []
        for step in steps:
            src = self.step_path(step)
            dst = self.directory / f"damaged-{step}"
            n = 1
            while dst.exists():
                dst, n = self.directory / f"damaged-{step}-{n}", n + 1
            src.rename(dst)
            moved.append(str(dst))
        self.manager.reload()
        return moved

    def _restore_step(
        self,
        step: int,
        arrays: dict[str, Any],
        best_params: nnx.State,
        config: Config,
        sharding: jax.sharding.Sharding,
        data_digest: str | None,
    ) -> Restored:
        try:
            meta = artifact.read_meta(self.manager, step)
        except CheckpointError:
            raise
        except Exception as e:
            raise _Damaged(f"checkpoint step {self.step_path(step)} has unreadable metadata: {type(e).__name__}") from e
        where = f"{self.directory} (epoch {step})"
        if meta.format != artifact.FORMAT:
            raise CheckpointError(
                f"refusing to resume {where}: it is artifact format {meta.format}, this mlp-jax writes format "
                f"{artifact.FORMAT}. It can still be served; to train on, use a new workdir"
            )
        if data_digest is not None and meta.data.digest != data_digest:
            raise CheckpointError(
                f"refusing to resume {where}: the data changed (the checkpoint was trained on {meta.data.source}, "
                f"digest {meta.data.digest}; the data given now has digest {data_digest}). A workdir holds one run: "
                "to train on other data, use another workdir (e.g. workdir=checkpoints/my-table)"
            )
        stored = from_dict(meta.config)
        differing = diff(stored, config, ignore=RESUMABLE_KEYS)
        if differing:
            a, b = to_flat_dict(stored), to_flat_dict(config)
            detail = "; ".join(f"{k}: checkpoint {a[k]!r} vs now {b[k]!r}" for k in differing)
            raise CheckpointError(
                f"refusing to resume {where}: config differs in {', '.join(differing)} "
                f"({detail}). Use another workdir, or the checkpoint's settings."
            )
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_like(arrays, sharding)),
            best_params=ocp.args.StandardRestore(abstract_like(best_params, sharding)),
        )
        artifact._silence_closed_loop_noise()  # late callbacks of a damaged read may fire before it raises
        try:
            tree = self.manager.restore(step, args=args)
            jax.block_until_ready((tree["state"], tree["best_params"]))
        except Exception as e:  # tensorstore raises for truncated or missing chunk files
            artifact._silence_closed_loop_noise()
            first = artifact._first_line(e)
            raise _Damaged(f"checkpoint step {self.step_path(step)} is damaged: {type(e).__name__}: {first}") from e
        return Restored(step, tree["state"], tree["best_params"], meta)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
