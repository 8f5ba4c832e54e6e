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
from tests.helpers import (  # noqa: E402
    free_port,
    penguins_csv,
    spawn,
    stop,
    trained_penguins,
    trained_regression,
    use_store,
    wait_http,
)

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
        specs = reference.preprocessor.columns
        mean = np.asarray([c.center for c in specs])
        scale = np.asarray([c.scale for c in specs])
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
    with pytest.raises(PredictorError, match=r"column 'feature_1', row 0: non-finite value"):
        model.predict(frame.assign(feature_1=np.inf))
    gaps = frame.assign(feature_1=np.nan)  # missing: imputed with the training median, as in training
    assert_same_predictions(model.predict(gaps), registry.reference, gaps)


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


# ----------------------------------------------------------------------------- real tables


@pytest.fixture(scope="module")
def tabular(tmp_path_factory: pytest.TempPathFactory, mlflow_db) -> Iterator[SimpleNamespace]:
    """A penguins classifier and a two-target regressor logged in one SQLite store."""
    folder = tmp_path_factory.mktemp("pyfunc-tabular")
    with pytest.MonkeyPatch.context() as mp:
        uri = use_store(mp, folder, mlflow_db(folder))
        out = {}
        for key, workdir in (
            ("penguins", trained_penguins(tmp_path_factory)),
            ("regression", trained_regression(tmp_path_factory)),
        ):
            w, step = resolve(workdir)
            with mlflow.start_run():
                info = pyfunc.log_model(w / str(step))
            out[key] = SimpleNamespace(
                uri=info.model_uri, reference=Predictor.load(w / str(step), buckets=(64,)), workdir=w
            )
        yield SimpleNamespace(folder=folder, store=uri, **out)


def test_penguins_signature_and_example_come_from_the_preprocessing(tabular):
    model = mlflow.models.Model.load(tabular.penguins.uri)
    inputs = {c.name: c for c in model.signature.inputs.inputs}
    assert list(inputs) == list(tabular.penguins.reference.feature_names)
    assert inputs["island"].type.name == "string" and inputs["sex"].type.name == "string"
    assert inputs["bill_length_mm"].type.name == "double" and inputs["year"].type.name == "double"
    assert all(c.required for c in inputs.values())  # present; None/NaN values are still accepted
    outputs = model.signature.outputs
    assert outputs.input_names() == ["prediction", "proba_Adelie", "proba_Chinstrap", "proba_Gentoo"]
    assert outputs.inputs[0].type.name == "string"
    local = Path(mlflow.artifacts.download_artifacts(tabular.penguins.uri, dst_path=str(tabular.folder / "dl")))
    example = model.load_input_example(str(local))
    assert len(example) == 3 and list(example.columns) == list(inputs)
    pre = tabular.penguins.reference.preprocessor
    assert set(example["island"]) <= set(pre.columns[0].vocabulary)
    bill = next(c for c in pre.columns if c.name == "bill_length_mm")
    assert example["bill_length_mm"].iloc[0] == bill.fill  # the training median, not a training row
    training = pd.read_csv(penguins_csv()).astype({"year": "float64"})
    merged = example.merge(training, on=list(inputs), how="inner")
    assert merged.empty  # no training row is stored with the model


def test_penguins_pyfunc_gives_the_predictor_numbers_with_gaps_and_unseen_values(tabular):
    ref = tabular.penguins.reference
    model = mlflow.pyfunc.load_model(tabular.penguins.uri, model_config={"buckets": [64]})
    frame = pd.read_csv(penguins_csv()).drop(columns="species").astype({"year": "float64"})
    frame.loc[3, "island"] = "Atlantis"
    got = model.predict(frame)
    want = ref.predict_frame(frame)
    assert list(got.columns) == ref.output_columns()
    assert got["prediction"].tolist() == want["prediction"].tolist()
    assert np.array_equal(got.iloc[:, 1:].to_numpy(), want.iloc[:, 1:].to_numpy())
    # JSON-like rows: None in text and number columns pass MLflow's check and are imputed
    records = frame.head(4).astype(object).where(frame.head(4).notna(), None)
    records.loc[0, ["sex", "bill_length_mm"]] = None
    assert np.array_equal(model.predict(records).iloc[:, 1:].to_numpy(), ref.predict_outputs(records))
    with pytest.raises(MlflowException, match="sex"):  # a column left out is refused, not imputed
        model.predict(frame.head(4).drop(columns="sex"))
    with pytest.raises(MlflowException, match="Can not safely convert int64 to float64"):
        model.predict(frame.astype({"year": "int64"}))  # MLflow's rule: cast integers to float yourself
    with pytest.raises(MlflowException, match="bill_depth_mm"):  # MLflow's own check comes first
        model.predict(frame.head(3).astype({"bill_depth_mm": object}).assign(bill_depth_mm=[1.0, "deep", 2.0]))


def test_regression_pyfunc_outputs_one_double_column_per_target(tabular):
    ref = tabular.regression.reference
    model = mlflow.pyfunc.load_model(tabular.regression.uri, model_config={"buckets": [64]})
    outputs = model.metadata.signature.outputs
    assert outputs.input_names() == ["prediction_y1", "prediction_y2"]
    assert {c.type.name for c in outputs.inputs} == {"double"}
    inputs = {c.name: c.type.name for c in model.metadata.signature.inputs.inputs}
    assert inputs == {"a": "double", "b": "double", "color": "string", "flag": "boolean"}
    frame = pd.read_csv(tabular.regression.workdir.parent.parent / "regression.csv").drop(columns=["y1", "y2"])
    got = model.predict(frame)
    assert np.array_equal(got.to_numpy(), ref.predict_outputs(frame))
    assert (got.dtypes == np.float64).all()
