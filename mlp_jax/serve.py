"""The prediction service: a Litestar app over one :class:`~mlp_jax.predictor.Predictor`.

``python -m mlp_jax.serve --model MODEL [--host 127.0.0.1] [--port 8000] [--workers N]``
serves a workdir, a step folder or an MLflow model URI (``models:/mlp-jax@champion``) on
uvicorn. :func:`create_app` is the app factory for tests and other ASGI servers.

Endpoints:

- ``POST /predict``: ``{"features": [..]}`` (one row) or ``{"instances": [[..], ..]}``.
- ``POST /invocations``: MLflow's scoring protocol (``dataframe_split``, ``dataframe_records``,
  ``instances``, ``inputs``; JSON or CSV), answered as MLflow's scoring server answers a
  pyfunc that returns a DataFrame: ``{"predictions": [{"prediction": .., "proba_<c>": ..}]}``.
- ``GET /health``, ``GET /ready``, ``GET /metadata``, ``GET /metrics`` (Prometheus),
  OpenAPI under ``/schema``.

Every input is validated before it reaches the model and every bad input answers 4xx with
a message naming the problem. The model's forward pass is compiled for a fixed set of
batch sizes when the app is built, so no request compiles anything.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from litestar import Litestar, Request, Response, get, post
from litestar.dto import MsgspecDTO
from litestar.exceptions import ClientException, HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.static_files import create_static_files_router
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from mlp_jax.batcher import DEFAULT_MAX_QUEUE_ROWS, DEFAULT_MAX_WAIT_S, MicroBatcher, QueueFull
from mlp_jax.export import load_predictor
from mlp_jax.predictor import Predictor, PredictorError
from mlp_jax.schemas import (
    DataframeSplit,
    Health,
    InvocationsRequest,
    InvocationsResponse,
    Metadata,
    MlflowError,
    Prediction,
    Predictions,
    PredictRequest,
    Problem,
    Readiness,
    RegressionPrediction,
    RegressionPredictions,
)

log = logging.getLogger("mlp_jax.serve")

DEFAULT_MODEL = "checkpoints/baseline"
DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
#: Batches above this many rows run in a worker thread so the event loop keeps answering.
OFFLOAD_ROWS = 1024

# ----------------------------------------------------------------------------- metrics

KNOWN_PATHS = frozenset({"/predict", "/invocations", "/health", "/ready", "/metadata", "/metrics"})
# A registry of our own, not prometheus_client's global one: with --workers, multiprocessing
# runs this file a second time as __mp_main__ in each worker, and a second registration of
# the same names in the global registry would raise.
REGISTRY = CollectorRegistry()
for _collector in (ProcessCollector, PlatformCollector, GCCollector):
    _collector(registry=REGISTRY)
REQUESTS = Counter(
    "mlp_jax_http_requests", "HTTP requests by method, path and status", ["method", "path", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "mlp_jax_http_request_duration_seconds",
    "Time from request to the end of the response, by path",
    ["path"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
ROWS = Counter("mlp_jax_rows_predicted", "Rows scored, by endpoint", ["endpoint"], registry=REGISTRY)
UNKNOWN_CATEGORIES = Counter(
    "mlp_jax_unknown_categories",
    "Values of a categorical column not seen in training (scored through the unknown slot), by column",
    ["column"],
    registry=REGISTRY,
)
# the micro-batcher's two histograms
BATCH_ROWS = Histogram(
    "mlp_jax_batch_rows",
    "Rows per coalesced model call",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "mlp_jax_queue_wait_seconds",
    "Time a request waited in the micro-batcher's queue before its model call started",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
    registry=REGISTRY,
)

ASGIApp = Callable[[MutableMapping[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Any]


def metrics_middleware(app: ASGIApp) -> ASGIApp:
    """Counts requests by status and times them (Litestar's exception handler sits inside, so 4xx are seen)."""

    async def middleware(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_and_note)
        finally:
            path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
            REQUESTS.labels(scope["method"], path, str(status)).inc()
            LATENCY.labels(path).observe(time.perf_counter() - start)

    return middleware


def metrics_text() -> bytes:
    """Prometheus exposition of this process, or of every worker when ``PROMETHEUS_MULTIPROC_DIR`` is set."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


# ----------------------------------------------------------------------------- input parsing
#
# Plain functions from (body bytes, content type) to rows, testable without a server, as
# MLflow's scoring server does it. Rows are what Predictor.encode takes: a DataFrame, a list
# of named records, or positional lists (all-numeric models only).

ACCEPTED_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
MLFLOW_2_HINT = (
    "expected a JSON object with exactly one of the keys 'dataframe_split', 'dataframe_records', 'instances', "
    "'inputs' (the scoring protocol changed in MLflow 2.0: wrap a pandas-split body as "
    '{"dataframe_split": {"columns": [..], "data": [..]}} and a list of records as {"dataframe_records": [..]}; '
    "the format= content-type parameter is no longer read)"
)
_SCALARS = (int, float, str, bool, type(None))


class InvalidInput(ValueError):
    """A request body that cannot be scored; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _media_type(content_type: str, accepted: str) -> tuple[str, dict[str, str]]:
    mime, *params = (p.strip() for p in (content_type or "").split(";"))
    options = {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in params if p)}
    if options.get("charset", "utf-8").lower() != "utf-8":
        raise InvalidInput(f"only UTF-8 is supported, got charset={options['charset']}", 415)
    mime = mime.lower()
    if mime and mime not in accepted.split(", "):
        raise InvalidInput(f"unsupported content type {content_type!r}: send {accepted}", 415)
    return mime, options


def decode_json(body: bytes, type: Any) -> Any:
    """msgspec's strict decode; every failure (nesting too deep included) is an InvalidInput."""
    try:
        return msgspec.json.decode(body, type=type)
    except RecursionError:
        raise InvalidInput("JSON nested too deeply: a value holds arrays or objects hundreds of levels deep") from None
    except msgspec.ValidationError as e:  # a subclass of DecodeError: first
        raise InvalidInput(f"invalid request body: {e}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as e:  # bad UTF-8 in keys surfaces as the latter
        raise InvalidInput(f"malformed JSON: {e}{_non_json_number(body, str(e))}") from None


_BYTE = re.compile(r"\(byte (\d+)\)")
_NON_JSON = re.compile(rb"-?(NaN|nan|Infinity|infinity|inf|Inf)\b")


def _non_json_number(body: bytes, message: str) -> str:
    """A hint when the bad character starts NaN or Infinity, which Python's json writes but JSON lacks."""
    m = _BYTE.search(message)
    if m is None:
        return ""
    at = int(m.group(1))
    # msgspec points at the token's first byte, or a few bytes on when it first read a prefix as null
    for start in range(max(at - 5, 0), at + 1):
        bad = _NON_JSON.match(body, start)
        if bad and (start == 0 or not body[start - 1 : start].isalnum()):
            return f": {bad.group().decode()} is not a JSON number; send null for a missing value (finite numbers pass)"
    return ""


def parse_predict(body: bytes, content_type: str) -> PredictRequest:
    """A ``/predict`` body with exactly one of ``features`` / ``instances``."""
    _media_type(content_type, "application/json")
    if not body:
        raise InvalidInput("empty request body: expected a JSON object with 'features' or 'instances'")
    req = decode_json(body, PredictRequest)
    if (req.features is None) == (req.instances is None):
        raise InvalidInput("expected exactly one of 'features' (one row) or 'instances' (a list of rows)")
    if req.instances and not (
        all(isinstance(r, dict) for r in req.instances) or all(isinstance(r, list) for r in req.instances)
    ):
        raise InvalidInput("instances: mixes named records and lists of values; send one kind")
    return req


def _check_cells(row: list[Any], what: str) -> None:
    for j, v in enumerate(row):
        if not isinstance(v, _SCALARS):
            raise InvalidInput(f"{what}, value {j}: expected a number, text or null, got {type(v).__name__}")


def check_numbers(values: list[Any], column: str, what: str) -> None:
    """A numeric column's cells in a JSON body: numbers or null only.

    JSON has types, so a string ("1.5") or a boolean (true) where a number belongs is the
    client's mistake, refused by name, on every route and body shape alike (a CSV body or
    file, which has no types, is read as training read it instead).
    """
    for i, v in enumerate(values):
        t = type(v)
        if not (v is None or t is float or t is int):
            raise InvalidInput(f"{what}column {column!r}, row {i}: expected a number or null, got {v!r:.40}")


def _frame_from_records(
    records: list[Any], features: tuple[str, ...], what: str, numeric: frozenset[str] = frozenset()
) -> Any:
    import pandas as pd

    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InvalidInput(f"{what}[{i}]: expected an object of column -> value, got {type(rec).__name__}")
        missing = [f for f in features if f not in rec]
        if missing:
            raise InvalidInput(f"{what}[{i}] is missing feature column(s): {', '.join(missing)} (row {i})")
        _check_cells([rec[f] for f in features], f"{what}[{i}]")
    columns = {f: [r[f] for r in records] for f in features}
    for f in numeric:
        check_numbers(columns[f], f, f"{what}: ")
    return pd.DataFrame({f: pd.Series(v, dtype=object) for f, v in columns.items()})


def _frame_from_split(split: DataframeSplit, features: tuple[str, ...], numeric: frozenset[str] = frozenset()) -> Any:
    import pandas as pd

    seen: set[str] = set()
    for c in split.columns:
        if c in seen:
            raise InvalidInput(f"dataframe_split.columns names {c!r} more than once; each column must appear once")
        seen.add(c)
    missing = [f for f in features if f not in seen]
    if missing:
        raise InvalidInput(f"dataframe_split is missing feature column(s): {', '.join(missing)}")
    width = len(split.columns)
    for i, row in enumerate(split.data):
        if len(row) != width:
            raise InvalidInput(f"dataframe_split.data[{i}] has {len(row)} values, expected {width} (one per column)")
    where = {c: j for j, c in enumerate(split.columns)}
    columns = {f: [r[where[f]] for r in split.data] for f in features}
    for f in numeric:
        check_numbers(columns[f], f, "dataframe_split: ")
    return pd.DataFrame({f: pd.Series(v, dtype=object) for f, v in columns.items()})


def _rows_from_tensor(value: Any, features: tuple[str, ...], what: str, numeric: frozenset[str] = frozenset()) -> Any:
    """``instances`` / ``inputs``: a list of rows, a list of records, or columns ``{name: [values]}``."""
    import pandas as pd

    if isinstance(value, dict):
        missing = [f for f in features if f not in value]
        if missing:
            raise InvalidInput(f"{what} is missing feature column(s): {', '.join(missing)}")
        cols = [value[f] for f in features]
        if not all(isinstance(c, list) for c in cols):
            raise InvalidInput(f"{what}: expected each column to be a list of values")
        lengths = {len(c) for c in cols}
        if len(lengths) != 1:
            raise InvalidInput(f"{what}: columns have different lengths {sorted(lengths)}")
        for f, c in zip(features, cols, strict=True):
            _check_cells(c, f"{what}[{f!r}]")
            if f in numeric:
                check_numbers(c, f, f"{what}: ")
        return pd.DataFrame({f: pd.Series(c, dtype=object) for f, c in zip(features, cols, strict=True)})
    if not isinstance(value, list):
        raise InvalidInput(f"{what}: expected a list of rows, got {type(value).__name__}")
    if value and all(isinstance(r, dict) for r in value):
        return _frame_from_records(value, features, what, numeric)
    for i, r in enumerate(value):
        if not isinstance(r, list):
            raise InvalidInput(f"{what}[{i}]: expected a row (a list of {len(features)} values), got {r!r:.80}")
        if len(r) != len(features):
            raise InvalidInput(f"{what}[{i}]: expected {len(features)} features per row, got {len(r)}")
        _check_cells(r, f"{what}[{i}]")
    return value


def parse_invocations(
    body: bytes, content_type: str, features: tuple[str, ...], numeric: frozenset[str] = frozenset()
) -> Any:
    """Rows from an MLflow scoring request (JSON or CSV); InvalidInput names what is wrong.

    ``numeric``: the columns whose JSON cells must be numbers or null (:func:`check_numbers`).
    """
    mime, options = _media_type(content_type, "application/json, text/csv")
    if mime == "text/csv":
        from mlp_jax.data import DataError, read_csv_for_prediction, read_header

        try:
            if not body.strip().partition(b"\n")[2].strip():  # a header line at most
                read_header(body)  # refuses a repeated column first
                raise InvalidInput("the CSV body has a header but no rows: expected at least one data row")
            frame = read_csv_for_prediction(body, features)  # the header read exactly as training reads it
        except DataError as e:
            raise InvalidInput(str(e)) from None
        if len(frame) == 0:
            raise InvalidInput("the CSV body has a header but no rows: expected at least one data row")
        return frame
    if "format" in options or body.lstrip()[:1] == b"[":
        raise InvalidInput(MLFLOW_2_HINT)
    if not body:
        raise InvalidInput(f"empty request body: {MLFLOW_2_HINT}")
    try:
        req = decode_json(body, InvocationsRequest)
    except InvalidInput as e:
        if any(f"unknown field `{k}`" in str(e) for k in ("columns", "data", "index")):
            raise InvalidInput(f"{e}; {MLFLOW_2_HINT}") from None
        raise
    given = [k for k in ACCEPTED_KEYS if getattr(req, k) is not None]
    if len(given) != 1:
        raise InvalidInput(f"got {given or 'none of them'}: {MLFLOW_2_HINT}")
    key = given[0]
    if req.dataframe_split is not None:
        return _frame_from_split(req.dataframe_split, features, numeric)
    if req.dataframe_records is not None:
        return _frame_from_records(req.dataframe_records, features, key, numeric)
    return _rows_from_tensor(getattr(req, key), features, key, numeric)


# ----------------------------------------------------------------------------- bodies (DTOs)


class PredictBody(MsgspecDTO[PredictRequest]):
    """Decodes ``/predict`` with :func:`parse_predict`; the OpenAPI schema stays :class:`PredictRequest`."""

    def decode_bytes(self, value: bytes) -> Any:
        try:
            return parse_predict(value, self.asgi_connection.headers.get("content-type", ""))
        except InvalidInput as e:
            raise ClientException(detail=str(e), status_code=e.status) from None


class InvocationsBody(MsgspecDTO[InvocationsRequest]):
    """Turns an ``/invocations`` body (JSON or CSV) into rows with :func:`parse_invocations`.

    The handler receives the rows, not an :class:`InvocationsRequest`; the DTO exists so the
    OpenAPI document describes the body.
    """

    def decode_bytes(self, value: bytes) -> Any:
        conn = self.asgi_connection
        try:
            service = conn.app.state.service
            return parse_invocations(
                value, conn.headers.get("content-type", ""), service.predictor.feature_names, service.numeric
            )
        except InvalidInput as e:
            raise ClientException(detail=str(e), status_code=e.status) from None


# ----------------------------------------------------------------------------- the service


class Service:
    """The predictor plus the request limits; encodes rows and runs them (through the micro-batcher)."""

    def __init__(self, predictor: Predictor, max_rows: int):
        self.predictor = predictor
        self.max_rows = max_rows
        self.ready = False
        self.batcher: MicroBatcher | None = None  # set by the app's lifespan
        self.max_body_bytes = DEFAULT_MAX_BODY_BYTES
        self.batch_settings: tuple[float, int] | None = None  # (max wait s, max queued rows); None = no batching
        self.columns = predictor.output_columns()  # one /invocations record
        self.classes = list(predictor.classes)
        self.targets = list(predictor.targets)
        # One row (a named record, or positional values of an all-numeric model): encoded in plain
        # Python, without pandas or per-column numpy (same bits; anything unusual takes the general path).
        # None when the predictor's input is not the model matrix (an exported folder takes raw columns).
        self._one_record = predictor.record_encoder()
        self._names = predictor.feature_names
        self.numeric = frozenset(predictor.numeric_columns)  # JSON cells there: numbers or null only (check_numbers)

    def check_count(self, n: int) -> None:
        if n == 0:
            raise InvalidInput("expected at least one row, got 0")
        if n > self.max_rows:
            raise InvalidInput(f"too many rows: got {n}, the maximum per request is {self.max_rows}", 413)

    def encode(self, rows: Any) -> np.ndarray:
        """The model matrix; unseen categories are counted per column, bad values are InvalidInput."""
        names = self.predictor.feature_names
        if (
            self.predictor.positional
            and isinstance(rows, list)
            and len(rows) == 1
            and isinstance(rows[0], dict)
            and len(rows[0]) == len(names)
            and all(f in rows[0] for f in names)
        ):  # one record of an all-numeric model: as a list, without a DataFrame (~0.5 ms saved)
            rows = [[rows[0][f] for f in names]]
        if self._one_record is not None and isinstance(rows, list) and len(rows) == 1:
            row = rows[0]
            if type(row) is list and self.predictor.positional and len(row) == len(self._names):
                row = dict(zip(self._names, row, strict=True))
            fast = self._one_record(row) if type(row) is dict else None
            if fast is not None:
                x, unknown = fast
                for column, k in unknown.items():
                    if k:
                        UNKNOWN_CATEGORIES.labels(column).inc(k)
                return x
        if isinstance(rows, list) and rows and isinstance(rows[0], list) and self.predictor.positional:
            for i, row in enumerate(rows):  # numpy would read "1.5" and True as numbers
                for j, v in enumerate(row):
                    if not (v is None or type(v) is float or type(v) is int):
                        col = names[j] if j < len(names) else f"#{j}"
                        raise InvalidInput(f"column {col!r}, row {i}: expected a number or null, got {v!r:.40}")
        if isinstance(rows, list) and rows and isinstance(rows[0], dict):  # named JSON records (/predict)
            for f in self.numeric:
                check_numbers([r.get(f) for r in rows if isinstance(r, dict)], f, "")
        try:
            x, unknown = self.predictor.encode_counted(rows)
        except PredictorError as e:
            raise InvalidInput(str(e)) from None
        for column, k in unknown.items():
            if k:
                UNKNOWN_CATEGORIES.labels(column).inc(k)
        return x

    async def run(self, rows: Any, n: int, endpoint: str) -> np.ndarray:
        """Rows -> model outputs; large requests are encoded (and, without a batcher, run) off the event loop."""
        self.check_count(n)
        if self.batcher is not None:  # a full queue answers 503 before the rows are encoded (cheap overload)
            self.batcher.admit(n)
        import anyio.to_thread

        x = await anyio.to_thread.run_sync(self.encode, rows) if n > OFFLOAD_ROWS else self.encode(rows)
        if self.batcher is not None:  # QueueFull propagates to the 503 handler
            out = await self.batcher.submit(x)
        elif n > OFFLOAD_ROWS:
            out = await anyio.to_thread.run_sync(self.predictor.run_encoded, x)
        else:
            out = self.predictor.run_encoded(x)
        ROWS.labels(endpoint).inc(n)
        return out

    def answer(self, out: np.ndarray, one: bool) -> Any:
        """The ``/predict`` answer."""
        if self.predictor.task == "classification":
            labels = self.predictor.labels(out)
            probs, spread = self.predictor.split(out)
            if one:
                return Prediction(
                    labels[0], probs[0].tolist(), self.classes, None if spread is None else spread[0].tolist()
                )
            return Predictions(labels, probs.tolist(), self.classes, None if spread is None else spread.tolist())
        values, spread = self.predictor.split(out)
        single = len(self.targets) == 1
        pred = values[:, 0].tolist() if single else values.tolist()
        std = None if spread is None else (spread[:, 0].tolist() if single else spread.tolist())
        if one:
            return RegressionPrediction(pred[0], self.targets, None if std is None else std[0])
        return RegressionPredictions(pred, self.targets, std)

    def records(self, out: np.ndarray) -> InvocationsResponse:
        """The ``/invocations`` answer: one record per row, as MLflow answers for a DataFrame."""
        keys = self.columns
        if self.predictor.task == "classification":
            rows = [(lab, *p) for lab, p in zip(self.predictor.labels(out), out.tolist(), strict=True)]
        else:
            rows = out.tolist()
        return InvocationsResponse([dict(zip(keys, r, strict=True)) for r in rows])


# ----------------------------------------------------------------------------- API docs, offline


def docs_config() -> OpenAPIConfig:
    """OpenAPI under ``/schema``; the Swagger UI page loads its scripts from this server.

    The assets come from the ``swagger-ui-bundle`` package (served under :data:`DOCS_ASSETS`),
    so the docs work without the internet. Without the package, Litestar's CDN default is used.
    """
    from litestar.openapi.plugins import SwaggerRenderPlugin

    if _swagger_assets() is None:
        log.warning("swagger-ui-bundle is not installed: /schema/swagger loads its scripts from a CDN")
        plugin = SwaggerRenderPlugin()
    else:
        plugin = SwaggerRenderPlugin(
            js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{DOCS_ASSETS}/favicon-32x32.png'>",
        )
    return OpenAPIConfig(title="mlp-jax prediction service", version="1.0.0", path="/schema", render_plugins=[plugin])


DOCS_ASSETS = "/schema-assets"


def _swagger_assets() -> Path | None:
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


# ----------------------------------------------------------------------------- app


# ----------------------------------------------------------------------------- handlers
# Module-level handlers over the app's Service (``request.app.state.service``): create_app only wires them.


def _service(request: Request[Any, Any, Any]) -> Service:
    return request.app.state.service


@post("/predict", status_code=200, dto=PredictBody, return_dto=None, summary="Predict one row or many")
async def predict(
    request: Request[Any, Any, Any], data: PredictRequest | None = None
) -> Prediction | Predictions | RegressionPrediction | RegressionPredictions:
    if data is None:
        raise ClientException("empty request body: expected a JSON object with 'features' or 'instances'")
    service = _service(request)
    rows = [data.features] if data.features is not None else data.instances
    try:
        return service.answer(await service.run(rows, len(rows), "predict"), data.features is not None)
    except InvalidInput as e:
        raise ClientException(detail=str(e), status_code=e.status) from None


INVOCATIONS_SUMMARY = "MLflow scoring protocol (dataframe_split, dataframe_records, instances, inputs; JSON or CSV)"


@post("/invocations", status_code=200, dto=InvocationsBody, return_dto=None, summary=INVOCATIONS_SUMMARY)
async def invocations(request: Request[Any, Any, Any], data: InvocationsRequest | None = None) -> InvocationsResponse:
    if data is None:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() == "text/csv":
            raise ClientException("empty CSV body: expected a header line and at least one data row")
        raise ClientException(f"empty request body: {MLFLOW_2_HINT}")
    service = _service(request)
    try:
        return service.records(await service.run(data, len(data), "invocations"))
    except InvalidInput as e:
        raise ClientException(detail=str(e), status_code=e.status) from None


@get("/health", summary="Liveness")
async def health() -> Health:
    return Health("alive")


@get("/ready", summary="Readiness: model loaded and compiled for every bucket")
async def ready(request: Request[Any, Any, Any]) -> Response[Readiness]:
    service = _service(request)
    p = service.predictor
    return Response(
        Readiness(service.ready, p.name, p.version, list(p.buckets)), status_code=200 if service.ready else 503
    )


@get("/metadata", summary="Model name, version, task, input columns, classes or targets, test metrics")
async def metadata(request: Request[Any, Any, Any]) -> Metadata:
    service = _service(request)
    limits = {"max_rows": service.max_rows, "max_body_bytes": service.max_body_bytes}
    return msgspec.convert({**service.predictor.describe(), **limits}, Metadata, strict=False)


@get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics() -> Response[bytes]:
    return Response(metrics_text(), media_type=CONTENT_TYPE_LATEST)


def problem(request: Request[Any, Any, Any], status: int, detail: str, extra: Any = None) -> Response[Any]:
    """An error body: MLflow's shape on ``/invocations``, ours elsewhere."""
    if request.url.path == "/invocations":
        code = {413: "RESOURCE_LIMIT_EXCEEDED", 500: "INTERNAL_ERROR", 503: "TEMPORARILY_UNAVAILABLE"}
        return Response(MlflowError(code.get(status, "BAD_REQUEST"), detail), status_code=status)
    return Response(Problem(status, detail, extra), status_code=status)


def on_http_error(request: Request[Any, Any, Any], e: HTTPException) -> Response[Any]:
    detail = e.detail
    if e.status_code == 413 and detail == "Request Entity Too Large":
        size = request.headers.get("content-length")
        got = f"got {size} bytes" if size else "got more"
        detail = f"request body too large: the limit is {_service(request).max_body_bytes} bytes, {got}"
    response = problem(request, e.status_code, detail, e.extra or None)
    response.headers.update(e.headers or {})
    return response


def on_unexpected(request: Request[Any, Any, Any], e: Exception) -> Response[Any]:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=e)
    return problem(request, 500, f"internal server error ({type(e).__name__}); the server log has the traceback")


def on_overload(request: Request[Any, Any, Any], e: QueueFull) -> Response[Any]:
    response = problem(request, 503, str(e))
    response.headers["Retry-After"] = str(e.retry_after_s)
    return response


@asynccontextmanager
async def batching_lifespan(app: Litestar) -> AsyncIterator[None]:
    """The micro-batcher lives as long as the server; at shutdown it finishes what is queued."""
    service: Service = app.state.service
    if service.batch_settings is None:  # --no-batching
        try:
            yield
        finally:
            service.ready = False
        return
    wait_s, queue_rows = service.batch_settings
    p = service.predictor
    service.batcher = MicroBatcher(
        p.run_encoded,
        max_batch=p.buckets[-1],
        max_wait_s=wait_s,
        max_queue_rows=queue_rows,
        inline_rows=OFFLOAD_ROWS,
        on_batch=lambda rows, _requests, _reason: BATCH_ROWS.observe(rows),
        on_wait=QUEUE_WAIT.observe,
    )
    try:
        yield
    finally:  # the server has stopped accepting and its open requests are done: finish the rest
        service.ready = False
        await service.batcher.close()


def create_app(
    model: str | Path | Predictor = DEFAULT_MODEL,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    warmup: bool = True,
    batch_wait_s: float = DEFAULT_MAX_WAIT_S,
    max_queue_rows: int = DEFAULT_MAX_QUEUE_ROWS,
    batching: bool = True,
) -> Litestar:
    """The Litestar app serving ``model`` (a path, an MLflow URI, or a loaded Predictor): wiring only.

    The model is loaded and compiled here, so a bad model fails before any port is bound.
    ``batching=False`` runs each request's model call on its own (no micro-batcher, no
    queue, so no 503 for a full queue): the answers are bitwise the same either way.

    Raises:
      mlp_jax.artifact.CheckpointError: the path is missing or not a checkpoint.
      ValueError: a limit is not positive.
    """
    if max_rows < 1 or max_body_bytes < 1:
        raise ValueError(f"max_rows and max_body_bytes must be positive, got {max_rows} and {max_body_bytes}")
    predictor = model if isinstance(model, Predictor) else load_predictor(model)
    service = Service(predictor, max_rows)
    service.max_body_bytes = max_body_bytes
    service.batch_settings = (batch_wait_s, max_queue_rows) if batching else None
    if warmup:
        predictor.warmup()
    service.ready = True
    handlers: list[Any] = [predict, invocations, health, ready, metadata, metrics]
    if (assets := _swagger_assets()) is not None:
        handlers.append(create_static_files_router(DOCS_ASSETS, [assets], include_in_schema=False))
    app = Litestar(
        route_handlers=handlers,
        exception_handlers={HTTPException: on_http_error, QueueFull: on_overload, Exception: on_unexpected},
        lifespan=[batching_lifespan],
        middleware=[metrics_middleware],
        request_max_body_size=max_body_bytes,
        openapi_config=docs_config(),
        logging_config=None,
    )
    app.state.predictor = predictor
    app.state.service = service
    app.asgi_handler = predict_fast_path(app.asgi_handler, service, max_body_bytes)
    return app


#: ``/predict`` bodies up to this size (with a Content-Length) take :func:`predict_fast_path`.
FAST_PATH_BYTES = 64 * 1024
_JSON_HEADERS = [(b"content-type", b"application/json")]


def predict_fast_path(inner: ASGIApp, service: Service, max_body_bytes: int) -> ASGIApp:
    """``POST /predict`` without Litestar's routing, DTO and response layers (same bytes out).

    A well-formed request the service answers 200 (or 503, queue full) is answered here:
    the same :func:`parse_predict`, :meth:`Service.run` and :meth:`Service.answer` as the
    Litestar handler, the body encoded by Litestar's own JSON encoder, the same metrics.
    Anything else (another route, a body without Content-Length or over
    :data:`FAST_PATH_BYTES`, any 4xx) is handed to Litestar with the body replayed, so every
    error is worded and counted exactly as before. Saves ~25% of a one-row request's CPU.
    """
    from litestar.serialization import encode_json

    limit = min(FAST_PATH_BYTES, max_body_bytes)
    counted: dict[int, Any] = {}  # label children, made on first use (so /metrics shows only what happened)

    async def handler(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] != "/predict" or scope["method"] != "POST" or scope["type"] != "http":
            await inner(scope, receive, send)
            return
        content_type = ""
        length = -1
        for k, v in scope["headers"]:
            if k == b"content-length":
                length = int(v) if v.isdigit() else -1
            elif k == b"content-type":
                content_type = v.decode("latin-1")
        if not 0 < length <= limit:
            await inner(scope, receive, send)
            return
        start = time.perf_counter()
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = _JSON_HEADERS
        try:
            req = parse_predict(body, content_type)
            rows = [req.features] if req.features is not None else req.instances
            assert rows is not None
            status, payload = (
                200,
                service.answer(await service.run(rows, len(rows), "predict"), req.features is not None),
            )
        except InvalidInput:
            payload = None
        except QueueFull as e:
            status, payload = 503, Problem(503, str(e), None)
            headers = [*_JSON_HEADERS, (b"retry-after", str(e.retry_after_s).encode())]
        except Exception:  # unexpected: Litestar's handler logs it and answers the 500 problem
            payload = None
        if payload is None:  # Litestar words the error (it decodes and checks again)
            await inner(scope, _replay(body, receive), send)
            return
        data = encode_json(payload)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(data)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": data})
        if status not in counted:
            counted[status] = REQUESTS.labels("POST", "/predict", str(status))
            counted[0] = LATENCY.labels("/predict")
        counted[status].inc()
        counted[0].observe(time.perf_counter() - start)

    return handler


def _replay(body: bytes, receive: Any) -> Any:
    """An ASGI ``receive`` that gives ``body`` once, then defers to the real one."""
    sent = False

    async def replayed() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def startup_line(predictor: Predictor) -> str:
    return (
        f"model {predictor.source} (name {predictor.name}, version {predictor.version}, step {predictor.step}): "
        f"input width {predictor.n_features}, "
        + (
            f"classes {list(predictor.classes)}"
            if predictor.task == "classification"
            else f"targets {list(predictor.targets)}"
        )
    )


# ----------------------------------------------------------------------------- command line

_WORKER_ENV = "MLP_JAX_SERVE_WORKER"


def configure_jax() -> None:
    """Process-wide JAX settings for serving: persistent compile cache, synchronous CPU dispatch.

    A request waits for its result anyway; running the small program in the calling thread
    instead of handing it to XLA's pool halves the model's share of a one-row request
    (~70 -> ~30 us) and removes a thread wake-up from the latency tail on a busy machine.
    """
    import jax

    from mlp_jax import compilation_cache

    compilation_cache.enable()
    jax.config.update("jax_cpu_enable_async_dispatch", False)


def freeze_startup_objects() -> None:
    """Moves every object alive now (modules, the model, the compiled programs) out of the GC's reach.

    A full (generation 2) collection otherwise walks those ~230,000 objects every time the
    young generations overflow, a ~0.2 s pause of the event loop: at 64 concurrent one-row
    clients the p99 latency went from ~20 ms to ~200-240 ms in two of three rounds (measured,
    benchmarks/RESULTS.md "Serving"). ``gc.freeze`` after start-up is what the Python docs
    suggest for long-lived servers; objects made afterwards are collected as usual.
    """
    gc.collect()
    gc.freeze()


def worker_app() -> Litestar:
    """App factory for ``--workers N`` (uvicorn imports this in each worker process)."""
    configure_jax()
    spec = json.loads(os.environ[_WORKER_ENV])
    predictor = load_predictor(spec["checkpoint"])
    predictor.source, predictor.name, predictor.version = spec["source"], spec["name"], spec["version"]
    app = create_app(
        predictor,
        max_rows=spec["max_rows"],
        max_body_bytes=spec["max_body_bytes"],
        batch_wait_s=spec["batch_wait_s"],
        max_queue_rows=spec["max_queue_rows"],
        batching=spec.get("batching", True),
    )
    freeze_startup_objects()
    return app


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m mlp_jax.serve", description="Serve a model over HTTP (Litestar on uvicorn)."
    )
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"workdir, step folder or models:/ URI (default {DEFAULT_MODEL})"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="worker processes, each with its own compiled model")
    p.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, help="most rows per request")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="largest request body")
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        default=DEFAULT_MAX_WAIT_S * 1e3,
        help="longest a request waits for others to share its model call (default %(default)s); a lone request never waits",
    )
    p.add_argument(
        "--max-queue-rows",
        type=int,
        default=DEFAULT_MAX_QUEUE_ROWS,
        help="queued rows past which requests answer 503 with Retry-After (default %(default)s)",
    )
    p.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop (default asyncio: uvloop answers ~8%% more one-row requests/s, but when hundreds of "
        "connections arrive at once it left some unanswered for ~5 s; benchmarks/RESULTS.md)",
    )
    p.add_argument(
        "--shutdown-timeout-s",
        type=float,
        default=30.0,
        help="after SIGTERM, the longest wait for requests in progress (a client that stalls mid-body "
        "cannot hold the server up past it; default 30, as a Kubernetes grace period)",
    )
    p.add_argument(
        "--no-batching",
        action="store_true",
        help="run every request's model call on its own, without the micro-batcher (same answers; for comparisons)",
    )
    args = p.parse_args(argv)
    if args.batch_wait_ms < 0:
        p.error(f"--batch-wait-ms must not be negative, got {args.batch_wait_ms}")
    if not args.shutdown_timeout_s > 0:
        p.error(f"--shutdown-timeout-s must be positive, got {args.shutdown_timeout_s}")
    for name in ("port", "workers", "max_rows", "max_body_bytes", "max_queue_rows"):
        if getattr(args, name) < (0 if name == "port" else 1):
            p.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.port > 65535:
        p.error(f"--port must be at most 65535, got {args.port}")
    return args


def check_bind(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (address in use, no such address, no permission), or None.

    Tried after the model loaded and before the "listening" line, as uvicorn binds: IPv6 when
    ``host`` holds a ``:``, else IPv4, with SO_REUSEADDR; the socket is closed again at once
    (another process could still take the port in between: uvicorn then reports it).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except (socket.gaierror, UnicodeError) as e:
        return f"cannot resolve --host {host!r}: {e}"
    except OSError as e:
        return f"cannot listen on {host}:{port}: {e.strerror or e}"
    return None


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """``python -m mlp_jax.serve``: load, compile, log one startup line, serve until interrupted."""
    args = parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)  # not basicConfig: absl (via orbax) may already own the root logger
    log.setLevel(logging.INFO)
    log.propagate = False
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import uvicorn

    from mlp_jax.artifact import CheckpointError

    configure_jax()
    try:
        predictor = load_predictor(args.model)
        app = create_app(
            predictor,
            max_rows=args.max_rows,
            max_body_bytes=args.max_body_bytes,
            batch_wait_s=args.batch_wait_ms / 1e3,
            max_queue_rows=args.max_queue_rows,
            batching=not args.no_batching,
        )
    except (CheckpointError, PredictorError) as e:
        print(f"error: cannot serve --model {args.model}: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # registry errors (unknown name or alias, unreachable store) come from mlflow
        if not str(args.model).startswith(("models:/", "runs:/")):
            raise
        print(f"error: cannot serve --model {args.model}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    problem = check_bind(args.host, args.port)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    log.info(
        "%s; listening on http://%s:%d with %d worker(s)", startup_line(predictor), args.host, args.port, args.workers
    )
    server_options: dict[str, Any] = dict(
        host=args.host,
        port=args.port,
        loop=args.loop,
        http="mlp_jax.http_protocol:GracefulHttpToolsProtocol",  # idle connections close gracefully at shutdown
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=args.shutdown_timeout_s,
    )
    if args.workers == 1:
        # uvicorn re-raises SIGTERM after its graceful shutdown (queue drained),
        # which would end the process with -15; a clean stop exits 0.
        signal.signal(signal.SIGTERM, _exit_cleanly)
        freeze_startup_objects()
        uvicorn.run(app, **server_options)
        return 0
    # Each worker is a fresh process that loads the same local checkpoint; metrics are summed
    # over the workers through prometheus_client's multiprocess directory.
    with tempfile.TemporaryDirectory(prefix="mlp-jax-prometheus-") as prom_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom_dir
        os.environ[_WORKER_ENV] = json.dumps(
            {
                "checkpoint": str(predictor.checkpoint.path),
                "source": predictor.source,
                "name": predictor.name,
                "version": predictor.version,
                "max_rows": args.max_rows,
                "max_body_bytes": args.max_body_bytes,
                "batch_wait_s": args.batch_wait_ms / 1e3,
                "max_queue_rows": args.max_queue_rows,
                "batching": not args.no_batching,
            }
        )
        # uvicorn kills a worker that misses a 5 s health ping; a worker compiling its buckets on a
        # busy machine can (then it is restarted, and again, forever): give the ping a minute.
        uvicorn.run(
            "mlp_jax.serve:worker_app",
            factory=True,
            workers=args.workers,
            timeout_worker_healthcheck=60,
            **server_options,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
