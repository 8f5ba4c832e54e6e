"""MicroBatcher with the real Predictor: exact per-request answers, coalescing, back-pressure, shutdown."""

from __future__ import annotations

import asyncio
import collections
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlp_jax.batcher import BatcherClosed, MicroBatcher, QueueFull
from mlp_jax.predictor import Predictor
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def predictor(trained_workdir: Path) -> Predictor:
    return Predictor.load(trained_workdir)


def random_rows(predictor: Predictor, n: int, seed: int) -> np.ndarray:
    """``n`` raw rows drawn from the training CSV, with a little noise."""
    import pandas as pd

    frame = pd.read_csv(predictor.checkpoint.path.parent.parent / "tiny.csv")[list(predictor.feature_names)]
    rng = np.random.default_rng(seed)
    x = frame.to_numpy(np.float64)[rng.integers(0, len(frame), n)]
    return (x + 0.1 * rng.normal(size=x.shape)).astype(np.float32)


class Gate:
    """A model stand-in (``2 * x``) that blocks in the worker thread until released; counts calls."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        self.entered.set()
        assert self.open.wait(10), "the test never released the gate"
        if (x == -1).any():
            raise ArithmeticError("poisoned row")
        return x * 2


async def until(cond, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.001)


def test_concurrent_requests_get_bitwise_their_lone_answers_and_do_coalesce(predictor):
    sizes = [1, 3, 1, 40, 1, 7, 300, 1, 2, 33, 1, 1, 129, 5, 1, 64] * 4
    inputs = [predictor.encode(random_rows(predictor, n, seed)) for seed, n in enumerate(sizes)]  # what serve submits
    alone = [predictor.run_encoded(x) for x in inputs]
    # inline_rows=64: small batches run on the loop, larger ones in the worker thread; both paths checked.
    seen: list[tuple[int, int, str]] = []
    waits: list[float] = []
    batcher = MicroBatcher(
        predictor.run_encoded,
        max_batch=predictor.buckets[-1],
        inline_rows=64,
        on_batch=lambda *a: seen.append(a),
        on_wait=waits.append,
    )

    async def main() -> list[np.ndarray]:
        async def client(i: int) -> np.ndarray:
            await asyncio.sleep(0.0005 * (i % 5))  # staggered arrivals: some batches form while one runs
            return await batcher.submit(inputs[i])

        out = await asyncio.gather(*(client(i) for i in range(len(inputs))))
        await batcher.close()
        return out

    results = asyncio.run(main())
    for got, want in zip(results, alone, strict=True):
        assert got.dtype == np.float32 and np.array_equal(got, want)  # bitwise, not allclose
    st = batcher.stats
    assert st.requests == len(sizes) and st.rows == sum(sizes) == sum(r for r, _, _ in seen)
    assert st.batches < len(sizes) and st.max_batch_requests > 1, "nothing was coalesced"
    assert any(req > 1 for _, req, _ in seen) and len(waits) == len(sizes) and min(waits) >= 0


def test_a_lone_request_runs_at_once_not_after_max_wait(predictor):
    x = predictor.encode(random_rows(predictor, 1, 0))
    # A 60 s timer: if a lone request waited for it, the 5 s guard below would fail the test.
    batcher = MicroBatcher(predictor.run_encoded, max_batch=4096, max_wait_s=60)

    async def main() -> None:
        for _ in range(5):  # one client, one request at a time
            got = await asyncio.wait_for(batcher.submit(x), 5)
            assert np.array_equal(got, predictor.run_encoded(x))
        await batcher.close()

    asyncio.run(main())
    assert batcher.stats.batches == 5 and batcher.stats.reasons["idle"] == 5 and batcher.stats.reasons["max_wait"] == 0


def test_batches_never_exceed_max_batch_and_an_oversize_request_goes_alone():
    calls: list[int] = []

    def run(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return x * 2

    batcher = MicroBatcher(run, max_batch=32, max_wait_s=1)
    xs = [np.full((1, 2), i, np.float32) for i in range(100)] + [np.full((70, 2), 7, np.float32)]

    async def main() -> list[np.ndarray]:
        out = await asyncio.gather(*(batcher.submit(x) for x in xs))
        await batcher.close()
        return out

    for got, x in zip(asyncio.run(main()), xs, strict=True):
        assert np.array_equal(got, x * 2)
    assert max(c for c in calls if c != 70) <= 32 and 70 in calls
    assert batcher.stats.reasons["full"] >= 3 and batcher.stats.reasons["oversize"] == 1


def test_full_queue_refuses_at_once_and_recovers():
    gate = Gate()
    batcher = MicroBatcher(gate, max_batch=8, max_queue_rows=4, inline_rows=0)

    async def main() -> None:
        first = asyncio.create_task(batcher.submit(np.ones((1, 2), np.float32)))
        await until(gate.entered.is_set)  # in flight, in the worker thread
        queued = [asyncio.create_task(batcher.submit(np.full((2, 2), i, np.float32))) for i in range(2)]
        await until(lambda: batcher.queued_rows == 4)
        with pytest.raises(QueueFull) as e:
            await batcher.submit(np.ones((1, 2), np.float32))  # raises before any wait
        assert e.value.retry_after_s >= 1 and batcher.stats.rejected == 1
        gate.open.set()
        assert np.array_equal(await first, np.full((1, 2), 2))
        for i, t in enumerate(queued):
            assert np.array_equal(await t, np.full((2, 2), 2 * i))
        assert np.array_equal(await batcher.submit(np.ones((3, 2), np.float32)), np.full((3, 2), 2))
        await batcher.close()

    asyncio.run(main())


def test_close_refuses_new_work_and_finishes_queued_and_in_flight():
    gate = Gate()
    batcher = MicroBatcher(gate, max_batch=8, inline_rows=0)

    async def main() -> None:
        in_flight = asyncio.create_task(batcher.submit(np.ones((1, 2), np.float32)))
        await until(gate.entered.is_set)
        queued = [asyncio.create_task(batcher.submit(np.full((1, 2), i, np.float32))) for i in range(5)]
        await until(lambda: batcher.queued_rows == 5)
        closing = asyncio.create_task(batcher.close())
        await until(lambda: batcher.closing)
        with pytest.raises(BatcherClosed):
            await batcher.submit(np.ones((1, 2), np.float32))
        assert not closing.done()
        gate.open.set()
        await asyncio.wait_for(closing, 10)
        assert in_flight.done() and all(t.done() for t in queued)  # close() returned after all of them
        assert np.array_equal(in_flight.result(), np.full((1, 2), 2))
        assert [float(t.result()[0, 0]) for t in queued] == [0.0, 2.0, 4.0, 6.0, 8.0]

    asyncio.run(main())


def test_drain_waits_for_queued_work_and_keeps_admitting():
    gate = Gate()
    batcher = MicroBatcher(gate, max_batch=8, inline_rows=0)

    async def main() -> None:
        tasks = [asyncio.create_task(batcher.submit(np.ones((1, 2), np.float32))) for _ in range(3)]
        await until(gate.entered.is_set)
        draining = asyncio.create_task(batcher.drain())
        await asyncio.sleep(0.01)
        assert not draining.done()
        gate.open.set()
        await asyncio.wait_for(draining, 10)
        assert all(t.done() for t in tasks)
        assert np.array_equal(await batcher.submit(np.ones((1, 2), np.float32)), np.full((1, 2), 2))
        await batcher.close()

    asyncio.run(main())


def test_a_model_error_reaches_only_its_batch_and_the_batcher_carries_on():
    gate = Gate()
    batcher = MicroBatcher(gate, max_batch=8, inline_rows=0)

    async def main() -> None:
        a = asyncio.create_task(batcher.submit(np.ones((1, 2), np.float32)))
        await until(gate.entered.is_set)  # batch 1 = [a], in flight
        b = asyncio.create_task(batcher.submit(np.full((1, 2), -1, np.float32)))  # poisons batch 2
        c = asyncio.create_task(batcher.submit(np.full((2, 2), 3, np.float32)))
        await until(lambda: batcher.queued_rows == 3)
        gate.open.set()
        assert np.array_equal(await a, np.full((1, 2), 2))
        for t in (b, c):  # the two requests of the failed call
            with pytest.raises(ArithmeticError, match="poisoned"):
                await t
        d = await batcher.submit(np.full((1, 2), 5, np.float32))  # afterwards, alone
        assert np.array_equal(d, np.full((1, 2), 10))
        await batcher.close()

    asyncio.run(main())
    assert gate.calls == [1, 3, 1] and batcher.stats.failed_batches == 1


def test_a_cancelled_request_is_dropped_without_disturbing_others():
    gate = Gate()
    batcher = MicroBatcher(gate, max_batch=8, inline_rows=0)

    async def main() -> None:
        a = asyncio.create_task(batcher.submit(np.ones((1, 2), np.float32)))
        await until(gate.entered.is_set)
        gone = asyncio.create_task(batcher.submit(np.full((1, 2), 9, np.float32)))
        kept = asyncio.create_task(batcher.submit(np.full((1, 2), 4, np.float32)))
        await until(lambda: batcher.queued_rows == 2)
        gone.cancel()  # the client disconnected
        gate.open.set()
        await a
        assert np.array_equal(await kept, np.full((1, 2), 8))
        await batcher.close()

    asyncio.run(main())
    assert gate.calls == [1, 1]


# ----------------------------------------------------------------------------- a real server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def real_server(workdir: Path, *flags: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """``python -m mlp_jax.serve`` in its own process group on a free port, ready; killed if left running."""
    port = free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "mlp_jax.serve", "--model", str(workdir), "--port", str(port), *flags]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"server exited with {proc.returncode}:\n{proc.stdout.read()[-3000:]}"
            assert time.monotonic() < deadline, "server did not become ready"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield proc, port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.mark.slow
def test_sigterm_finishes_in_flight_requests_and_exits_0(trained_workdir, predictor):
    sizes = [5000, 1, 300, 1] * 4  # 5000 > the largest bucket: chunked, in the worker thread
    inputs = [random_rows(predictor, n, 100 + i) for i, n in enumerate(sizes)]
    bodies = [json.dumps({"instances": x.astype(np.float64).tolist()}).encode() for x in inputs]
    with real_server(trained_workdir, "--max-queue-rows", "100000") as (proc, port):  # all admitted
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in sizes]
        for c in conns:  # every connection accepted and owned by the server before the load starts
            c.request("GET", "/health")
            assert c.getresponse().read() == b'{"status":"alive"}'
        for c, body in zip(conns, bodies, strict=True):
            c.request("POST", "/predict", body, {"Content-Type": "application/json"})
        time.sleep(0.05)  # let the server read the requests; answering them all takes far longer
        proc.send_signal(signal.SIGTERM)
        answered = sum(bool(select.select([c.sock], [], [], 0)[0]) for c in conns)
        assert answered < len(conns), "every answer was already back: nothing was in flight at SIGTERM"
        answers = []
        for c in conns:
            r = c.getresponse()
            answers.append((r.status, r.read()))
        assert proc.wait(60) == 0, proc.stdout.read()[-3000:]
    for (status, body), x in zip(answers, inputs, strict=True):
        assert status == 200, body[:300]
        assert np.array_equal(np.float32(json.loads(body)["probabilities"]), predictor.predict_proba(x))


@pytest.mark.slow
def test_a_request_sent_on_an_idle_connection_just_after_sigterm_is_answered_then_closed(trained_workdir, predictor):
    """An idle keep-alive connection is not cut off at shutdown: a request it sends within the grace
    is answered (Connection: close) instead of meeting a reset; new connections are refused."""
    from mlp_jax.http_protocol import IDLE_GRACE_S

    x = random_rows(predictor, 300, 9)
    body = json.dumps({"instances": x.astype(np.float64).tolist()})
    with real_server(trained_workdir) as (proc, port):
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(3)]
        for c in conns:  # keep-alive connections, idle when the signal comes
            c.request("POST", "/predict", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            assert r.status == 200 and r.getheader("connection") != "close"
            r.read()
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while True:  # until shutdown has begun (the listener is closed), then at once the requests
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "the server kept accepting connections after SIGTERM"
            time.sleep(IDLE_GRACE_S / 50)
        for c in conns:
            c.request("POST", "/predict", body, {"Content-Type": "application/json"})
        for c in conns:
            r = c.getresponse()
            assert r.status == 200 and r.getheader("connection") == "close"
            assert np.array_equal(np.float32(json.loads(r.read())["probabilities"]), predictor.predict_proba(x))
        assert proc.wait(30) == 0, proc.stdout.read()[-3000:]


@pytest.mark.slow
def test_a_client_stalling_mid_body_cannot_hold_shutdown_past_its_timeout(trained_workdir):
    with real_server(trained_workdir, "--shutdown-timeout-s", "1.5") as (proc, port):
        stalled = socket.create_connection(("127.0.0.1", port), timeout=30)
        head = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        stalled.sendall(head.encode() + b'{"features": [0.1,')  # and never the rest
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stdout.read()[-3000:]
        assert time.monotonic() - t0 < 10  # the 1.5 s timeout (+ the idle grace and exit), not forever
        stalled.close()


@pytest.mark.slow
def test_a_burst_against_a_tiny_queue_answers_only_200_or_503_and_health_keeps_answering(trained_workdir, predictor):
    body = {"instances": random_rows(predictor, 4, 7).astype(np.float64).tolist()}

    async def burst(port: int) -> tuple[list[httpx.Response], list[int]]:
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits) as client:
            posts = [client.post("/predict", json=body) for _ in range(300)]
            healths = [client.get("/health") for _ in range(5)]
            out = await asyncio.gather(*posts, *healths)
            after = await client.get("/health")
            return list(out[:300]), [r.status_code for r in [*out[300:], after]]

    with real_server(trained_workdir, "--max-queue-rows", "4") as (proc, port):
        answers, health = asyncio.run(burst(port))
        assert proc.poll() is None
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    statuses = collections.Counter(r.status_code for r in answers)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0 and statuses[200] > 0, statuses
    for r in answers:
        if r.status_code == 503:
            assert r.headers["Retry-After"] == "1" and "too busy" in r.json()["detail"]
    assert health == [200] * 6
    assert "mlp_jax_batch_rows_bucket" in metrics and "mlp_jax_queue_wait_seconds_bucket" in metrics


# ----------------------------------------------------------------------------- the lone-request road


def test_a_lone_request_alone_runs_inline_and_others_still_coalesce(predictor):
    xs = [predictor.encode(random_rows(predictor, n, 50 + n)) for n in (1, 2, 3, 1, 5, 1, 1, 4)]
    batcher = MicroBatcher(predictor.run_encoded, max_batch=4096)

    async def main() -> list[np.ndarray]:
        one = await batcher.submit(xs[0])  # alone: its own loop turn, then inline, no dispatcher
        assert batcher.stats.reasons["idle"] == 1 and batcher.stats.batches == 1
        together = await asyncio.gather(*(batcher.submit(x) for x in xs))  # the first probes, the others join
        await batcher.close()
        return [one, *together]

    one, *together = asyncio.run(main())
    assert np.array_equal(one, predictor.run_encoded(xs[0]))
    for got, x in zip(together, xs, strict=True):
        assert np.array_equal(got, predictor.run_encoded(x))
    assert batcher.stats.requests == 1 + len(xs) and batcher.stats.batches < 1 + len(xs)
    assert batcher.stats.max_batch_requests > 1


def test_a_request_cancelled_while_probing_leaves_the_batcher_working(predictor):
    x = predictor.encode(random_rows(predictor, 1, 9))
    batcher = MicroBatcher(predictor.run_encoded, max_batch=4096)

    async def main() -> np.ndarray:
        first = asyncio.ensure_future(batcher.submit(x))
        await asyncio.sleep(0)  # `first` is in its probing turn
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        got = await asyncio.wait_for(batcher.submit(x), 5)
        await asyncio.wait_for(batcher.drain(), 5)
        await batcher.close()
        return got

    assert np.array_equal(asyncio.run(main()), predictor.run_encoded(x))


# ----------------------------------------------------------------------------- the service with and without batching


def _bodies(predictor: Predictor) -> list[dict]:
    rows = random_rows(predictor, 40, 11).astype(np.float64)
    names = list(predictor.feature_names)
    return [
        {"features": rows[0].tolist()},
        {"features": dict(zip(names, rows[1].tolist(), strict=True))},
        {"instances": rows[2:40].tolist()},
        {"features": rows[3].tolist()[:-1]},  # 400: too short
        {"features": [*rows[4].tolist()[:-1], "x"]},  # 400: text in a numeric model
        {"instances": []},  # 400: no rows
        {"nope": 1},  # 400: unknown field
    ]


def test_predict_answers_are_byte_identical_batched_unbatched_and_without_the_fast_path(predictor, monkeypatch):
    """The /predict fast path and the micro-batcher change no byte of any answer, 200 or 4xx."""
    from litestar.testing import TestClient

    from mlp_jax import serve

    def answers(**kwargs) -> list[tuple[int, bytes]]:
        with TestClient(serve.create_app(predictor, **kwargs)) as c:
            out = [(r.status_code, r.content) for r in (c.post("/predict", json=b) for b in _bodies(predictor))]
            out.append((0, c.post("/predict", content=b"{", headers={"content-type": "application/json"}).content))
            out.append((0, c.post("/predict", content=b"{}", headers={"content-type": "text/plain"}).content))
            return out

    batched, unbatched = answers(), answers(batching=False)
    monkeypatch.setattr(serve, "FAST_PATH_BYTES", 0)  # every request through Litestar's handler
    litestar_only = answers()
    assert batched == unbatched == litestar_only
    assert [s for s, _ in batched[:7]] == [200, 200, 200, 400, 400, 400, 400]


def test_the_fast_path_counts_requests_in_the_metrics(predictor):
    from litestar.testing import TestClient

    from mlp_jax import serve

    def count(text: str, status: str) -> float:
        key = f'mlp_jax_http_requests_total{{method="POST",path="/predict",status="{status}"}} '
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(key))

    with TestClient(serve.create_app(predictor)) as c:
        before = c.get("/metrics").text
        for b in _bodies(predictor):
            c.post("/predict", json=b)
        after = c.get("/metrics").text
    assert count(after, "200") - count(before, "200") == 3
    assert count(after, "400") - count(before, "400") == 4


# ----------------------------------------------------------------------------- one named record, without pandas


@pytest.mark.parametrize("which", ["penguins", "regression"])
@pytest.mark.slow
def test_record_encoder_gives_transform_bitwise_or_declines(which, tmp_path_factory):
    """Text, gaps, booleans, unknown and null-token categories: the same bits as the general path."""
    import pandas as pd

    from tests.helpers import trained_penguins, trained_regression

    predictor = Predictor.load((trained_penguins if which == "penguins" else trained_regression)(tmp_path_factory))
    encode = predictor.preprocessor.record_encoder()
    names = list(predictor.feature_names)
    csv = next(predictor.checkpoint.path.parent.parent.glob("*.csv"), None)
    if which == "penguins":
        from tests.helpers import penguins_csv

        csv = penguins_csv()
    frame = pd.read_csv(csv if csv else tmp_path_factory.getbasetemp() / "regression.csv")[names]
    records = [
        {c: (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)) for c, v in r.items()}
        for r in frame.to_dict("records")
    ]
    first = records[0]
    text = next(s.name for s in predictor.preprocessor.columns if s.role == "categorical")
    number = next(s.name for s in predictor.preprocessor.columns if s.role == "numeric")
    records += [{**first, text: "never seen"}, {**first, text: "NA"}, {**first, text: ""}, {**first, number: None}]
    records += [{**first, number: 3}, {**first, number: -1e300}]
    for r in records:
        got = encode(r)
        assert got is not None, r
        want = predictor.encode_counted([r])
        assert got[0].tobytes() == want[0].tobytes() and got[1] == want[1], r
    for odd in ({**first, number: "1.5"}, {**first, number: float("inf")}, {**first, text: 3}, {**first, "extra": 1}):
        assert encode(odd) is None  # the general path decides (and words the error)
    assert encode({k: v for k, v in first.items() if k != number}) is None


def test_one_positional_row_takes_the_record_encoder_with_the_same_bits(predictor):
    """The service's one-row shortcut for an all-numeric model: the same matrix as the numpy path."""
    from mlp_jax.serve import Service

    service = Service(predictor, 100)
    rows = random_rows(predictor, 50, 21).astype(np.float64).tolist()
    rows += [[None, *rows[0][1:]], [3, *rows[1][1:]], [-1e300, *rows[2][1:]]]
    for row in rows:
        got = service.encode([row])
        assert got.tobytes() == predictor.encode_counted([row])[0].tobytes(), row
        named = dict(zip(predictor.feature_names, row, strict=True))
        assert service.encode([named]).tobytes() == got.tobytes()


def test_a_lone_request_on_a_quiet_loop_does_not_even_yield(predictor):
    """Once the loop's idle task count is known, a lone request runs within its first step."""
    x = predictor.encode(random_rows(predictor, 1, 4))
    batcher = MicroBatcher(predictor.run_encoded, max_batch=4096)

    async def main() -> None:
        await batcher.submit(x)  # learns the quiet loop's task count (and probes once)
        for _ in range(3):
            coro = batcher.submit(x)
            with pytest.raises(StopIteration) as done:
                coro.send(None)  # a yield would return here instead of finishing
            assert np.array_equal(done.value.value, predictor.run_encoded(x))
        await batcher.close()

    asyncio.run(main())
    assert batcher.stats.batches == 4 and batcher.stats.reasons["idle"] == 4
