"""The MLflow model: an mlp-jax checkpoint behind MLflow's ``pyfunc`` interface.

MLflow has no JAX/Flax flavour, so this module is one, built "from code": MLflow stores
this file's source with the model and runs it at load time (``mlflow.models.set_model``
below), so no Python object of ours is ever cloudpickled. The model's only artifact is
the Orbax checkpoint step folder (state + JSON metadata); :meth:`MlpJaxModel.load_context`
turns it into a :class:`mlp_jax.predictor.Predictor`, so ``pyfunc.predict`` gives the same
numbers as the service and the batch CLI.

Also here: :func:`download_checkpoint`, which the predictor uses for ``models:/`` and
``runs:/`` URIs, and :func:`log_model`, which the tracking session calls.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before mlflow is imported
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow
import pandas as pd

from mlp_jax.checkpoint import CheckpointError

#: The artifact key and the model's name inside a run.
CHECKPOINT_ARTIFACT = "checkpoint"
MODEL_NAME_IN_RUN = "model"
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


def signature_for(meta: dict[str, Any]) -> tuple[mlflow.models.ModelSignature, pd.DataFrame]:
    """Signature (named double feature columns in, label + probabilities out) and an input example.

    The example rows are the training mean and mean +/- one standard deviation, so no row
    of the training data is stored with the model.
    """
    import numpy as np
    from mlflow.types import ColSpec, Schema

    names = list(meta["feature_names"])
    classes = list(meta["classes"])
    mean = np.asarray(meta["standardizer"]["mean"], np.float64)
    scale = np.asarray(meta["standardizer"]["scale"], np.float64)
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
    from mlp_jax.checkpoint import Checkpointer, resolve

    workdir, step = resolve(checkpoint)
    store = Checkpointer(workdir, read_only=True)
    try:
        meta = store.read_meta(step)
    finally:
        store.manager.close()
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


def download_checkpoint(uri: str, dst: str | Path | None = None) -> Path:
    """Downloads the checkpoint of an MLflow model and returns its local step folder.

    Args:
      uri: ``models:/NAME@alias``, ``models:/NAME/VERSION``, ``models:/m-<id>``,
        ``runs:/RUN_ID/model`` (or ``runs:/RUN_ID``, meaning its ``model``). The store is
        ``MLFLOW_TRACKING_URI`` (registry: ``MLFLOW_REGISTRY_URI``), else MLflow's default.
      dst: folder to download into (default: a new temporary folder, removed at interpreter exit).

    Returns:
      A step folder that :func:`mlp_jax.checkpoint.restore_for_inference` accepts.

    Raises:
      CheckpointError: malformed URI, unreachable or missing store, unknown model name,
        alias, version or run, or a model that is not an mlp-jax model.
    """
    from mlflow.exceptions import MlflowException

    from mlp_jax.tracking import TrackingError, check_store

    uri = str(uri).strip()
    if uri.startswith("runs:/"):
        parts = [p for p in uri[len("runs:/") :].split("/") if p]
        if not parts:
            raise CheckpointError(f"malformed model URI {uri!r}: expected runs:/RUN_ID/model")
        if len(parts) == 1:
            uri = f"runs:/{parts[0]}/{MODEL_NAME_IN_RUN}"
    elif not uri.startswith("models:/") or len(uri) <= len("models:/"):
        raise CheckpointError(
            f"malformed model URI {uri!r}: expected models:/NAME@alias, models:/NAME/VERSION or runs:/RUN_ID/model"
        )
    store = mlflow.get_registry_uri() if uri.startswith("models:/") else mlflow.get_tracking_uri()
    try:
        check_store(store, create=False)
    except TrackingError as e:
        raise CheckpointError(f"cannot load {uri}: {e}") from None
    if dst is None:
        target = Path(tempfile.mkdtemp(prefix="mlp-jax-model-"))
        atexit.register(shutil.rmtree, target, ignore_errors=True)  # restored into memory long before
    else:
        target = Path(dst)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target)))
    except MlflowException as e:
        raise CheckpointError(f"cannot load {uri} from MLflow store {store}: {e.message}") from None
    except OSError as e:
        raise CheckpointError(f"cannot download {uri} from MLflow store {store}: {e}") from None
    mlmodel = local / "MLmodel"
    if not mlmodel.is_file():
        raise CheckpointError(f"{uri} is not an MLflow model (no MLmodel file in what it points to)")
    flavor = mlflow.models.Model.load(str(mlmodel)).flavors.get("python_function", {})
    entry = (flavor.get("artifacts") or {}).get(CHECKPOINT_ARTIFACT)
    if not entry:
        raise CheckpointError(
            f"{uri} is an MLflow model but not an mlp-jax model (no {CHECKPOINT_ARTIFACT!r} artifact)"
        )
    return local / entry["path"]


# MLflow runs this file as its own module when it loads the model; the import of
# mlp_jax.pyfunc itself (for download_checkpoint) should not set the global model.
if __name__ != "mlp_jax.pyfunc":
    mlflow.models.set_model(MlpJaxModel())
