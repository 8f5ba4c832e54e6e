"""One object that turns a checkpoint (or an MLflow model URI) into predictions.

Every prediction path (HTTP service, batch CLI, MLflow pyfunc) goes through
:class:`Predictor`, so the same model gives the same numbers everywhere. The forward
pass (standardise -> MLP -> softmax) is compiled ahead of time for a fixed set of
batch-size buckets; a request is padded up to the next bucket and sliced back, so no
request shape ever triggers a compilation. Batches larger than the biggest bucket are
cut into bucket-sized chunks.

Inside every bucket the rows go through the network in fixed tiles of :data:`ROW_TILE`
rows (``lax.map`` over tiles). XLA picks its matmul kernel and blocking from the batch
size, so a 1-row and a 4096-row matmul round differently in the last bit; with one tile
shape for every bucket, a row's probabilities are bitwise the same whatever else was in
its request, so the service, the batch command and the pyfunc agree exactly.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mlp_jax import artifact, model_uri
from mlp_jax.artifact import LoadedArtifact
from mlp_jax.model import probabilities_fn

#: Rows per matmul inside every compiled program (see the module docstring).
ROW_TILE = 32
#: Batch sizes compiled at construction (multiples of ROW_TILE; others are rounded up to one).
DEFAULT_BUCKETS = (32, 256, 1024, 4096)
#: Compilation events JAX reports through ``jax.monitoring`` (used to prove none happen per request).
COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration",)


class PredictorError(ValueError):
    """Input rows cannot be scored; the message says expected vs got."""


class Predictor:
    """``predict_proba(rows)`` for raw (unstandardised) feature rows of one checkpoint."""

    def __init__(
        self,
        ckpt: LoadedArtifact,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        source: str | None = None,
        name: str | None = None,
        version: str | None = None,
    ):
        meta = ckpt.meta
        self.checkpoint = ckpt
        self.source = source or str(ckpt.path)
        #: Registered model name and version for registry URIs; experiment name and ``step-N`` otherwise.
        self.meta = meta
        self.name: str = name or meta.name or ckpt.path.parent.name
        self.version: str = version or f"step-{ckpt.step}"
        self.feature_names: tuple[str, ...] = tuple(meta.input_columns)
        self.classes: tuple[Any, ...] = tuple(meta.classes)
        self.n_features = len(self.feature_names)
        self.metrics: dict[str, Any] = meta.metrics
        if not buckets or min(int(b) for b in buckets) < 1:
            raise ValueError(f"buckets must be positive batch sizes, got {buckets}")
        self.buckets = tuple(sorted({-(-int(b) // ROW_TILE) * ROW_TILE for b in buckets}))
        device = jax.local_devices()[0]
        mean = np.asarray(meta.preprocessing["mean"], np.float32)
        scale = np.asarray(meta.preprocessing["scale"], np.float32)
        mean, scale = jax.device_put((mean, scale), device)
        proba = probabilities_fn(ckpt.graphdef)

        # The arguments travel as a flat list of arrays: flattening the NNX state pytree on
        # every call costs ~10 us, a third of a one-row request's model time.
        leaves, treedef = jax.tree.flatten((ckpt.params, mean, scale))

        def forward(leaves: list[jax.Array], x: jax.Array) -> jax.Array:
            params, mean, scale = jax.tree.unflatten(treedef, leaves)

            def tile(xt: jax.Array) -> jax.Array:
                return proba(params, (xt - mean[None, :]) / scale[None, :])  # explicit ranks (strict promotion)

            n, width = x.shape
            if n == ROW_TILE:
                return tile(x)
            return jax.lax.map(tile, x.reshape(n // ROW_TILE, ROW_TILE, width)).reshape(n, -1)

        self._args = (leaves,)
        jitted = jax.jit(forward)
        self._compiled = {
            b: jitted.lower(*self._args, jax.ShapeDtypeStruct((b, self.n_features), jnp.float32)).compile()
            for b in self.buckets
        }

    # -------------------------------------------------------------------- construction

    @classmethod
    def load(cls, model: str | Path, buckets: Sequence[int] = DEFAULT_BUCKETS) -> Predictor:
        """From a workdir, a step folder, or an MLflow URI (``models:/NAME@alias``, ``runs:/ID/model``).

        Raises:
          mlp_jax.artifact.CheckpointError: the path is missing or not a checkpoint.
        """
        where = model_uri.resolve(model)  # CheckpointError names a bad store, name, alias or version
        return cls(artifact.load(where.path), buckets, source=where.source, name=where.name, version=where.version)

    # -------------------------------------------------------------------- prediction

    @property
    def step(self) -> int:
        return self.checkpoint.step

    def bucket_for(self, n: int) -> int:
        i = bisect.bisect_left(self.buckets, n)
        return self.buckets[min(i, len(self.buckets) - 1)]

    def check_rows(self, rows: Any) -> np.ndarray:
        """A float32 ``[n, n_features]`` array, or PredictorError naming the problem (expected vs got)."""
        if isinstance(rows, np.ndarray) and rows.dtype == np.float32:
            x = rows
        else:
            if isinstance(rows, np.ndarray) and not (
                np.issubdtype(rows.dtype, np.number) and not np.issubdtype(rows.dtype, np.complexfloating)
            ):
                raise PredictorError(f"rows must be real numbers, got an array of dtype {rows.dtype}")
            try:
                with np.errstate(over="ignore"):  # float64 values past float32's range become inf, reported below
                    x = np.asarray(rows, dtype=np.float32)
            except (TypeError, ValueError, OverflowError) as e:
                raise PredictorError(self._explain_bad_rows(rows, e)) from None
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise PredictorError(f"expected a 2-D batch of rows, got an array of rank {x.ndim}")
        if x.shape[0] == 0:
            raise PredictorError("expected at least one row, got 0")
        if x.shape[1] != self.n_features:
            raise PredictorError(f"expected {self.n_features} features per row, got {x.shape[1]}")
        if not np.isfinite(x).all():
            row, col = np.argwhere(~np.isfinite(x))[0]
            raise PredictorError(
                f"non-finite value (NaN, inf, or beyond float32's range) at row {row}, "
                f"feature {self.feature_names[col]!r}: expected a finite number"
            )
        return x

    def _explain_bad_rows(self, rows: Any, error: Exception) -> str:
        """Names the first ragged or non-numeric row of a nested sequence."""
        if (
            isinstance(rows, Sequence)
            and rows
            and all(isinstance(r, Sequence) and not isinstance(r, str) for r in rows)
        ):
            for i, r in enumerate(rows):
                if len(r) != self.n_features:
                    return f"expected {self.n_features} features per row, got {len(r)} in row {i}"
            for i, r in enumerate(rows):
                for j, v in enumerate(r):
                    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
                        return f"row {i}, feature {self.feature_names[j]!r}: expected a number, got {v!r}"
        return f"rows must be numbers: {error}"

    def predict_proba(self, rows: Any) -> np.ndarray:
        """Probabilities ``[n, n_classes]`` (float32) for raw feature rows."""
        return self.proba_checked(self.check_rows(rows))

    def proba_checked(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for rows already through :meth:`check_rows` (what the micro-batcher runs).

        Each row's answer is independent of the others in ``x`` (see the module docstring),
        so callers may stack rows of several requests and slice the answer back.
        """
        top = self.buckets[-1]
        if len(x) <= top:
            return self._run(x)
        return np.concatenate([self._run(x[i : i + top]) for i in range(0, len(x), top)])

    def _run(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        b = self.bucket_for(n)
        if n < b:
            padded = np.zeros((b, x.shape[1]), np.float32)
            padded[:n] = x
            x = padded
        # Only AOT-compiled executables are called here: a shape outside the buckets would
        # raise instead of compiling.
        return np.asarray(self._compiled[b](*self._args, x))[:n]

    def warmup(self) -> None:
        """Runs every bucket once, so the first request does not pay for first-call allocations."""
        for b in self.buckets:
            self._compiled[b](*self._args, np.zeros((b, self.n_features), np.float32)).block_until_ready()

    def labels(self, probs: np.ndarray) -> list[Any]:
        """Original class labels of the most probable class per row."""
        idx = probs.argmax(axis=1)
        return [self.classes[i] for i in idx]

    def predict(self, rows: Any) -> tuple[list[Any], np.ndarray]:
        """``(labels, probabilities)``."""
        probs = self.predict_proba(rows)
        return self.labels(probs), probs

    def probability_columns(self) -> list[str]:
        return [f"proba_{c}" for c in self.classes]

    def predict_frame(self, frame: Any) -> Any:
        """A DataFrame with ``prediction`` and one ``proba_<class>`` column per class.

        Columns are selected by feature name (order-independent); missing ones raise
        PredictorError naming them.
        """
        import pandas as pd

        missing = [c for c in self.feature_names if c not in frame.columns]
        if missing:
            raise PredictorError(f"missing feature column(s): {', '.join(missing)}")
        probs = self.predict_proba(frame[list(self.feature_names)].to_numpy(dtype=np.float32))
        out = pd.DataFrame(probs, columns=self.probability_columns(), index=frame.index)
        out.insert(0, "prediction", self.labels(probs))
        return out

    def describe(self) -> dict[str, Any]:
        """Name, version, checkpoint, feature names, classes, metrics: what ``/metadata`` shows."""
        meta = self.meta
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "checkpoint": str(self.checkpoint.path),
            "step": self.step,
            "experiment": meta.name,
            "feature_names": list(self.feature_names),
            "classes": list(self.classes),
            "n_features": self.n_features,
            "metrics": self.metrics,
            "dataset": dataclasses.asdict(meta.data),
            "buckets": list(self.buckets),
        }
