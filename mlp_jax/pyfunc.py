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

#: What the model needs at inference (pinned to the versions installed when it was logged).
RUNTIME_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "pandas", "mlflow")
#: Batch buckets compiled at load: few, since a pyfunc scores whole frames (bigger ones run
#: in 4096-row chunks). ``load_model(uri, model_config={"buckets": [...]})`` overrides them.
PYFUNC_BUCKETS = (1, 64, 4096)


class MlpJaxModel(mlflow.pyfunc.PythonModel):
    """``predict(df)`` -> ``prediction`` (original labels) + one ``proba_<class>`` column per class.

    ``mlflow.pyfunc.load_model(uri, model_config={"buckets": [...]})`` picks other batch buckets.
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from mlp_jax.predictor import Predictor

        buckets = (context.model_config or {}).get("buckets") or PYFUNC_BUCKETS
        self.predictor = Predictor.load(context.artifacts[CHECKPOINT_ARTIFACT], buckets=buckets)

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
    """Signature (named double feature columns in, label + probabilities out) and an input example.

    The example rows are the training mean and mean +/- one standard deviation, so no row
    of the training data is stored with the model.
    """
    import numpy as np
    from mlflow.types import ColSpec, Schema

    names = list(meta.input_columns)
    classes = list(meta.classes)
    mean = np.asarray(meta.preprocessing["mean"], np.float64)
    scale = np.asarray(meta.preprocessing["scale"], np.float64)
    example = pd.DataFrame(np.stack([mean, mean - scale, mean + scale]), columns=names)
    label_type = "long" if all(isinstance(c, int) for c in classes) else "string"
    inputs = Schema([ColSpec("double", n) for n in names])
    outputs = Schema([ColSpec(label_type, "prediction"), *(ColSpec("float", f"proba_{c}") for c in classes)])
    return mlflow.models.ModelSignature(inputs=inputs, outputs=outputs), example


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
    failures = _ValidationFailures()
    logger = logging.getLogger("mlflow.models.model")
    logger.addHandler(failures)
    try:
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).resolve()),
            artifacts={CHECKPOINT_ARTIFACT: str(workdir / str(step))},
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            **kwargs,
        )
    finally:
        logger.removeHandler(failures)
    if failures.errors:
        raise CheckpointError(
            f"the model logged from {workdir / str(step)} failed to load and predict its input example "
            f"in MLflow: {failures.errors[-1]}"
        )
    return info


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
