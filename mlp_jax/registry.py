"""The MLflow model registry: a new version per tracked run, and the champion gate.

The alias ``champion`` moves to a new version only when its best validation loss is
strictly lower than the current champion's *on the same validation set*: the same file
(dataset digest), target(s) and task, and the same split (seed and fractions), recorded as
the version's ``validation_set`` tag (:func:`validation_set`). A model validated on other
rows or for another target is not comparable and never replaces the champion automatically.
(A champion registered before that tag existed is compared on the dataset digest alone.)
The decision and its numbers are tags on the run and on the version.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlp_jax.summary import GateOutcome

CHAMPION_ALIAS = "champion"
#: The validation metric the gate compares (lower is better): validation loss for classification,
#: validation RMSE (original units) for regression.
GATE_METRIC = "best_val_loss"
GATE_METRICS = {"classification": "best_val_loss", "regression": "best_val_rmse"}


@dataclass(frozen=True)
class GateDecision:
    """Whether a new version becomes champion, and the numbers behind it."""

    promote: bool
    reason: str
    challenger_val_loss: float
    champion_version: str | None = None
    champion_val_loss: float | None = None
    metric: str = GATE_METRIC

    def tags(self) -> dict[str, str]:
        out = {
            "champion_gate.decision": "promoted" if self.promote else "rejected",
            "champion_gate.reason": self.reason,
            "champion_gate.metric": self.metric,
            "champion_gate.challenger_val_loss": repr(self.challenger_val_loss),
        }
        if self.champion_version is not None:
            out["champion_gate.champion_version"] = self.champion_version
        if self.champion_val_loss is not None:
            out["champion_gate.champion_val_loss"] = repr(self.champion_val_loss)
        return out


def validation_set(
    digest: str,
    task: str,
    targets: tuple[str, ...],
    seed: int,
    val_fraction: float,
    test_fraction: float,
    scored: str = "held-out",
) -> str:
    """What a validation loss was measured on, as a readable tag: two losses compare only when equal.

    The file (``digest``), the target column(s) and task (what is predicted) and the split
    (``seed`` and the fractions pick the validation rows) all change the number, and so does
    which rows scored it (``scored``: ``"held-out"``, the validation rows, or ``"out-of-fold"``,
    k-fold members' pooled training + validation rows; :class:`mlp_jax.summary.RunSummary`'s
    ``validation``), which the tag names when it is not the validation rows.
    """
    names = ",".join(targets)
    rows = "" if scored == "held-out" else f" {scored}"
    return f"{digest} target {names} ({task}) seed {seed} split {val_fraction:g}/{test_fraction:g}{rows}"


def champion_gate(
    challenger_val_loss: float,
    digest: str,
    champion: Mapping[str, Any] | None,
    metric: str = GATE_METRIC,
    validation: str | None = None,
) -> GateDecision:
    """Champion/challenger: promote only on a strictly lower validation metric on the same data.

    Args:
      challenger_val_loss: the new version's validation metric (``metric``: lower is better).
      digest: the new version's dataset digest.
      champion: the current champion's ``version``, ``val_loss``, ``dataset_digest`` and
        ``validation_set`` (None when there is no champion).
      validation: the new version's :func:`validation_set`; compared with the champion's when
        both have one, else the dataset digests are.
    """
    return dataclasses.replace(_gate(challenger_val_loss, digest, champion, metric, validation), metric=metric)


def _gate(
    challenger_val_loss: float,
    digest: str,
    champion: Mapping[str, Any] | None,
    metric: str,
    validation: str | None = None,
) -> GateDecision:
    """Champion/challenger: promote only on a strictly lower validation loss on the same data.

    Args:
      challenger_val_loss: the new version's best validation loss.
      digest: the new version's dataset digest.
      champion: the current champion's ``version``, ``val_loss`` and ``dataset_digest``
        (None when there is no champion).
    """
    if not math.isfinite(challenger_val_loss):
        return GateDecision(False, "challenger validation loss is not finite", challenger_val_loss)
    if champion is None:
        return GateDecision(True, "no champion yet", challenger_val_loss)
    version, loss, champ_digest = champion.get("version"), champion.get("val_loss"), champion.get("dataset_digest")
    champ_validation = champion.get("validation_set")
    if validation is not None and champ_validation is not None and champ_validation != validation:
        return GateDecision(
            False,
            f"not comparable: champion v{version} was validated on {champ_validation}, this run on {validation} "
            f"(move the alias by hand if the new model should replace it)",
            challenger_val_loss,
            version,
            loss,
        )
    if champ_digest is not None and champ_digest != digest:
        return GateDecision(
            False,
            f"not comparable: champion v{version} was validated on dataset {champ_digest}, this run on {digest} "
            f"(move the alias by hand if the new data should replace it)",
            challenger_val_loss,
            version,
            loss,
        )
    if loss is None or champ_digest is None:  # comparable as far as is known, but nothing to compare with
        missing = " and ".join(w for w, v in ((metric, loss), ("dataset digest", champ_digest)) if v is None)
        return GateDecision(False, f"champion v{version} has no recorded {missing}", challenger_val_loss, version)
    if challenger_val_loss < loss:
        return GateDecision(
            True, f"{challenger_val_loss:.6g} < champion v{version} {loss:.6g}", challenger_val_loss, version, loss
        )
    return GateDecision(
        False, f"{challenger_val_loss:.6g} >= champion v{version} {loss:.6g}", challenger_val_loss, version, loss
    )


def current_champion(client: MlflowClient, name: str, metric: str = GATE_METRIC) -> dict[str, Any] | None:
    """The version behind alias ``champion`` with its gate numbers, or None when there is none."""
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise
    tags = mv.tags or {}
    loss = tags.get(metric)
    if loss is None and mv.run_id:
        loss = client.get_run(mv.run_id).data.metrics.get(metric)
    return {
        "version": str(mv.version),
        "val_loss": float(loss) if loss is not None else None,
        "dataset_digest": tags.get("dataset_digest"),
        "validation_set": tags.get("validation_set"),
    }


@dataclass(frozen=True)
class Registration:
    """A new registered version and the gate's outcome."""

    model_version: str
    model_uri: str
    champion: bool
    gate: GateOutcome


#: Version tag naming the checkpoint step folder a version was logged from.
CHECKPOINT_TAG = "mlp_jax.checkpoint"


def already_registered(
    client: MlflowClient, name: str, checkpoint: str, val_loss: float, metric: str, validation: str | None
) -> Registration | None:
    """The version of ``name`` holding this very model, if one exists: logged from the same
    checkpoint step folder with bitwise the same validation number on the same validation set.

    A rerun that trained nothing (a finished run run again, a sweep killed while registering)
    reaches the registry with a model that is already there; it gets that version back
    instead of a duplicate. A retrained model in the same folder has another validation
    number (in ``repr``, all 17 digits) unless training repeated bitwise, and then it is the
    same model.
    """
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    for mv in sorted(versions, key=lambda v: int(v.version)):
        tags = mv.tags or {}
        if (
            tags.get(CHECKPOINT_TAG) == checkpoint
            and tags.get(metric) == repr(val_loss)
            and tags.get("validation_set") == validation
        ):
            champion = current_champion(client, name, metric)
            is_champion = champion is not None and str(champion.get("version")) == str(mv.version)
            reason = f"already registered as v{mv.version} (same checkpoint and {metric}); not registered again"
            print(f"mlflow: {name}: {reason}", flush=True)
            return Registration(
                model_version=str(mv.version),
                model_uri=f"models:/{name}/{mv.version}",
                champion=is_champion,
                gate=GateOutcome(
                    metric=metric,
                    challenger_val_loss=val_loss,
                    champion_version=None if champion is None else str(champion.get("version")),
                    champion_val_loss=None if champion is None else champion.get("val_loss"),
                    decision="already registered",
                    reason=reason,
                ),
            )
    return None


def register(
    client: MlflowClient,
    info: Any,
    *,
    run_id: str,
    name: str,
    experiment: str,
    val_loss: float,
    dataset_digest: str,
    dataset_source: str,
    test_accuracy: float | None,
    pending: Callable[[str | None], None] = lambda version: None,
    metric: str = GATE_METRIC,
    validation: str | None = None,
    checkpoint: str | None = None,
) -> Registration:
    """Registers the logged model ``info`` as a new version of ``name`` and runs the champion gate.

    ``checkpoint`` (the step folder the model was logged from) is kept as the version's
    :data:`CHECKPOINT_TAG`, which :func:`already_registered` looks for.

    ``pending(version)`` is told the new version as soon as it exists (so the caller can
    delete it if anything after fails).
    """
    from mlflow.entities import RunTag

    champion = current_champion(client, name, metric)
    decision = champion_gate(val_loss, dataset_digest, champion, metric, validation)
    version_tags = {
        metric: repr(val_loss),
        "dataset_digest": dataset_digest,
        **({"validation_set": validation} if validation is not None else {}),
        "dataset_source": dataset_source,
        "test_accuracy": repr(test_accuracy),
        "experiment": experiment,
        **({CHECKPOINT_TAG: checkpoint} if checkpoint is not None else {}),
        **decision.tags(),
    }
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name,
            description=(
                "MLP trained with mlp-jax (JAX/Flax NNX). Each tracked run adds a version; "
                f"alias '{CHAMPION_ALIAS}' follows the lowest {metric} on the same dataset digest."
            ),
        )
    accuracy = f", test accuracy {test_accuracy:.4f}" if test_accuracy is not None else ""
    mv = client.create_model_version(
        name,
        source=info.model_uri,
        run_id=run_id,
        tags=version_tags,
        description=f"{experiment}: {metric} {val_loss:.6g}{accuracy}, dataset {dataset_digest}",
        model_id=info.model_id,
    )
    pending(str(mv.version))
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, mv.version)
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in decision.tags().items()])
    if decision.champion_version is None:
        before = "none"
    elif decision.champion_val_loss is None:
        before = f"v{decision.champion_version} (no {metric})"
    else:
        before = f"v{decision.champion_version} ({decision.champion_val_loss:.6g})"
    print(
        f"mlflow: registered {name} v{mv.version}; champion gate on {metric} "
        f"(dataset {dataset_digest}): {val_loss:.6g} vs champion {before} -> "
        f"{'PROMOTED to @' + CHAMPION_ALIAS if decision.promote else 'kept the champion'} ({decision.reason})",
        flush=True,
    )
    return Registration(
        model_version=str(mv.version),
        model_uri=f"models:/{name}/{mv.version}",
        champion=decision.promote,
        gate=GateOutcome(
            metric=metric,
            challenger_val_loss=val_loss,
            champion_version=decision.champion_version,
            champion_val_loss=decision.champion_val_loss,
            decision="promoted" if decision.promote else "rejected",
            reason=decision.reason,
        ),
    )
