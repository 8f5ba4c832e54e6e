"""The prediction service: real servers on 127.0.0.1, every bad input, MLflow parity, registry models.

Happy paths run on real uvicorn servers (one in a thread, one ``python -m mlp_jax.serve``
process with two workers serving a registered model); the many bad-input cases use
Litestar's in-process TestClient on the same app factory.
"""

from __future__ import annotations

import io
import json
import logging
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from litestar.testing import TestClient

from mlp_jax import runner, serve
from mlp_jax.predictor import FAST_RECORDS, Predictor
from tests.helpers import (
    ROOT,
    count_compilations,
    free_port,
    spawn,
    stop,
    tracked,
    trained_once,
    trained_penguins,
    trained_regression,
    use_store,
    wait_http,
    write_regression_csv,
    write_tiny_csv,
)

MAX_ROWS = 3000
MAX_BODY = 1 << 20


@pytest.fixture(scope="module")
def predictor(trained_workdir: Path) -> Predictor:
    return Predictor.load(trained_workdir)


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> Iterator[TestClient]:
    with TestClient(serve.create_app(predictor, max_rows=MAX_ROWS, max_body_bytes=MAX_BODY)) as c:
        yield c


@pytest.fixture(scope="module")
def rows(predictor: Predictor, trained_workdir: Path) -> np.ndarray:
    """2000 rows drawn from the training CSV, with a little noise."""
    frame = pd.read_csv(trained_workdir.parent / "tiny.csv")[list(predictor.feature_names)]
    rng = np.random.default_rng(11)
    x = frame.to_numpy(np.float64)[rng.integers(0, len(frame), 2000)]
    return (x + 0.1 * rng.normal(size=x.shape)).astype(np.float32)


def as_json_rows(x: np.ndarray) -> list[list[float]]:
    return x.astype(np.float64).tolist()


@contextmanager
def uvicorn_thread(app: Any) -> Iterator[str]:
    """Serves ``app`` with uvicorn on a free 127.0.0.1 port in a thread; always shut down."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


# ----------------------------------------------------------------------------- real server, happy path


def test_real_server_answers_every_endpoint_without_compiling(predictor, rows):
    app = serve.create_app(predictor, max_rows=MAX_ROWS, max_body_bytes=MAX_BODY)
    names = list(predictor.feature_names)
    expected = predictor.predict_proba(rows)
    with uvicorn_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/health").json() == {"status": "alive"}
        ready = http.get("/ready")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        with count_compilations() as compiles:
            one = http.post("/predict", json={"features": as_json_rows(rows[:1])[0]})
            many = http.post("/predict", json={"instances": as_json_rows(rows[:1500])})  # runs off the event loop
            split = {"columns": names, "data": as_json_rows(rows[:37])}
            inv = http.post("/invocations", json={"dataframe_split": split})
            sizes = [
                http.post("/predict", json={"instances": as_json_rows(rows[:n])}).status_code for n in (2, 33, 300)
            ]
        assert compiles == [], "a request triggered an XLA compilation"
        assert one.status_code == 200 and many.status_code == 200 and inv.status_code == 200 and sizes == [200] * 3

        body = one.json()
        assert body["classes"] == [0, 1] and body["prediction"] in (0, 1)
        assert np.array_equal(np.float32(body["probabilities"]), expected[0])
        assert np.array_equal(np.float32(many.json()["probabilities"]), expected[:1500])
        assert many.json()["predictions"] == [int(i) for i in expected[:1500].argmax(axis=1)]
        records = inv.json()["predictions"]
        assert np.array_equal(np.float32([[r["proba_0"], r["proba_1"]] for r in records]), expected[:37])

        meta = http.get("/metadata").json()
        assert meta["feature_names"] == names and meta["classes"] == [0, 1] and meta["step"] == predictor.step
        assert meta["name"] == "tiny" and meta["version"] == f"step-{predictor.step}" and "val_loss" in meta["metrics"]
        assert meta["max_rows"] == MAX_ROWS

        schema = http.get("/schema/openapi.json").json()
        assert {"/predict", "/invocations", "/health", "/ready", "/metadata"} <= set(schema["paths"])
        assert "requestBody" in schema["paths"]["/predict"]["post"]

        metrics = http.get("/metrics").text
        assert 'mlp_jax_rows_predicted_total{endpoint="predict"}' in metrics
        assert 'mlp_jax_http_requests_total{method="POST",path="/predict",status="200"}' in metrics
        assert "mlp_jax_http_request_duration_seconds_bucket" in metrics


# ----------------------------------------------------------------------------- bad inputs


def _post(client: TestClient, path: str, body: Any, content_type: str = "application/json") -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=raw, headers={"content-type": content_type})


ROW = [0.5] * 6
COLS = [f"feature_{i}" for i in range(6)]

BAD_PREDICT = [
    ({"features": ROW[:5]}, 400, "expected 6 features per row, got 5"),
    ({"instances": [ROW, [*ROW, 1.0]]}, 400, "expected 6 features per row, got 7 in row 1"),
    ({"features": [*ROW[:5], "1.5"]}, 400, "column 'feature_5', row 0: expected a number or null, got '1.5'"),
    ({"features": [*ROW[:5], True]}, 400, "column 'feature_5', row 0: expected a number or null, got True"),
    ({"instances": [ROW, [*ROW[:5], [1.0]]]}, 400, "Expected `bool | int | float | str | null`, got `array`"),
    ({"features": {c: 0.5 for c in COLS[1:]}}, 400, "row 0: missing column(s) 'feature_0'"),
    (
        {"instances": [dict(zip(COLS, ROW, strict=True)), {**dict(zip(COLS, ROW, strict=True)), "zz": 1}]},
        400,
        "row 1: unknown column(s) 'zz'",
    ),
    ({"instances": [dict(zip(COLS, ROW, strict=True)), ROW]}, 400, "mixes named records and lists"),
    ({"instances": []}, 400, "expected at least one row, got 0"),
    ({"instances": [ROW] * (MAX_ROWS + 1)}, 413, f"too many rows: got {MAX_ROWS + 1}, the maximum per request is"),
    ({"features": ROW, "extra": 1}, 400, "unknown field `extra`"),
    ({"features": ROW, "instances": [ROW]}, 400, "expected exactly one of 'features'"),
    ({}, 400, "expected exactly one of 'features'"),
    ([ROW], 400, "Expected `object`, got `array`"),
    ({"instances": ROW}, 400, "Expected `object | array`, got `float`"),
    (b'{"features": [0.5, 0.5', 400, "malformed JSON"),
    (b'{"features": [NaN, 1, 2, 3, 4, 5]}', 400, "NaN is not a JSON number; send null for a missing value"),
    (b'{"features": [1, -Infinity, 2, 3, 4, 5]}', 400, "-Infinity is not a JSON number"),
    (b'{"features": [1, 2, nan, 3, 4, 5]}', 400, "nan is not a JSON number"),
    (b'{"features": [1e999, 1, 2, 3, 4, 5]}', 400, "Number out of range"),
    (b"", 400, "empty request body"),
    (b"\xff\xfe", 400, "malformed JSON"),
    (b'{"instances": [' + b"[" * 5000 + b"]" * 5000 + b"]}", 400, ""),
    (b"x" * (MAX_BODY + 1), 413, f"request body too large: the limit is {MAX_BODY} bytes"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_PREDICT, ids=range(len(BAD_PREDICT)))
def test_bad_predict_bodies_answer_4xx_naming_the_problem(client, body, status, message):
    r = _post(client, "/predict", body)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


BAD_INVOCATIONS = [
    ({"dataframe_split": {"columns": COLS[:5], "data": [ROW[:5]]}}, 400, "missing feature column(s): feature_5"),
    ({"dataframe_split": {"columns": COLS, "data": [ROW[:5]]}}, 400, "data[0] has 5 values, expected 6"),
    (
        {"dataframe_split": {"columns": COLS, "data": [[*ROW[:5], "x"]]}},
        400,
        "column 'feature_5', row 0: expected a number",
    ),
    ({"dataframe_split": {"columns": COLS, "data": []}}, 400, "expected at least one row, got 0"),
    (
        {"dataframe_records": [dict(zip(COLS[1:], ROW, strict=False))]},
        400,
        "[0] is missing feature column(s): feature_0",
    ),
    ({"dataframe_records": [1, 2]}, 400, "Expected `object`, got `int`"),
    ({"instances": [ROW[:4]]}, 400, "instances[0]: expected 6 features per row, got 4"),
    ({"inputs": {c: [0.5] for c in COLS[:-1]}}, 400, "inputs is missing feature column(s): feature_5"),
    ({"inputs": {c: [0.5] * (2 if c == "feature_3" else 1) for c in COLS}}, 400, "different lengths"),
    ({"inputs": 3}, 400, "expected a list of rows, got int"),
    ({"instances": [[*ROW[:5], True]]}, 400, "column 'feature_5', row 0: expected a number or null, got True"),
    # JSON types are checked alike whatever the body shape: a boolean or a string is not a number
    (
        {"dataframe_split": {"columns": COLS, "data": [ROW, [*ROW[:5], True]]}},
        400,
        "dataframe_split: column 'feature_5', row 1: expected a number or null, got True",
    ),
    (
        {"dataframe_records": [dict(zip(COLS, [*ROW[:5], "1.5"], strict=True))]},
        400,
        "dataframe_records: column 'feature_5', row 0: expected a number or null, got '1.5'",
    ),
    (
        {"inputs": {c: [0.5, False if c == "feature_2" else 0.5] for c in COLS}},
        400,
        "inputs: column 'feature_2', row 1: expected a number or null, got False",
    ),
    ({"instances": [[*ROW[:5], float("inf")]]}, 400, "Infinity is not a JSON number; send null for a missing value"),
    ({"instances": [ROW] * (MAX_ROWS + 1)}, 413, "too many rows"),
    ({"instances": [ROW], "inputs": [ROW]}, 400, "exactly one of the keys 'dataframe_split', 'dataframe_records'"),
    ({"dataframe_splitt": {}}, 400, "unknown field `dataframe_splitt`"),
    (b"{", 400, "malformed JSON"),
    (b"x" * (MAX_BODY + 1), 413, "request body too large"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_INVOCATIONS, ids=range(len(BAD_INVOCATIONS)))
def test_bad_invocations_answer_like_mlflow_with_the_problem_named(client, body, status, message):
    r = _post(client, "/invocations", body)
    assert r.status_code == status, r.text
    assert r.json()["error_code"] in ("BAD_REQUEST", "RESOURCE_LIMIT_EXCEEDED")
    assert message in r.json()["message"]


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "message"),
    [
        (b"feature_0,feature_1\n1,2\n", "text/csv", 400, "the CSV body lacks feature column(s): 'feature_2'"),
        (
            ",".join(COLS).encode() + b"\n1,2,3,4,5,x\n",
            "text/csv",
            400,
            "column 'feature_5', row 0: expected a number, got 'x'",
        ),
        (b"", "text/csv", 400, "empty CSV body: expected a header line and at least one data row"),
        (b"a,b", "text/plain", 415, "unsupported content type 'text/plain'"),
        (b"{}", "application/json; charset=latin-1", 415, "only UTF-8"),
    ],
)
def test_invocations_content_types(client, raw, content_type, status, message):
    r = _post(client, "/invocations", raw, content_type)
    assert r.status_code == status and message in r.json()["message"], r.text


def test_a_csv_body_with_an_unclosed_quote_is_refused(client):
    body = ",".join(COLS) + '\n0.1,0.2,0.3,0.4,0.5,"0.6\n' + ",".join(["0.5"] * 6) + "\n"
    r = _post(client, "/invocations", body.encode(), "text/csv")
    assert r.status_code == 400 and "column 'feature_5' is never closed" in r.json()["message"], r.text


def test_invocations_input_formats_agree(client, predictor, rows):
    x = rows[:9]
    names = list(predictor.feature_names)
    frame = pd.DataFrame(x.astype(np.float64), columns=names)
    shuffled = frame[names[::-1]].assign(id=[f"r{i}" for i in range(9)])  # by name, extra column ignored
    bodies = [
        {"dataframe_split": json.loads(shuffled.to_json(orient="split"))},
        {"dataframe_records": json.loads(shuffled.to_json(orient="records"))},
        {"instances": as_json_rows(x)},
        {"inputs": as_json_rows(x)},
        {"inputs": {c: frame[c].tolist() for c in names}},
        {"instances": frame.to_dict(orient="records"), "params": {"ignored": 1}},
    ]
    answers = [_post(client, "/invocations", b).json() for b in bodies]
    buf = io.StringIO()
    shuffled.to_csv(buf, index=False)
    answers.append(_post(client, "/invocations", buf.getvalue().encode(), "text/csv").json())
    expected = predictor.predict_frame(frame).to_dict(orient="records")
    for a in answers:
        assert a == {"predictions": expected}


def test_random_garbage_never_gets_a_5xx(client):
    """Mutated valid bodies (types swapped, keys renamed, bytes cut or flipped) always answer 4xx."""
    rng = random.Random(0)
    junk: list[Any] = ["x", True, None, [], {}, [[]], -1e308, 1e308, 10**30, "NaN", [["a"]], {"a": [1]}]

    def mutate(value: Any) -> Any:
        if isinstance(value, dict) and value and rng.random() < 0.5:
            key = rng.choice(list(value))
            out = dict(value)
            if rng.random() < 0.3:
                out[key + "x"] = out.pop(key)
            else:
                out[key] = mutate(out[key])
            return out
        if isinstance(value, list) and value and rng.random() < 0.6:
            out = list(value)
            i = rng.randrange(len(out))
            out[i] = mutate(out[i])
            return out
        return rng.choice(junk)

    seeds = [
        ("/predict", {"features": ROW}),
        ("/predict", {"instances": [ROW, ROW]}),
        ("/invocations", {"dataframe_split": {"columns": COLS, "data": [ROW]}}),
        ("/invocations", {"dataframe_records": [dict(zip(COLS, ROW, strict=True))]}),
        ("/invocations", {"inputs": {c: [0.1] for c in COLS}}),
    ]
    csv_seed = (",".join(COLS) + "\n" + ",".join(map(str, ROW)) + "\n").encode()
    statuses = set()
    for _ in range(500):
        path, body = rng.choice(seeds)
        content_type = "application/json"
        raw = json.dumps(mutate(body)).encode()
        if rng.random() < 0.15:
            path, content_type, raw = "/invocations", "text/csv", csv_seed
        if rng.random() < 0.3:
            cut = rng.randrange(len(raw))
            raw = raw[:cut] + bytes([rng.choice(b'x,\n"-.e\xff0')]) + raw[cut + 1 :]
        r = _post(client, path, raw, content_type)
        statuses.add(r.status_code)
        assert r.status_code < 500, (path, raw, r.text)
    assert client.get("/health").status_code == 200
    assert statuses - {200} and statuses <= {200, 400, 413}


def test_metrics_count_rows_and_statuses(client):
    def value(text: str, line_start: str) -> float:
        for line in text.splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    rows_key = 'mlp_jax_rows_predicted_total{endpoint="predict"}'
    bad_key = 'mlp_jax_http_requests_total{method="POST",path="/predict",status="400"}'
    before = client.get("/metrics").text
    assert client.post("/predict", json={"instances": [ROW] * 5}).status_code == 200
    assert client.post("/predict", json={"features": ROW[:2]}).status_code == 400
    after = client.get("/metrics").text
    assert value(after, rows_key) - value(before, rows_key) == 5
    assert value(after, bad_key) - value(before, bad_key) == 1


# ----------------------------------------------------------------------------- startup


@pytest.mark.slow
def test_missing_model_fails_at_startup_with_a_nonzero_exit(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mlp_jax.serve", "--model", str(tmp_path / "nope"), "--port", str(free_port())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert f"cannot serve --model {tmp_path / 'nope'}" in out.stderr and "does not exist" in out.stderr


def test_a_port_in_use_or_out_of_range_fails_at_startup_with_one_line(trained_workdir, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve.main(["--model", str(trained_workdir), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in err and "listening" not in err
    assert serve.check_bind("127.0.0.1", 0) is None
    assert "cannot resolve --host" in serve.check_bind("no-such-host.invalid", 0)
    with pytest.raises(SystemExit) as exit_info:
        serve.main(["--port", "70000"])
    assert exit_info.value.code == 2
    assert "--port must be at most 65535, got 70000" in capsys.readouterr().err


def test_not_a_checkpoint_and_bad_arguments_fail_at_startup(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert serve.main(["--model", str(tmp_path)]) == 1
    assert "not a checkpoint" in capsys.readouterr().err
    assert serve.main(["--model", str(tmp_path / "notes.txt")]) == 1
    assert "is a file, not a checkpoint folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        serve.main(["--workers", "0"])
    assert exit_info.value.code == 2
    assert "--workers must be positive" in capsys.readouterr().err


# ----------------------------------------------------------------------------- a registered model

MODEL = "tiny-model"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """A SQLite store with one tracked tiny run registered as ``tiny-model`` version 1 (champion)."""
    folder = tmp_path_factory.mktemp("serve-registry")
    csv = write_tiny_csv(folder / "tiny.csv")
    with pytest.MonkeyPatch.context() as mp:
        uri = use_store(mp, folder)
        summary = runner.run(tracked(folder, csv, "run", **{"train.epochs": "2"}), progress=False)
        assert summary["model_version"] in (1, "1") and summary["champion"]
        yield SimpleNamespace(folder=folder, csv=csv, uri=uri, model_uri=f"models:/{MODEL}@champion")


@pytest.mark.slow
def test_service_batch_and_pyfunc_agree_on_a_registered_model(registry):
    """`serve` (2 workers) and `predict` on models:/NAME@champion, and MLflow's pyfunc: the same numbers."""
    import mlflow

    frame = pd.read_csv(registry.csv).drop(columns=["target"]).head(400)
    frame.insert(0, "id", [f"row-{i}" for i in range(len(frame))])
    frame.to_csv(registry.folder / "in.csv", index=False)
    pyfunc = mlflow.pyfunc.load_model(registry.model_uri).predict(frame.drop(columns=["id"]))

    batch = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlp_jax.predict",
            "--model",
            registry.model_uri,
            "--input",
            "in.csv",
            "--output",
            "out.csv",
            "--no-progress",
        ],
        cwd=registry.folder,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert batch.returncode == 0, batch.stderr
    out = pd.read_csv(registry.folder / "out.csv")
    assert list(out.columns) == ["id", "prediction", "proba_0", "proba_1"]
    assert out["id"].tolist() == frame["id"].tolist()

    port = free_port()
    proc = spawn(
        [sys.executable, "-m", "mlp_jax.serve", "--model", registry.model_uri, "--port", str(port), "--workers", "2"],
        registry.folder,
        dict(__import__("os").environ),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/ready", proc, timeout=300)  # two workers each compile: slow beside other tests
        features = frame.drop(columns=["id"])
        with httpx.Client(base_url=url, timeout=30) as http:
            meta = http.get("/metadata").json()
            predicted = http.post("/predict", json={"instances": features.to_numpy().tolist()}).json()
            split = json.loads(frame.to_json(orient="split", index=False))
            invoked = http.post("/invocations", json={"dataframe_split": split}).json()["predictions"]
            for _ in range(6):  # spread over both workers
                http.post("/predict", json={"features": features.iloc[0].tolist()})
            metrics = http.get("/metrics").text
    finally:
        stop(proc)
    log = proc.stdout.read() if proc.stdout else ""
    assert f"model {registry.model_uri} (name {MODEL}, version 1, step" in log
    assert "input width 6, classes [0, 1]" in log
    assert meta["name"] == MODEL and meta["version"] == "1" and meta["source"] == registry.model_uri

    reference = pyfunc[["proba_0", "proba_1"]].to_numpy(np.float32)
    assert np.array_equal(np.float32(predicted["probabilities"]), reference)
    assert np.array_equal(np.float32([[r["proba_0"], r["proba_1"]] for r in invoked]), reference)
    assert np.array_equal(out[["proba_0", "proba_1"]].to_numpy(np.float32), reference)
    assert predicted["predictions"] == out["prediction"].tolist() == pyfunc["prediction"].tolist()
    assert [r["prediction"] for r in invoked] == pyfunc["prediction"].tolist()
    # the two workers' counters are summed: 400 + 400 + 6 rows
    assert 'mlp_jax_rows_predicted_total{endpoint="predict"} 406.0' in metrics


def test_invocations_answers_exactly_as_mlflow_scoring_server(registry):
    """Same bodies through MLflow's own scoring function and our /invocations: identical JSON."""
    import mlflow
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model(registry.model_uri)
    schema = model.metadata.get_input_schema()
    frame = pd.read_csv(registry.csv).drop(columns=["target"]).head(25)
    bodies = [
        {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))},
        {"dataframe_records": json.loads(frame.to_json(orient="records"))},
        {"inputs": {c: frame[c].tolist() for c in frame.columns}},
    ]
    with TestClient(serve.create_app(registry.model_uri)) as ours:
        for body in bodies:
            text = json.dumps(body)
            theirs = scoring_server.invocations(text, "application/json", model, schema)
            assert theirs.status == 200, theirs.response
            mine = _post(ours, "/invocations", text.encode())
            assert mine.status_code == 200 and mine.json() == json.loads(theirs.response)
        csv_body = frame.to_csv(index=False)
        theirs = scoring_server.invocations(csv_body, "text/csv", model, schema)
        assert _post(ours, "/invocations", csv_body.encode(), "text/csv").json() == json.loads(theirs.response)


@pytest.mark.parametrize(
    ("model", "message"),
    [("models:/no-such-model@champion", "no-such-model"), (f"models:/{MODEL}@no-such-alias", "no-such-alias")],
)
def test_unknown_registry_name_or_alias_fails_at_startup(registry, capsys, model, message):
    assert serve.main(["--model", model, "--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert f"cannot serve --model {model}" in err and message in err


# ----------------------------------------------------------------------------- real tables (penguins)

PENGUIN = {
    "island": "Biscoe",
    "bill_length_mm": 45.1,
    "bill_depth_mm": 14.5,
    "flipper_length_mm": 215.0,
    "body_mass_g": 5000.0,
    "sex": "female",
    "year": 2008,
}


@pytest.fixture(scope="module")
def penguins(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return Predictor.load(trained_penguins(tmp_path_factory))


@pytest.fixture(scope="module")
def pg_client(penguins: Predictor) -> Iterator[TestClient]:
    with TestClient(serve.create_app(penguins, max_rows=MAX_ROWS, max_body_bytes=MAX_BODY)) as c:
        yield c


def _metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_named_records_with_nulls_and_unseen_categories_are_scored_and_counted(pg_client, penguins):
    assert set(PENGUIN) == set(penguins.feature_names)
    key = 'mlp_jax_unknown_categories_total{column="island"}'
    before = _metric(pg_client.get("/metrics").text, key)
    odd = {**PENGUIN, "island": "Atlantis", "sex": None, "bill_depth_mm": None}
    one = _post(pg_client, "/predict", {"features": odd})
    assert one.status_code == 200, one.text
    expected = penguins.predict_outputs([odd])[0]
    body = one.json()
    assert body["classes"] == list(penguins.classes) and body["prediction"] in penguins.classes
    assert np.array_equal(np.float32(body["probabilities"]), expected)
    many = _post(pg_client, "/predict", {"instances": [PENGUIN, odd, {**odd, "island": "Mars"}]})
    assert many.status_code == 200, many.text
    assert np.array_equal(np.float32(many.json()["probabilities"][1]), expected)
    after = _metric(pg_client.get("/metrics").text, key)
    assert after - before == 3  # one + two in the batch; an unseen value is never an error


def test_invocations_take_text_and_nulls_in_every_format(pg_client, penguins):
    frame = pd.read_csv(penguins_csv_path(), nrows=8).drop(columns=["species"])  # has NA cells
    records = json.loads(frame.to_json(orient="records"))
    bodies = [
        {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))},
        {"dataframe_records": records},
        {"instances": records},
        {"inputs": {c: [r[c] for r in records] for c in frame.columns}},
    ]
    expected = penguins.predict_frame(frame).to_dict(orient="records")
    for b in bodies:
        r = _post(pg_client, "/invocations", b)
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": expected}
    r = _post(pg_client, "/invocations", frame.to_csv(index=False).encode(), "text/csv")
    assert r.status_code == 200 and r.json() == {"predictions": expected}, r.text


def penguins_csv_path() -> Path:
    from tests.helpers import penguins_csv

    return penguins_csv()


TABLE_FAULTS = [
    ("/predict", {"features": {**PENGUIN, "bill_length_mm": "long"}}, "column 'bill_length_mm', row 0"),
    ("/predict", {"instances": [PENGUIN, {**PENGUIN, "body_mass_g": "heavy"}]}, "column 'body_mass_g', row 1"),
    ("/predict", {"features": {k: v for k, v in PENGUIN.items() if k != "sex"}}, "row 0: missing column(s) 'sex'"),
    ("/predict", {"instances": [PENGUIN, {**PENGUIN, "beak": 1}]}, "row 1: unknown column(s) 'beak'"),
    ("/predict", {"features": list(PENGUIN.values())}, "positional rows need every input column to be numeric"),
    ("/invocations", {"dataframe_records": [PENGUIN, {**PENGUIN, "year": "last"}]}, "column 'year', row 1"),
    ("/invocations", {"dataframe_records": [{k: v for k, v in PENGUIN.items() if k != "island"}]}, "island (row 0)"),
    ("/invocations", {"inputs": {**{k: [v] for k, v in PENGUIN.items()}, "flipper_length_mm": ["x"]}}, "row 0"),
    # a boolean or a numeric string in a numeric column of a model with text columns: refused as well
    ("/predict", {"features": {**PENGUIN, "bill_length_mm": True}}, "'bill_length_mm', row 0: expected a number"),
    ("/predict", {"instances": [PENGUIN, {**PENGUIN, "year": "2008"}]}, "'year', row 1: expected a number or null"),
    (
        "/invocations",
        {
            "dataframe_split": {
                "columns": list(PENGUIN),
                "data": [[True if k == "year" else v for k, v in PENGUIN.items()]],
            }
        },
        "column 'year', row 0: expected a number or null, got True",
    ),
]


@pytest.mark.parametrize(("path", "body", "message"), TABLE_FAULTS, ids=range(len(TABLE_FAULTS)))
def test_bad_values_and_columns_answer_4xx_naming_column_and_row(pg_client, path, body, message):
    r = _post(pg_client, path, body)
    assert r.status_code == 400, r.text
    text = r.json()["detail" if path == "/predict" else "message"]
    assert message in text


def _split(columns: list[str]) -> dict[str, Any]:
    return {"dataframe_split": {"columns": columns, "data": [[PENGUIN.get(c, 1) for c in columns]]}}


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (_split([*PENGUIN, "island"]), "application/json", "names 'island' more than once"),
        (_split(["year", *PENGUIN]), "application/json", "names 'year' more than once"),
        (b"island,sex,island\nBiscoe,male,Dream\n", "text/csv", "'island'"),
        (("\ufeff" + ",".join([*PENGUIN, "year"]) + "\n" + "1," * 7 + "1\n").encode(), "text/csv", "'year'"),
    ],
)
def test_a_repeated_column_answers_4xx_naming_it(pg_client, body, content_type, message):
    r = _post(pg_client, "/invocations", body, content_type)
    assert r.status_code == 400 and message in r.json()["message"], r.text
    if content_type == "text/csv":
        assert "more than once" in r.json()["message"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ({"columns": list(PENGUIN), "data": [list(PENGUIN.values())]}, "application/json; format=pandas-split"),
        ({"columns": list(PENGUIN), "data": [list(PENGUIN.values())]}, "application/json"),
        ([PENGUIN], "application/json; format=pandas-records"),
        ([PENGUIN], "application/json"),
        ({}, "application/json"),
    ],
)
def test_mlflow_1_bodies_get_the_four_keys_and_the_protocol_change(pg_client, body, content_type):
    r = _post(pg_client, "/invocations", body, content_type)
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert all(k in message for k in ("dataframe_split", "dataframe_records", "instances", "inputs"))
    assert "MLflow 2.0" in message


def test_csv_with_a_header_and_no_rows_says_so(pg_client):
    for raw in [",".join(PENGUIN).encode() + b"\n", ",".join(PENGUIN).encode()]:
        r = _post(pg_client, "/invocations", raw, "text/csv")
        assert r.status_code == 400 and "no rows" in r.json()["message"], r.text


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


DEEP = [
    ("/predict", b'{"instances": ' + _deep(1000) + b"}"),
    ("/predict", b'{"features": ' + _deep(1000) + b"}"),
    ("/predict", b'{"features": {"island": ' + _deep(1000) + b"}}"),
    ("/invocations", b'{"instances": ' + _deep(1000) + b"}"),
    ("/invocations", b'{"inputs": ' + _deep(1000) + b"}"),
    ("/invocations", b'{"inputs": {"island": ' + _deep(1000) + b"}}"),
    ("/invocations", b'{"dataframe_records": [{"island": ' + _deep(1000) + b"}]}"),
    ("/invocations", b'{"dataframe_split": {"columns": ["a"], "data": [' + _deep(1000) + b"]}}"),
    ("/invocations", b'{"params": {"a": ' + _deep(1000) + b"}}"),
    ("/invocations", b'{"instances": [' + b"[" * 300 + b"]" * 300 + b"]}"),  # below msgspec's limit
]


@pytest.mark.parametrize(("path", "raw"), DEEP, ids=range(len(DEEP)))
def test_deeply_nested_json_answers_4xx_on_every_key(pg_client, path, raw):
    r = _post(pg_client, path, raw)
    assert 400 <= r.status_code < 500, r.text
    text = r.json()["detail" if path == "/predict" else "message"]
    assert "nested too deeply" in text or "Expected" in text or "expected" in text


@pytest.mark.parametrize(
    ("path", "content_type", "accepted"),
    [
        ("/predict", "application/x-www-form-urlencoded", "application/json"),
        ("/predict", "text/csv", "application/json"),
        ("/predict", "multipart/form-data; boundary=x", "application/json"),
        ("/invocations", "application/x-www-form-urlencoded", "application/json, text/csv"),
        ("/invocations", "text/plain", "application/json, text/csv"),
    ],
)
def test_unsupported_content_types_answer_415_naming_the_accepted_ones(pg_client, path, content_type, accepted):
    r = pg_client.post(path, content=b"features=1&island=Biscoe", headers={"content-type": content_type})
    assert r.status_code == 415, r.text
    text = r.json()["detail" if path == "/predict" else "message"]
    assert "unsupported content type" in text and accepted in text


def test_an_unexpected_error_answers_500_and_logs_its_traceback(penguins, caplog, monkeypatch):
    app = serve.create_app(penguins, max_rows=MAX_ROWS, max_body_bytes=MAX_BODY)
    service = app.state.service

    def broken(rows: Any) -> np.ndarray:
        raise ZeroDivisionError("injected")

    monkeypatch.setattr(service, "encode", broken)
    monkeypatch.setattr(serve.log, "propagate", True)  # main() turns it off; caplog listens on the root
    with TestClient(app) as c, caplog.at_level(logging.ERROR, logger="mlp_jax.serve"):
        r = c.post("/predict", json={"features": PENGUIN})
        inv = c.post("/invocations", json={"dataframe_records": [PENGUIN]})
    assert r.status_code == 500 and "ZeroDivisionError" in r.json()["detail"]
    assert inv.status_code == 500 and inv.json()["error_code"] == "INTERNAL_ERROR"
    # one record per request (a record may reach caplog's list through more than one pytest handler)
    errors = list(
        {id(r): r for r in caplog.records if r.name == "mlp_jax.serve" and r.levelno == logging.ERROR}.values()
    )
    assert len(errors) == 2 and "/predict" in errors[0].getMessage() and "/invocations" in errors[1].getMessage()
    assert errors[0].exc_info and "injected" in caplog.text and "Traceback" in caplog.text


def test_openapi_describes_every_endpoint_and_the_docs_load_nothing_from_outside(pg_client):
    schema = pg_client.get("/schema/openapi.json").json()
    paths = schema["paths"]
    for path in ("/predict", "/invocations"):
        op = paths[path]["post"]
        assert "$ref" in json.dumps(op["requestBody"]) and "$ref" in json.dumps(op["responses"]["200"])
    for path in ("/metadata", "/health", "/ready"):
        assert "$ref" in json.dumps(paths[path]["get"]["responses"]["200"]), path
    components = set(schema["components"]["schemas"])
    assert {"Metadata", "InvocationsResponse", "Prediction", "RegressionPrediction", "InputColumn"} <= components
    import re

    page = pg_client.get("/schema/swagger")
    assert page.status_code == 200
    head = page.text.split("spec:", 1)[0]  # the page itself, before the embedded OpenAPI document
    assert not re.findall(r"(?:src|href)\s*=\s*['\"](?:https?:)?//", head), head
    for asset in re.findall(r"(?:src|href)\s*=\s*['\"]([^'\"]+)", head):
        assert pg_client.get(asset).status_code == 200, asset


def test_one_named_record_of_a_numeric_model_skips_the_dataframe(client, predictor, rows, monkeypatch):
    """All-numeric model: one named record is encoded as a list, without building a DataFrame.

    (The speed this buys is measured by benchmarks/serve_load.py, not here.)"""
    service = client.app.state.service
    row = as_json_rows(rows[:1])[0]
    record = dict(zip(predictor.feature_names, row, strict=True))
    expected = service.encode([row])

    class NoFrame(pd.DataFrame):  # still a type, for the isinstance checks on the way
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise AssertionError("a DataFrame was built for one named record")

    monkeypatch.setattr(pd, "DataFrame", NoFrame)
    assert np.array_equal(service.encode([record]), expected)
    with pytest.raises(AssertionError, match="DataFrame was built"):  # the probe does catch the slow path
        service.encode([record] * (FAST_RECORDS + 1))  # many records go through one DataFrame


# ----------------------------------------------------------------------------- regression


@pytest.fixture(scope="module")
def regression(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Predictor, TestClient, pd.DataFrame]]:
    workdir = trained_regression(tmp_path_factory)
    predictor = Predictor.load(workdir)
    frame = pd.read_csv(tmp_path_factory.getbasetemp() / "regression.csv").head(6)
    with TestClient(serve.create_app(predictor, max_rows=MAX_ROWS, max_body_bytes=MAX_BODY)) as c:
        yield predictor, c, frame[list(predictor.feature_names)]


def test_regression_answers_on_predict_and_invocations(regression):
    predictor, client, frame = regression
    assert predictor.task == "regression" and list(predictor.targets) == ["y1", "y2"]
    records = json.loads(frame.to_json(orient="records"))
    expected = predictor.predict_outputs(frame)
    one = _post(client, "/predict", {"features": records[0]})
    assert one.status_code == 200, one.text
    assert one.json() == {"prediction": expected[0].tolist(), "targets": ["y1", "y2"]}
    many = _post(client, "/predict", {"instances": records}).json()
    assert many == {"predictions": expected.tolist(), "targets": ["y1", "y2"]}
    reference = predictor.predict_frame(frame).to_dict(orient="records")
    assert list(reference[0]) == ["prediction_y1", "prediction_y2"]
    for body in ({"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}, {"instances": records}):
        r = _post(client, "/invocations", body)
        assert r.status_code == 200 and r.json() == {"predictions": reference}, r.text
    r = _post(client, "/invocations", frame.to_csv(index=False).encode(), "text/csv")
    assert r.json() == {"predictions": reference}
    meta = client.get("/metadata").json()
    assert meta["task"] == "regression" and meta["targets"] == ["y1", "y2"] and meta["classes"] == []
    # two targets: epoch metrics only in standardised units (one RMSE over both has no single unit)
    assert "val_rmse_standardised" in meta["metrics"] and "val_rmse" not in meta["metrics"]


@pytest.mark.slow
def test_single_target_regression_answers_one_number(tmp_path_factory):
    workdir = trained_once(
        tmp_path_factory,
        "regression-one",
        _regression_csv(tmp_path_factory),
        **{"data.target": "y1", "data.task": "regression"},
    )
    predictor = Predictor.load(workdir)
    row = pd.read_csv(_regression_csv(tmp_path_factory)).drop(columns=["y1"]).head(2)
    records = json.loads(row.to_json(orient="records"))
    with TestClient(serve.create_app(predictor)) as c:
        one = _post(c, "/predict", {"features": records[0]}).json()
        inv = _post(c, "/invocations", {"dataframe_records": records}).json()
        metrics = c.get("/metadata").json()["metrics"]
    expected = predictor.predict_outputs(row)[:, 0].tolist()
    assert one == {"prediction": expected[0], "targets": ["y1"]}
    assert inv == {"predictions": [{"prediction": v} for v in expected]}
    # epoch metrics are labelled standardised; the RMSE is also in y1's units: the run's own
    # best validation RMSE, computed from decoded predictions
    summary = json.loads((workdir / "summary.json").read_text())
    assert {"val_loss_standardised", "val_rmse_standardised", "train_loss_standardised"} <= set(metrics)
    assert "val_loss" not in metrics and metrics["epoch"] == summary["best_epoch"]
    assert metrics["val_rmse"] == pytest.approx(summary["best_val_rmse"], rel=1e-4)
    # the exported model (no Flax code, no Orbax) describes itself the same way
    from mlp_jax import artifact as A
    from mlp_jax.export import export_artifact, load_predictor

    out = tmp_path_factory.mktemp("export-one") / "exported"
    export_artifact(A.load(workdir), out, onnx=False)
    with TestClient(serve.create_app(load_predictor(out))) as c:
        r = c.get("/metadata")
    assert r.status_code == 200 and r.json()["metrics"] == metrics


def _regression_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    csv = tmp_path_factory.getbasetemp() / "regression.csv"
    if not csv.exists():
        write_regression_csv(csv)
    return csv
