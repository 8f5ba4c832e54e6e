"""The typed record of a finished run: what ``summary.json`` holds, passed runner -> tracking -> runner.

:class:`RunSummary` is built by the runner after the test evaluation; tracking reads it
(final metrics, the gate's validation metric) and answers with a :class:`TrackingRecord`
(MLflow run, registered version, champion decision). ``summary.json`` is
``{**RunSummary.to_dict(), **TrackingRecord.to_dict(), "timings": ...}``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: Metric names a summary may carry (test split, and the best validation epoch).
CLASSIFICATION_METRICS = ("test_accuracy", "test_loss", "test_roc_auc", "best_val_loss", "best_val_accuracy")
REGRESSION_METRICS = ("test_rmse", "test_mae", "test_r2", "test_loss", "best_val_loss", "best_val_rmse", "best_val_r2")


@dataclass(frozen=True)
class RunSummary:
    """One finished (or resumed and finished) training run.

    Attributes:
      metrics: test-split metrics (``test_*``; regression per target as ``test_rmse_<target>``...)
        and the best validation epoch's (``best_val_*``), in the task's units.
      dataset: ``{"source", "digest", "train", "val", "test"}``.
      roles: per input column ``{"name", "role", "dtype", "nullable"}``.
      checkpoint: the step folder to serve (it carries the best parameters).
      sklearn: the scikit-learn reference on the same split, when asked for.
    """

    experiment: str
    task: str
    workdir: str
    metrics: dict[str, float | None]
    best_epoch: int
    epochs_run: int
    train_budget: dict[str, int]  # batch_size / epochs / patience after "auto" (train.*=0) was resolved
    stopped_early: bool
    resumed_from_epoch: int | None
    train_samples_per_second: float
    compile_seconds: float
    n_features: int
    feature_names: list[str]
    roles: list[dict[str, Any]]
    classes: list[Any]
    targets: list[str]
    dropped_target_rows: int
    dataset: dict[str, Any]
    checkpoint: str | None
    n_devices: int = 1
    n_processes: int = 1
    sklearn: dict[str, Any] | None = None
    members: int = 1  # > 1: a deep ensemble of that many seeds (train.members)
    validation: str = "held-out"  # best_val_* scored on the validation rows, or "out-of-fold" (k-fold members)

    def metric(self, name: str) -> float | None:
        """A metric by name (None when this task or run has no such metric)."""
        return self.metrics.get(name)

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON layout of ``summary.json`` (metrics at the top level)."""
        d = dataclasses.asdict(self)
        metrics = d.pop("metrics")
        if d["sklearn"] is None:
            del d["sklearn"]
        return {**{k: d[k] for k in ("experiment", "task", "workdir")}, **metrics, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSummary:
        """Inverse of :meth:`to_dict` (a ``summary.json`` read back); unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)} - {"metrics"}
        known = {k: d[k] for k in names if k in d}
        metrics = {k: v for k, v in d.items() if k.startswith(("test_", "best_val_"))}
        defaults = {
            "task": "classification",
            "roles": [],
            "targets": [],
            "dropped_target_rows": 0,
            "classes": [],
            "train_budget": {},
        }
        return cls(metrics=metrics, **{**defaults, **known})


@dataclass(frozen=True)
class GateOutcome:
    """The champion gate's decision for a registered version."""

    metric: str
    challenger_val_loss: float
    champion_version: str | None
    champion_val_loss: float | None
    decision: str  # "promoted", "rejected" or "already registered" (a rerun with a model already there)
    reason: str


@dataclass(frozen=True)
class TrackingRecord:
    """Where a tracked run landed in MLflow."""

    mlflow_run_id: str
    mlflow_experiment_id: str
    mlflow_tracking_uri: str
    registered_model: str
    model_version: str | None = None
    model_uri: str | None = None
    champion: bool = False
    champion_gate: GateOutcome | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        if d["champion_gate"] is None:
            del d["champion_gate"]
        return {**d, **extra}
