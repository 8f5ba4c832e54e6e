"""The MLflow pyfunc model: what is stored, download_checkpoint, the same numbers as the predictor
in a fresh process, schema enforcement, and ``mlflow models serve`` answering /invocations."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mlp_jax import model_uri
from mlp_jax.artifact import CheckpointError, load, resolve
from mlp_jax.predictor import Predictor, PredictorError

mlflow = pytest.importorskip("mlflow")
import pandas as pd  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from mlp_jax import pyfunc  # noqa: E402
from tests.helpers import free_port, spawn, stop, use_store, wait_http  # noqa: E402

pytestmark = pytest.mark.slow  # end to end: subprocesses, servers, whole runs

NAME = "pyfunc-model"


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory,
    trained_workdir: Path,
    mlflow_db,
) -> Iterator[SimpleNamespace]:
    """The session's tiny checkpoint logged as a pyfunc in a run, registered as NAME v1 @champion."""
    folder = tmp_path_factory.mktemp("pyfunc")
    with pytest.MonkeyPatch.context() as mp:
        uri = use_store(mp, folder, mlflow_db(folder))
        workdir, step = resolve(trained_workdir)
        client = MlflowClient(uri)
        experiment = client.create_experiment("pyfunc")
        with mlflow.start_run(experiment_id=experiment) as run:
            info = pyfunc.log_model(workdir / str(step))
        client.create_registered_model(NAME)
        mv = client.create_model_version(NAME, info.model_uri, run.info.run_id, model_id=info.model_id)
        client.set_registered_model_alias(NAME, "champion", mv.version)
        reference = Predictor.load(workdir / str(step), buckets=(64,))
        rng = np.random.default_rng(0)
        mean = np.asarray(reference.meta.preprocessing["mean"])
        scale = np.asarray(reference.meta.preprocessing["scale"])
        rows = mean + scale * rng.normal(size=(37, reference.n_features))
        frame = pd.DataFrame(rows, columns=list(reference.feature_names))[list(reversed(reference.feature_names))]
        yield SimpleNamespace(
            folder=folder, uri=uri, client=client, run_id=run.info.run_id, step=step, reference=reference, frame=frame
        )


def assert_same_predictions(got: pd.DataFrame, reference: Predictor, frame: pd.DataFrame) -> None:
    want = reference.predict_frame(frame)
    assert list(got.columns) == ["prediction", *(f"proba_{c}" for c in reference.classes)]
    assert got["prediction"].tolist() == want["prediction"].tolist()
    np.testing.assert_allclose(got.iloc[:, 1:].to_numpy(np.float64), want.iloc[:, 1:].to_numpy(np.float64), atol=1e-6)


def test_the_model_is_code_plus_checkpoint_with_signature_example_and_pinned_requirements(registry):
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}/1", dst_path=str(registry.folder / "dl")))
    assert not list(local.rglob("*.pkl")), "no pickle in the model"
    assert (local / "artifacts" / str(registry.step) / "meta").is_dir()
    model = mlflow.models.Model.load(str(local / "MLmodel"))
    flavor = model.flavors["python_function"]
    assert (local / flavor["model_code_path"]).read_text() == Path(pyfunc.__file__).read_text()
    ref = registry.reference
    assert model.signature.inputs.input_names() == list(ref.feature_names)
    assert {t.name for t in model.signature.inputs.input_types()} == {"double"}
    assert model.signature.outputs.input_names() == ["prediction", "proba_0", "proba_1"]
    example = model.load_input_example(str(local))
    assert list(example.columns) == list(ref.feature_names) and len(example) == 3
    requirements = (local / "requirements.txt").read_text().split()
    assert "mlp-jax==0.1.0" in requirements and any(r.startswith("jax==") for r in requirements)


def test_download_checkpoint_resolves_aliases_versions_and_runs(registry):
    want = registry.reference.checkpoint.meta
    for uri in (
        f"models:/{NAME}@champion",
        f"models:/{NAME}/1",
        f"runs:/{registry.run_id}/model",
        f"runs:/{registry.run_id}",
    ):
        path = model_uri.download_checkpoint(uri)
        assert path.name == str(registry.step), uri
        assert load(path).meta == want, uri


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models:/no-such-model@champion", "no-such-model"),
        (f"models:/{NAME}@staging", "alias staging not found"),
        (f"models:/{NAME}/99", "version=99"),
        ("runs:/0123456789abcdef/model", "0123456789abcdef"),
        ("s3://bucket/model", "malformed model URI"),
        ("models:/", "malformed model URI"),
    ],
)
def test_download_checkpoint_names_what_is_unknown(registry, uri, message):
    with pytest.raises(CheckpointError, match=message):
        model_uri.download_checkpoint(uri)


def test_download_checkpoint_from_a_missing_or_unreachable_store(tmp_path, monkeypatch):
    use_store(monkeypatch, tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(CheckpointError, match="no MLflow database"):
        model_uri.download_checkpoint(f"models:/{NAME}@champion")
    assert not (tmp_path / "mlflow.db").exists()  # looking did not create an empty store
    use_store(monkeypatch, tmp_path, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(CheckpointError, match="cannot reach the MLflow tracking server"):
        model_uri.download_checkpoint(f"models:/{NAME}@champion")


def test_round_trip_in_a_fresh_process_equals_the_predictor(registry, tmp_path):
    registry.frame.to_parquet(tmp_path / "in.parquet")
    code = (
        "import sys, mlflow, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model('models:/{NAME}@champion')\n"
        "model.predict(pd.read_parquet(sys.argv[1])).to_parquet(sys.argv[2])\n"
    )
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registry.uri,
        "JAX_PLATFORMS": "cpu",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert_same_predictions(pd.read_parquet(tmp_path / "out.parquet"), registry.reference, registry.frame)


def test_schema_enforcement_refuses_a_wrong_column_or_dtype(registry):
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion", model_config={"buckets": [64]})
    frame = registry.frame
    assert_same_predictions(model.predict(frame), registry.reference, frame)
    assert_same_predictions(model.predict(frame.astype("float32")), registry.reference, frame.astype("float32"))
    with pytest.raises(MlflowException, match="Can not safely convert int64 to float64"):
        model.predict(frame.round().astype("int64"))  # int64 does not fit a double exactly: cast it yourself
    with pytest.raises(MlflowException, match="feature_3"):
        model.predict(frame.drop(columns="feature_3"))
    with pytest.raises(MlflowException, match="feature_0"):
        model.predict(frame.rename(columns={"feature_0": "f0"}))
    with pytest.raises(MlflowException, match="feature_2"):
        model.predict(frame.assign(feature_2="not a number"))
    with pytest.raises(PredictorError, match=r"non-finite value.* at row 0, feature 'feature_1'"):
        model.predict(frame.assign(feature_1=np.nan))


def test_mlflow_models_serve_answers_invocations(registry, tmp_path):
    import requests

    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registry.uri,
        "JAX_PLATFORMS": "cpu",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")  # MLflow execs `uvicorn` by name: an activated venv
    mlflow_cli = str(Path(bin_dir) / "mlflow")
    cmd = ["models", "serve", "-m", f"models:/{NAME}@champion", "--env-manager", "local", "-h", "127.0.0.1"]
    server = spawn([mlflow_cli, *cmd, "-p", str(port), "-w", "1"], tmp_path, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/ping", server, timeout=120)
        frame = registry.frame.iloc[:5].copy()
        frame.iloc[0, 0] = 2.0  # sent as the JSON integer 2, which the server casts to the declared double
        body = {"dataframe_split": frame.to_dict(orient="split", index=False)}
        body["dataframe_split"]["data"][0][0] = 2
        r = requests.post(f"{url}/invocations", json=body, timeout=30)
        assert r.status_code == 200, r.text
        assert_same_predictions(pd.DataFrame(r.json()["predictions"]), registry.reference, frame)
        bad = {"dataframe_split": frame.drop(columns="feature_3").to_dict(orient="split", index=False)}
        r = requests.post(f"{url}/invocations", json=bad, timeout=30)
        assert r.status_code == 400 and "feature_3" in r.text
    finally:
        stop(server)
