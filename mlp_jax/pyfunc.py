"""The MLflow model: an mlp-jax checkpoint behind MLflow's ``pyfunc`` interface.

MLflow has no JAX/Flax flavour, so this module is one, built "from code": MLflow stores
this file's source with the model and runs it at load time (``mlflow.models.set_model``
below), so no Python object of ours is ever cloudpickled. The model's only artifact is
the Orbax checkpoint step folder (state + JSON metadata); :meth:`MlpJaxModel.load_context`
turns it into a :class:`mlp_jax.predictor.Predictor`, so ``pyfunc.predict`` gives the same
numbers as the service and the batch CLI.

Also here: :func:`log_model`, which the tracking session calls. Resolving ``models:/`` and
``runs:/`` URIs back to a checkpoint is :mod:`mlp_jax.model_uri`'s job.
"""

from __future__ import annotations

import logging
import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before mlflow is imported
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow
import pandas as pd

from mlp_jax import artifact
from mlp_jax.artifact import ArtifactMeta, CheckpointError
from mlp_jax.model_uri import CHECKPOINT_ARTIFACT, MODEL_NAME_IN_RUN

#: The exported folder's artifact key (= mlp_jax.export.EXPORTED_ARTIFACT; not imported: jax).
EXPORTED_ARTIFACT = "exported"

#: What the model needs at inference (pinned to the versions installed when it was logged).
RUNTIME_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "pandas", "mlflow")
#: Batch buckets compiled at load: few, since a pyfunc scores whole frames (bigger ones run
#: in 4096-row chunks). ``load_model(uri, model_config={"buckets": [...]})`` overrides them.
PYFUNC_BUCKETS = (1, 64, 4096)


class MlpJaxModel(mlflow.pyfunc.PythonModel):
    """``predict(df)`` = :meth:`Predictor.predict_frame`: ``prediction`` (original labels) + one
    ``proba_<class>`` column per class (an ensemble: the members' mean, plus ``std_<class>``, their
    standard deviation), or the regression prediction(s) (``prediction`` /
    ``prediction_<target>``, original units).

    ``mlflow.pyfunc.load_model(uri, model_config={"buckets": [...]})`` picks other batch buckets.
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from mlp_jax.export import load_predictor

        buckets = (context.model_config or {}).get("buckets") or PYFUNC_BUCKETS
        self.predictor = load_predictor(context.artifacts[CHECKPOINT_ARTIFACT], buckets=buckets)

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        return self.predictor.predict_frame(model_input)


# ----------------------------------------------------------------------------- logging


def pip_requirements() -> list[str]:
    """The project and its runtime dependencies, pinned to what is installed now.

    Explicit, so MLflow never spawns a process to infer them; ``--env-manager local``
    (the project installed) needs no network.
    """
    out = []
    for name in ("mlp-jax", *RUNTIME_PACKAGES):
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def signature_for(meta: ArtifactMeta) -> tuple[mlflow.models.ModelSignature, pd.DataFrame]:
    """Signature and input example from the artifact's preprocessing (never from training rows).

    Inputs: one ``ColSpec`` per raw input column, typed by its role (numbers ``double``, text
    and categories ``string``, bool-typed columns ``boolean``). Every column is required:
    in MLflow 3.17 ``required`` means the column must be *present*; a required column still
    accepts None/NaN values (checked), which the model imputes where training did. With
    ``required=False`` a misspelt or forgotten column would pass MLflow's check and be
    scored as all-missing without a word. Outputs: ``prediction`` (labels typed as trained) and
    ``proba_<class>`` floats (an ensemble adds ``std_<class>``, the members' spread), or regression
    ``prediction`` / ``prediction_<target>`` doubles.
    The example rows are built from the fitted statistics: medians, median +/- one scale,
    vocabulary values.
    """
    import numpy as np
    from mlflow.types import ColSpec, Schema

    names = list(meta.input_columns)
    pre = meta.preprocessing
    if pre.get("kind") == "standardize":  # format 1: numbers only, no imputation
        mean = np.asarray(pre["mean"], np.float64)
        scale = np.asarray(pre["scale"], np.float64)
        example = pd.DataFrame(np.stack([mean, mean - scale, mean + scale]), columns=names)
        inputs = Schema([ColSpec("double", n) for n in names])
    else:
        from mlp_jax.features import Preprocessor

        pp = Preprocessor.from_dict(pre)
        inputs = Schema([ColSpec(r["dtype"], r["name"]) for r in pp.roles])
        example = pd.DataFrame(
            {s.name: _example_values(s, r["dtype"]) for s, r in zip(pp.columns, pp.roles, strict=True)}
        )
    if meta.task == "regression":
        from mlp_jax.predictor import regression_columns

        columns = regression_columns(meta.targets) + (
            regression_columns(meta.targets, "std") if meta.members > 1 else []
        )
        outputs = Schema([ColSpec("double", c) for c in columns])
    else:
        classes = list(meta.classes)
        if all(isinstance(c, bool) for c in classes):
            label_type = "boolean"
        elif all(isinstance(c, int) for c in classes):
            label_type = "long"
        else:
            label_type = "string"
        spread = [ColSpec("float", f"std_{c}") for c in classes] if meta.members > 1 else []
        outputs = Schema(
            [ColSpec(label_type, "prediction"), *(ColSpec("float", f"proba_{c}") for c in classes), *spread]
        )
    return mlflow.models.ModelSignature(inputs=inputs, outputs=outputs), example


#: Rows in the logged input example.
EXAMPLE_ROWS = 3


def _example_values(spec: Any, dtype: str) -> list[Any]:
    """``EXAMPLE_ROWS`` plausible values of one column from its fitted statistics."""
    from mlp_jax.features import BooleanSpec, CategoricalSpec, NumericSpec

    if isinstance(spec, NumericSpec):
        spread = spec.scale if spec.scale > 0 else 0.0
        return [float(spec.fill), float(spec.center - spread), float(spec.center + spread)]
    if isinstance(spec, BooleanSpec):
        values = [bool(spec.fill), not spec.fill, bool(spec.fill)]
        return values if dtype == "boolean" else [str(v).lower() for v in values]
    if isinstance(spec, CategoricalSpec):
        vocab = list(spec.vocabulary) or ["unknown"]
        return [vocab[i % len(vocab)] for i in (0, len(vocab) // 2, len(vocab) - 1)]
    raise TypeError(f"unknown column spec {spec!r}")


def log_model(checkpoint: str | Path, name: str = MODEL_NAME_IN_RUN, **kwargs: Any) -> Any:
    """Logs a checkpoint step folder as an MLflow model in the active run; returns MLflow's ``ModelInfo``.

    MLflow loads the logged model and predicts its input example; when that fails this
    raises, so a checkpoint that cannot predict is refused here, not at serving time.

    Raises:
      CheckpointError: ``checkpoint`` is not a complete checkpoint step, or the logged
        model failed to predict its input example (it stays in the run, unregistered).
    """
    workdir, step = artifact.resolve(checkpoint)
    mngr = artifact.manager(workdir, read_only=True)
    try:
        meta = artifact.read_meta(mngr, step)
    finally:
        mngr.close()
    signature, example = signature_for(meta)
    # declared, so ``load_model(uri, model_config={"buckets": [...]})`` is honoured, not ignored
    kwargs.setdefault("model_config", {"buckets": list(PYFUNC_BUCKETS)})
    failures = _ValidationFailures()
    logger = logging.getLogger("mlflow.models.model")
    logger.addHandler(failures)
    # The portable export (StableHLO + ONNX) rides along, for single models and ensembles alike.
    exported = _exported_folder(workdir / str(step))
    artifacts = {CHECKPOINT_ARTIFACT: str(workdir / str(step))}
    if exported is not None:
        artifacts[EXPORTED_ARTIFACT] = str(exported)
    try:
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).resolve()),
            artifacts=artifacts,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            **kwargs,
        )
    finally:
        logger.removeHandler(failures)
        if exported is not None:
            shutil.rmtree(exported.parent, ignore_errors=True)
    if failures.errors:
        raise CheckpointError(
            f"the model logged from {workdir / str(step)} failed to load and predict its input example "
            f"in MLflow: {failures.errors[-1]}"
        )
    return info


def _exported_folder(step_folder: Path) -> Path:
    """The step exported (StableHLO + ONNX when installed, :mod:`mlp_jax.export`) into a temp folder."""
    import tempfile

    from mlp_jax.export import export_artifact

    out = Path(tempfile.mkdtemp(prefix="mlp-jax-")) / EXPORTED_ARTIFACT  # MLflow keeps the folder's name
    try:
        export_artifact(artifact.load(step_folder), out)
    except CheckpointError as e:
        shutil.rmtree(out.parent, ignore_errors=True)
        raise CheckpointError(f"the model at {step_folder} failed to load and predict: {e}") from None
    except BaseException:
        shutil.rmtree(out.parent, ignore_errors=True)
        raise
    return out


class _ValidationFailures(logging.Handler):
    """Collects MLflow's serving-input validation failures, which MLflow itself only logs as warnings.

    MLflow loads the just-logged model and predicts its input example (the full pyfunc
    path); a failure there must stop the registration, not become a log line.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Failed to validate serving input example"):
            _, _, error = message.rpartition("Got error:")
            self.errors.append(error.strip() or message)


# ----------------------------------------------------------------------------- download


# MLflow runs this file as its own module when it loads the model; the import of
# mlp_jax.pyfunc itself (by tracking, to log a model) should not set the global model.
if __name__ != "mlp_jax.pyfunc":
    mlflow.models.set_model(MlpJaxModel())
