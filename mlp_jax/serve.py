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
import io
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.dto import MsgspecDTO
from litestar.exceptions import ClientException, HTTPException
from litestar.openapi import OpenAPIConfig
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

from mlp_jax.batcher import DEFAULT_MAX_QUEUE_ROWS, DEFAULT_MAX_WAIT_S, MicroBatcher, QueueFull  # [batcher wiring]
from mlp_jax.predictor import Predictor, PredictorError

log = logging.getLogger("mlp_jax.serve")

DEFAULT_MODEL = "checkpoints/baseline"
DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
#: Batches above this many rows run in a worker thread so the event loop keeps answering.
OFFLOAD_ROWS = 1024

Label = int | float | str

# ----------------------------------------------------------------------------- HTTP schema


class PredictRequest(msgspec.Struct, forbid_unknown_fields=True):
    """One row (``features``) or many (``instances``), raw feature values in training column order."""

    features: list[float] | None = None
    instances: list[list[float]] | None = None


class StrictJSON(MsgspecDTO[PredictRequest]):
    """Decodes the body straight into :class:`PredictRequest` in msgspec's strict mode.

    Litestar converts bodies non-strictly (``"1.5"`` would pass as a number); this DTO keeps
    Litestar's OpenAPI schema for the body but lets only JSON numbers through.
    """

    def decode_bytes(self, value: bytes) -> Any:
        try:
            return msgspec.json.decode(value, type=PredictRequest)
        except msgspec.ValidationError as e:
            raise ClientException(detail=f"invalid request body: {e}") from None
        except (msgspec.DecodeError, UnicodeDecodeError) as e:  # msgspec lets bad UTF-8 in keys through as the latter
            raise ClientException(detail=f"malformed JSON: {e}") from None


class Prediction(msgspec.Struct):
    """The answer for one row: the original class label and one probability per class."""

    prediction: Label
    probabilities: list[float]
    classes: list[Label]


class Predictions(msgspec.Struct):
    """The answer for many rows, in request order."""

    predictions: list[Label]
    probabilities: list[list[float]]
    classes: list[Label]


class DataframeSplit(msgspec.Struct, forbid_unknown_fields=True):
    columns: list[str]
    data: list[list[Any]]
    index: list[Any] | None = None


class InvocationsRequest(msgspec.Struct, forbid_unknown_fields=True):
    """MLflow's scoring protocol: exactly one of the four input keys (``params`` is accepted and ignored)."""

    dataframe_split: DataframeSplit | None = None
    dataframe_records: list[dict[str, Any]] | None = None
    instances: Any = None
    inputs: Any = None
    params: dict[str, Any] | None = None


class NumericSplit(msgspec.Struct, forbid_unknown_fields=True):
    columns: list[str]
    data: list[list[float]]
    index: list[Any] | None = None


class NumericInvocations(msgspec.Struct, forbid_unknown_fields=True):
    """The fast path of :class:`InvocationsRequest`: every value a JSON number, checked while decoding.

    A body that does not fit (a text column, a list of records under ``instances``, an
    error) takes the general path, which also words the error.
    """

    dataframe_split: NumericSplit | None = None
    dataframe_records: list[dict[str, float]] | None = None
    instances: list[list[float]] | dict[str, list[float]] | None = None
    inputs: list[list[float]] | dict[str, list[float]] | None = None
    params: dict[str, Any] | None = None


class Health(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct):
    ready: bool
    model: str
    version: str
    buckets: list[int]


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
# [batcher wiring] the micro-batcher's two histograms
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


class InvalidInput(ValueError):
    """A request body that cannot be scored; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _is_number(v: Any) -> bool:
    return type(v) is float or type(v) is int  # bool is an int subclass: excluded on purpose


def _numeric_rows(rows: list[list[Any]], names: tuple[str, ...]) -> list[list[Any]]:
    if not all(_is_number(v) for row in rows for v in row):
        for i, row in enumerate(rows):
            for name, v in zip(names, row, strict=False):
                if not _is_number(v):
                    raise InvalidInput(f"row {i}, feature {name!r}: expected a number, got {v!r}")
    return rows


def _rows_from_records(records: list[Any], features: tuple[str, ...], what: str) -> list[list[Any]]:
    rows = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InvalidInput(f"{what}[{i}]: expected an object of column -> value, got {type(rec).__name__}")
        try:
            rows.append([rec[f] for f in features])
        except KeyError:
            missing = [f for f in features if f not in rec]
            raise InvalidInput(f"{what}[{i}] is missing feature column(s): {', '.join(missing)}") from None
    return rows


def _rows_from_split(split: DataframeSplit | NumericSplit, features: tuple[str, ...]) -> list[list[Any]]:
    cols = {c: i for i, c in enumerate(split.columns)}
    missing = [f for f in features if f not in cols]
    if missing:
        raise InvalidInput(f"dataframe_split is missing feature column(s): {', '.join(missing)}")
    width = len(split.columns)
    for i, row in enumerate(split.data):
        if len(row) != width:
            raise InvalidInput(f"dataframe_split.data[{i}] has {len(row)} values, expected {width} (one per column)")
    idx = [cols[f] for f in features]
    if idx == list(range(width)):
        return split.data
    return [[row[j] for j in idx] for row in split.data]


def _rows_from_tensor(value: Any, features: tuple[str, ...], what: str) -> list[list[Any]]:
    """``instances`` / ``inputs``: a list of rows, a list of records, or columns ``{name: [values]}``."""
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
        return [list(r) for r in zip(*cols, strict=True)]
    if not isinstance(value, list):
        raise InvalidInput(f"{what}: expected a list of rows, got {type(value).__name__}")
    if not value:
        return []
    if all(isinstance(r, dict) for r in value):
        return _rows_from_records(value, features, what)
    for i, r in enumerate(value):
        if not isinstance(r, list):
            raise InvalidInput(f"{what}[{i}]: expected a row (a list of {len(features)} numbers), got {r!r:.80}")
        if len(r) != len(features):
            raise InvalidInput(f"{what}[{i}]: expected {len(features)} features per row, got {len(r)}")
    return value


def parse_invocations(body: bytes, content_type: str, features: tuple[str, ...]) -> list[list[Any]]:
    """Rows in feature order from an MLflow scoring request; InvalidInput names what is wrong."""
    mime, *params = (p.strip() for p in (content_type or "").split(";"))
    mime = mime.lower()
    options = dict(p.partition("=")[::2] for p in params if p)
    if options.get("charset", "utf-8").lower() != "utf-8":
        raise InvalidInput(f"only UTF-8 is supported, got charset={options['charset']}", 415)
    if mime == "text/csv":
        import pandas as pd

        try:
            frame = pd.read_csv(io.BytesIO(body))
        except (ValueError, UnicodeDecodeError) as e:  # pandas' parser errors are ValueErrors
            raise InvalidInput(f"cannot parse the CSV body: {e}") from None
        missing = [f for f in features if f not in frame.columns]
        if missing:
            raise InvalidInput(f"CSV body is missing feature column(s): {', '.join(missing)}")
        sub = frame[list(features)]
        bad = [
            c
            for c in features
            if not pd.api.types.is_numeric_dtype(sub[c]) or pd.api.types.is_bool_dtype(sub[c])  # pandas 3: str dtype
        ]
        if bad:
            raise InvalidInput(f"CSV feature column(s) must be numeric, not: {', '.join(bad)}")
        return sub.to_numpy(dtype=np.float64).tolist()
    if mime != "application/json":
        raise InvalidInput(f"unsupported content type {content_type!r}: expected 'application/json' or 'text/csv'", 415)
    req: InvocationsRequest | NumericInvocations
    try:
        req, numeric = msgspec.json.decode(body, type=NumericInvocations), True
    except (msgspec.DecodeError, UnicodeDecodeError):  # ValidationError is a DecodeError
        try:
            req, numeric = msgspec.json.decode(body, type=InvocationsRequest), False
        except msgspec.ValidationError as e:
            raise InvalidInput(f"invalid request: {e}") from None
        except (msgspec.DecodeError, UnicodeDecodeError) as e:
            raise InvalidInput(f"malformed JSON: {e}") from None
    given = [k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if getattr(req, k) is not None]
    if len(given) != 1:
        raise InvalidInput(
            "expected exactly one of 'dataframe_split', 'dataframe_records', 'instances', 'inputs', "
            f"got {given or 'none'}"
        )
    key = given[0]
    if key == "dataframe_split":
        assert req.dataframe_split is not None
        rows = _rows_from_split(req.dataframe_split, features)
    elif key == "dataframe_records":
        assert req.dataframe_records is not None
        rows = _rows_from_records(req.dataframe_records, features, key)
    else:
        rows = _rows_from_tensor(getattr(req, key), features, key)
    return rows if numeric else _numeric_rows(rows, features)


# ----------------------------------------------------------------------------- app


class Service:
    """The predictor plus the request limits; what the handlers share."""

    def __init__(self, predictor: Predictor, max_rows: int):
        self.predictor = predictor
        self.max_rows = max_rows
        self.ready = False
        self.batcher: MicroBatcher | None = None  # [batcher wiring] set by the app's lifespan
        self.record_keys = ("prediction", *predictor.probability_columns())  # one /invocations record
        self.classes = list(predictor.classes)

    def check_count(self, n: int) -> None:
        if n == 0:
            raise InvalidInput("expected at least one row, got 0")
        if n > self.max_rows:
            raise InvalidInput(f"too many rows: got {n}, the maximum per request is {self.max_rows}", 413)

    async def score(self, rows: Any, n: int, endpoint: str) -> tuple[list[Any], np.ndarray]:
        """Validated rows -> (labels, probabilities); large batches run off the event loop."""
        self.check_count(n)
        if self.batcher is not None:  # [batcher wiring] QueueFull propagates to the 503 handler
            try:
                x = self.predictor.check_rows(rows)
            except PredictorError as e:
                raise InvalidInput(str(e)) from None
            probs = await self.batcher.submit(x)
            ROWS.labels(endpoint).inc(n)
            return self.predictor.labels(probs), probs
        try:
            if n > OFFLOAD_ROWS:
                import anyio.to_thread

                out = await anyio.to_thread.run_sync(self.predictor.predict, rows)
            else:
                out = self.predictor.predict(rows)
        except PredictorError as e:
            raise InvalidInput(str(e)) from None
        ROWS.labels(endpoint).inc(n)
        return out


def _client_error(e: InvalidInput) -> HTTPException:
    return ClientException(detail=str(e), status_code=e.status)


def _mlflow_error(message: str, status: int) -> Response[dict[str, str]]:
    code = {413: "RESOURCE_LIMIT_EXCEEDED", 415: "BAD_REQUEST"}.get(status, "BAD_REQUEST")
    return Response({"error_code": code, "message": message}, status_code=status, media_type=MediaType.JSON)


def create_app(
    model: str | Path | Predictor = DEFAULT_MODEL,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    warmup: bool = True,
    batch_wait_s: float = DEFAULT_MAX_WAIT_S,
    max_queue_rows: int = DEFAULT_MAX_QUEUE_ROWS,
) -> Litestar:
    """The Litestar app serving ``model`` (a path, an MLflow URI, or a loaded Predictor).

    The model is loaded and compiled here, so a bad model fails before any port is bound.

    Raises:
      mlp_jax.artifact.CheckpointError: the path is missing or not a checkpoint.
      ValueError: a limit is not positive.
    """
    if max_rows < 1 or max_body_bytes < 1:
        raise ValueError(f"max_rows and max_body_bytes must be positive, got {max_rows} and {max_body_bytes}")
    predictor = model if isinstance(model, Predictor) else Predictor.load(model)
    service = Service(predictor, max_rows)
    if warmup:
        predictor.warmup()
    service.ready = True

    @post(
        "/predict",
        status_code=200,
        dto=StrictJSON,
        return_dto=None,
        summary="Predict labels and class probabilities for one or many rows",
    )
    async def predict(data: PredictRequest | None = None) -> Prediction | Predictions:
        try:
            if data is None:
                raise InvalidInput("empty request body: expected a JSON object with 'features' or 'instances'")
            if (data.features is None) == (data.instances is None):
                raise InvalidInput("expected exactly one of 'features' (one row) or 'instances' (a list of rows)")
            if data.features is not None:
                labels, probs = await service.score(data.features, 1, "predict")
                return Prediction(labels[0], probs[0].tolist(), service.classes)
            assert data.instances is not None
            labels, probs = await service.score(data.instances, len(data.instances), "predict")
            return Predictions(labels, probs.tolist(), service.classes)
        except InvalidInput as e:
            raise _client_error(e) from None

    @post(
        "/invocations",
        status_code=200,
        summary="MLflow scoring protocol (dataframe_split, dataframe_records, instances, inputs; JSON or CSV)",
    )
    async def invocations(request: Request[Any, Any, Any]) -> Response[Any]:
        try:
            body = await request.body()
        except HTTPException as e:  # over request_max_body_size
            return _mlflow_error(too_large(request) if e.status_code == 413 else str(e.detail), e.status_code)
        try:
            rows = parse_invocations(body, request.headers.get("content-type", ""), predictor.feature_names)
            labels, probs = await service.score(rows, len(rows), "invocations")
        except InvalidInput as e:
            return _mlflow_error(str(e), e.status)
        keys = service.record_keys
        records = [dict(zip(keys, (lab, *p), strict=True)) for lab, p in zip(labels, probs.tolist(), strict=True)]
        return Response({"predictions": records}, media_type=MediaType.JSON)

    @get("/health", summary="Liveness")
    async def health() -> Health:
        return Health("alive")

    @get("/ready", summary="Readiness: model loaded and compiled for every bucket")
    async def ready() -> Response[Readiness]:
        body = Readiness(service.ready, predictor.name, predictor.version, list(predictor.buckets))
        return Response(body, status_code=200 if service.ready else 503)

    @get("/metadata", summary="Model name, version, checkpoint step, feature names, classes, test metrics")
    async def metadata() -> dict[str, Any]:
        return {**predictor.describe(), "max_rows": service.max_rows, "max_body_bytes": max_body_bytes}

    @get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response[bytes]:
        return Response(metrics_text(), media_type=CONTENT_TYPE_LATEST)

    def too_large(request: Request[Any, Any, Any]) -> str:
        size = request.headers.get("content-length")
        got = f"got {size} bytes" if size else "got more"
        return f"request body too large: the limit is {max_body_bytes} bytes, {got}"

    def on_http_error(request: Request[Any, Any, Any], e: HTTPException) -> Response[dict[str, Any]]:
        detail = too_large(request) if e.status_code == 413 and e.detail == "Request Entity Too Large" else e.detail
        body: dict[str, Any] = {"status_code": e.status_code, "detail": detail}
        if e.extra:
            body["extra"] = e.extra
        return Response(body, status_code=e.status_code, headers=e.headers)

    # [batcher wiring] begin: the batcher lives as long as the server; a full queue answers 503
    @asynccontextmanager
    async def batching(_: Litestar) -> AsyncIterator[None]:
        service.batcher = MicroBatcher(
            predictor.proba_checked,
            max_batch=predictor.buckets[-1],
            max_wait_s=batch_wait_s,
            max_queue_rows=max_queue_rows,
            inline_rows=OFFLOAD_ROWS,
            on_batch=lambda rows, _requests, _reason: BATCH_ROWS.observe(rows),
            on_wait=QUEUE_WAIT.observe,
        )
        try:
            yield
        finally:  # the server has stopped accepting and its open requests are done: finish the rest
            service.ready = False
            await service.batcher.close()

    def on_overload(_: Request[Any, Any, Any], e: QueueFull) -> Response[dict[str, Any]]:
        headers = {"Retry-After": str(e.retry_after_s)}
        return Response({"status_code": 503, "detail": str(e)}, status_code=503, headers=headers)

    # [batcher wiring] end

    app = Litestar(
        route_handlers=[predict, invocations, health, ready, metadata, metrics],
        exception_handlers={HTTPException: on_http_error, QueueFull: on_overload},  # [batcher wiring]
        lifespan=[batching],  # [batcher wiring]
        middleware=[metrics_middleware],
        request_max_body_size=max_body_bytes,
        openapi_config=OpenAPIConfig(title="mlp-jax prediction service", version="1.0.0", path="/schema"),
        logging_config=None,
    )
    app.state.predictor = predictor
    app.state.service = service
    return app


def startup_line(predictor: Predictor) -> str:
    return (
        f"model {predictor.source} (name {predictor.name}, version {predictor.version}, step {predictor.step}): "
        f"input width {predictor.n_features}, classes {list(predictor.classes)}"
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


def worker_app() -> Litestar:
    """App factory for ``--workers N`` (uvicorn imports this in each worker process)."""
    configure_jax()
    spec = json.loads(os.environ[_WORKER_ENV])
    predictor = Predictor.load(spec["checkpoint"])
    predictor.source, predictor.name, predictor.version = spec["source"], spec["name"], spec["version"]
    return create_app(
        predictor,
        max_rows=spec["max_rows"],
        max_body_bytes=spec["max_body_bytes"],
        batch_wait_s=spec["batch_wait_s"],  # [batcher wiring]
        max_queue_rows=spec["max_queue_rows"],  # [batcher wiring]
    )


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
    # [batcher wiring] begin
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
    # [batcher wiring] end
    args = p.parse_args(argv)
    if args.batch_wait_ms < 0:  # [batcher wiring]
        p.error(f"--batch-wait-ms must not be negative, got {args.batch_wait_ms}")
    for name in ("port", "workers", "max_rows", "max_body_bytes", "max_queue_rows"):
        if getattr(args, name) < (0 if name == "port" else 1):
            p.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    return args


def _exit_cleanly(signum: int, frame: Any) -> None:  # [batcher wiring]
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
        predictor = Predictor.load(args.model)
        app = create_app(
            predictor,
            max_rows=args.max_rows,
            max_body_bytes=args.max_body_bytes,
            batch_wait_s=args.batch_wait_ms / 1e3,  # [batcher wiring]
            max_queue_rows=args.max_queue_rows,  # [batcher wiring]
        )
    except (CheckpointError, PredictorError) as e:
        print(f"error: cannot serve --model {args.model}: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # registry errors (unknown name or alias, unreachable store) come from mlflow
        if not str(args.model).startswith(("models:/", "runs:/")):
            raise
        print(f"error: cannot serve --model {args.model}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    log.info(
        "%s; listening on http://%s:%d with %d worker(s)", startup_line(predictor), args.host, args.port, args.workers
    )
    server_options: dict[str, Any] = dict(
        host=args.host, port=args.port, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )
    if args.workers == 1:
        # [batcher wiring] uvicorn re-raises SIGTERM after its graceful shutdown (queue drained),
        # which would end the process with -15; a clean stop exits 0.
        signal.signal(signal.SIGTERM, _exit_cleanly)
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
                "batch_wait_s": args.batch_wait_ms / 1e3,  # [batcher wiring]
                "max_queue_rows": args.max_queue_rows,  # [batcher wiring]
            }
        )
        uvicorn.run("mlp_jax.serve:worker_app", factory=True, workers=args.workers, **server_options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
