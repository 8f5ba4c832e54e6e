"""Where a model lives: MLflow model URIs, workdirs and step folders -> a local artifact folder.

``models:/NAME@alias``, ``models:/NAME/VERSION``, ``models:/m-<id>`` and ``runs:/RUN_ID/model``
are downloaded from the MLflow store (``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``, else
MLflow's default); a workdir or a step folder is used in place. mlflow is imported only for
URIs, so serving a local checkpoint never needs it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from mlp_jax.artifact import CheckpointError

#: Prefixes of the URIs resolved through MLflow.
MODEL_URI_SCHEMES = ("models:/", "runs:/")
#: The artifact key of the checkpoint inside an mlp-jax MLflow model, and the model's name in a run.
CHECKPOINT_ARTIFACT = "checkpoint"
MODEL_NAME_IN_RUN = "model"


class StoreError(RuntimeError):
    """An MLflow tracking/registry store cannot be used; the message names it."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference made local: the step folder or workdir, and its registry identity if any."""

    path: Path
    source: str  # what the user gave
    name: str | None = None  # registered model name (registry URIs)
    version: str | None = None  # registered model version (registry URIs)


def resolve(model: str | os.PathLike) -> ResolvedModel:
    """A local path for a workdir, a step folder or an MLflow model URI.

    Raises:
      CheckpointError: a malformed URI, an unreachable store, an unknown name, alias,
        version or run, or a model that is not an mlp-jax model.
    """
    text = str(model)
    if text.startswith(MODEL_URI_SCHEMES):
        local = download_checkpoint(text)
        name, version = registry_name_version(text)
        return ResolvedModel(local, text, name, version)
    return ResolvedModel(Path(text), text)


def check_store(uri: str, create: bool = True, timeout: float = 5.0) -> None:
    """Cheap reachability check of a tracking/registry store, before MLflow's own retries.

    MLflow retries a refused HTTP connection for minutes; this answers in ``timeout``
    seconds. For SQLite it checks that the database (``create=False``) or its folder exists.

    Raises:
      StoreError: naming the store and the problem.
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        import requests

        try:
            requests.get(
                uri.rstrip("/") + "/api/2.0/mlflow/experiments/search",
                params={"max_results": 1},
                timeout=(timeout, 2 * timeout),
            )
        except requests.RequestException as e:
            raise StoreError(
                f"cannot reach the MLflow tracking server at {uri} ({type(e).__name__}); "
                "start it, fix MLFLOW_TRACKING_URI / tracking.uri, or run with tracking.enabled=false"
            ) from None
    elif parsed.scheme == "sqlite":
        path = Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None
        if path is None or str(path) in ("", ":memory:"):
            return
        if not create and not path.is_file():
            raise StoreError(f"no MLflow database at {path} (tracking URI {uri})")
        if create and not path.parent.is_dir():
            raise StoreError(f"MLflow database folder {path.parent} does not exist or is not a folder (URI {uri})")


def download_checkpoint(uri: str, dst: str | Path | None = None) -> Path:
    """Downloads the checkpoint of an MLflow model and returns its local step folder.

    Args:
      uri: ``models:/NAME@alias``, ``models:/NAME/VERSION``, ``models:/m-<id>``,
        ``runs:/RUN_ID/model`` (or ``runs:/RUN_ID``, meaning its ``model``). The store is
        ``MLFLOW_TRACKING_URI`` (registry: ``MLFLOW_REGISTRY_URI``), else MLflow's default.
      dst: folder to download into (default: a new temporary folder, removed at interpreter exit).

    Returns:
      A step folder that :func:`mlp_jax.artifact.load` accepts.

    Raises:
      CheckpointError: malformed URI, unreachable or missing store, unknown model name,
        alias, version or run, or a model that is not an mlp-jax model.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

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
    except StoreError as e:
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


def registry_name_version(uri: str) -> tuple[str | None, str | None]:
    """``(name, version)`` of a ``models:/NAME@alias`` or ``models:/NAME/VERSION`` URI (None, None otherwise).

    An unknown name or alias raises MLflow's own error, which names it.
    """
    if not uri.startswith("models:/"):
        return None, None
    ref = uri[len("models:/") :].strip("/")
    if ref.startswith("m-"):  # a logged model id (models:/m-<id>) is not a registered name
        return None, None
    from mlflow import MlflowClient

    client = MlflowClient()
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, str(client.get_model_version_by_alias(name, alias).version)
    name, _, version = ref.partition("/")
    if version.isdigit():
        return name, version
    versions = client.search_model_versions(f"name = '{name}'")  # "latest" or no version: the newest one
    return name, str(max(int(v.version) for v in versions)) if versions else None
