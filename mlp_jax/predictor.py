"""One object that turns a checkpoint (or an MLflow model URI) into predictions.

Every prediction path (HTTP service, batch CLI, MLflow pyfunc) goes through
:class:`Predictor`, so the same model gives the same numbers everywhere. The forward
pass (standardise -> MLP -> softmax) is compiled ahead of time for a fixed set of
batch-size buckets; a request is padded up to the next bucket and sliced back, so no
request shape ever triggers a compilation. Batches larger than the biggest bucket are
cut into bucket-sized chunks.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mlp_jax.checkpoint import InferenceCheckpoint, restore_for_inference
from mlp_jax.data import Standardizer
from mlp_jax.train import predict_proba_fn

DEFAULT_BUCKETS = (1, 8, 32, 128, 512, 2048)
MODEL_URI_SCHEMES = ("models:/", "runs:/")


class PredictorError(ValueError):
    """Input rows cannot be scored; the message says expected vs got."""


class Predictor:
    """``predict_proba(rows)`` for raw (unstandardised) feature rows of one checkpoint."""

    def __init__(self, ckpt: InferenceCheckpoint, buckets: Sequence[int] = DEFAULT_BUCKETS, source: str | None = None):
        meta = ckpt.meta
        self.checkpoint = ckpt
        self.source = source or str(ckpt.path)
        self.feature_names: tuple[str, ...] = tuple(meta["feature_names"])
        self.classes: tuple[Any, ...] = tuple(meta["classes"])
        self.n_features = len(self.feature_names)
        self.metrics: dict[str, Any] = meta.get("metrics", {})
        self.buckets = tuple(sorted(set(int(b) for b in buckets)))
        if not self.buckets or self.buckets[0] < 1:
            raise ValueError(f"buckets must be positive batch sizes, got {buckets}")
        scaler = Standardizer.from_dict(meta["standardizer"])
        device = jax.local_devices()[0]
        mean, scale = jax.device_put((scaler.mean, scaler.scale), device)
        proba = predict_proba_fn(ckpt.graphdef)

        def forward(params: Any, mean: jax.Array, scale: jax.Array, x: jax.Array) -> jax.Array:
            return proba(params, (x - mean) / scale)

        self._args = (ckpt.params, mean, scale)
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
          mlp_jax.checkpoint.CheckpointError: the path is missing or not a checkpoint.
        """
        text = str(model)
        if text.startswith(MODEL_URI_SCHEMES):
            from mlp_jax.pyfunc import download_checkpoint  # mlflow only for registry URIs

            return cls(restore_for_inference(download_checkpoint(text)), buckets, source=text)
        return cls(restore_for_inference(text), buckets, source=text)

    # -------------------------------------------------------------------- prediction

    @property
    def step(self) -> int:
        return self.checkpoint.step

    def bucket_for(self, n: int) -> int:
        i = bisect.bisect_left(self.buckets, n)
        return self.buckets[min(i, len(self.buckets) - 1)]

    def check_rows(self, rows: Any) -> np.ndarray:
        """A float32 ``[n, n_features]`` array, or PredictorError naming the problem."""
        try:
            x = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise PredictorError(f"rows must be numbers: {e}") from None
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise PredictorError(f"expected a 2-D batch of rows, got an array of rank {x.ndim}")
        if x.shape[0] == 0:
            raise PredictorError("expected at least one row, got 0")
        if x.shape[1] != self.n_features:
            raise PredictorError(f"expected {self.n_features} features per row, got {x.shape[1]}")
        if not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x))[0]
            raise PredictorError(f"non-finite value at row {bad[0]}, feature {self.feature_names[bad[1]]!r}")
        return x

    def predict_proba(self, rows: Any) -> np.ndarray:
        """Probabilities ``[n, n_classes]`` (float32) for raw feature rows."""
        x = self.check_rows(rows)
        top = self.buckets[-1]
        parts = [self._run(x[i : i + top]) for i in range(0, len(x), top)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _run(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        b = self.bucket_for(n)
        if n < b:
            x = np.concatenate([x, np.zeros((b - n, x.shape[1]), np.float32)])
        return np.asarray(self._compiled[b](*self._args, x))[:n]

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
        meta = self.checkpoint.meta
        return {
            "source": self.source,
            "checkpoint": str(self.checkpoint.path),
            "step": self.step,
            "experiment": meta["config"].get("name"),
            "feature_names": list(self.feature_names),
            "classes": list(self.classes),
            "n_features": self.n_features,
            "metrics": self.metrics,
            "dataset": meta.get("data", {}),
            "buckets": list(self.buckets),
        }
