"""Micro-batching: concurrent requests share one call of the compiled bucket program.

:class:`MicroBatcher` sits between the HTTP handlers and the model. Each handler
``await``\\ s :meth:`MicroBatcher.submit` with its own validated ``[rows, features]``
float32 matrix; one dispatcher task stacks what is queued into one matrix, makes one
model call, and hands every request back its own slice. The model function must be
row-independent (``Predictor`` guarantees it: every row goes through the same fixed
``ROW_TILE`` program whatever the bucket), so a request gets bitwise the numbers it
would get alone.

When a batch is cut (the design, with the figures that chose it):

- A batch collects requests while the event loop still has runnable work: after each
  request joins, the dispatcher yields one loop turn (``asyncio.sleep(0)``, ~2 us) so
  handlers whose bodies have already arrived can join too. It is cut as soon as a turn
  brings nobody new, or the rows reach ``max_batch`` (the largest compiled bucket), or the
  oldest request has waited ``max_wait_s``. A request that is alone is therefore never
  held back by the timer: it costs one empty turn, and ``BatcherStats.reasons`` records
  it as ``"idle"``, not ``"max_wait"``.
- A request that finds the batcher idle (nothing queued, gathering or running) takes a
  shorter road to the same decision: it yields the one loop turn itself and, if nobody
  joined, runs its rows inline and returns, with no dispatcher wake-up and no future (in
  process, a lone one-row request cost ~95 us through the dispatcher against ~60 us for the
  bare model call; this road leaves one loop turn, ~3 us, plus its cache effects). If
  somebody did join, it puts itself at the head of the queue and the dispatcher takes over
  as above, so coalescing is unchanged. It skips even that turn when the loop holds exactly
  the fewest tasks an idle submit has seen before (the server's own tasks plus this
  request's): then no other request exists that could join. Co-arriving requests each
  have a task before the first runs (uvicorn creates them as bodies arrive), so they see
  more tasks and probe; a draining burst sees a new, lower count each time and probes too
  (a new minimum never skips), so it coalesces. At worst an unrelated task makes a lone
  request probe for nothing; answers are the same either way.
  (A count of open requests kept by the app does not work: with no await between reading
  the body and the model call, each request finishes before the next starts, so each saw
  itself alone and nothing coalesced.) On the loaded 2-core box the loop turn cost a
  single client ~0.2-0.3 ms of p50, far more than the ~3 us it costs on a quiet loop.
- One batch is in flight at a time (there is one device); requests arriving meanwhile
  queue and form the next batch.
- Small batches (``<= inline_rows``) run on the event loop thread; larger ones in one
  worker thread so the loop keeps accepting and queueing. Handing a call to a worker
  thread and back costs ~60 us on this 2-core box (uvloop, measured), twice a one-row
  model call (~30 us): a thread hop for a one-row request would add ~15% to a lone
  client's latency. While an inline batch runs, arrivals wait in the socket buffers and
  join the next batch on the next turn, so coalescing still happens under load.
- A request larger than ``max_batch`` is its own batch (``run`` chunks it); it still
  waits its turn in the queue like any other, so it neither starves nor is starved.
- Admission is bounded: past ``max_queue_rows`` queued rows, :meth:`submit` raises
  :class:`QueueFull` at once (HTTP: 503 with ``Retry-After``) instead of queueing without
  bound. An empty queue admits any single request, so a large but allowed request is
  never refused forever.
- :meth:`close` stops admissions (:class:`BatcherClosed`, also a 503), finishes what is
  queued and in flight, then stops the dispatcher and the worker thread.

An exception from ``run`` is set on the requests of that batch only; the dispatcher
carries on with the next batch.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: Default longest time the first request of a batch waits for others to join.
DEFAULT_MAX_WAIT_S = 0.001
#: Default bound on queued (not yet running) rows before submit() answers QueueFull.
DEFAULT_MAX_QUEUE_ROWS = 16_384
#: Default largest batch run on the event loop thread (the service's former OFFLOAD_ROWS).
DEFAULT_INLINE_ROWS = 1024

#: Why a batch was cut (keys of BatcherStats.reasons).
REASONS = ("idle", "full", "max_wait", "oversize", "closing")


class QueueFull(RuntimeError):
    """The queue holds ``max_queue_rows`` rows already: try again later (HTTP 503 + Retry-After)."""

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BatcherClosed(QueueFull):
    """The batcher is shutting down and accepts no new work (also a 503)."""


@dataclasses.dataclass
class BatcherStats:
    """Counts since construction: what tests and ``/metadata`` can read without Prometheus."""

    batches: int = 0
    requests: int = 0
    rows: int = 0
    rejected: int = 0
    failed_batches: int = 0
    max_batch_rows: int = 0
    max_batch_requests: int = 0
    reasons: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(REASONS, 0))


@dataclasses.dataclass(eq=False)
class _Pending:
    x: np.ndarray
    future: asyncio.Future[np.ndarray]
    queued_at: float


class MicroBatcher:
    """Coalesces concurrent :meth:`submit` calls into single calls of ``run``.

    Args:
      run: ``[rows, features] float32 -> [rows, outputs]``, row-independent; any row count
        (e.g. ``Predictor.proba_checked``).
      max_batch: rows per coalesced call; align it with the largest compiled bucket.
      max_wait_s: longest time the first request of a batch waits for others to join.
      max_queue_rows: queued rows past which :meth:`submit` raises :class:`QueueFull`.
      inline_rows: batches up to this many rows run on the event loop thread, larger ones
        in the worker thread (see the module docstring for why).
      on_batch: called per batch with ``(rows, requests, reason)``: the batch-size histogram.
      on_wait: called per request with its seconds in the queue: the queue-wait histogram.
      retry_after_s: the ``Retry-After`` a :class:`QueueFull` suggests.
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        max_batch: int,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        max_queue_rows: int = DEFAULT_MAX_QUEUE_ROWS,
        *,
        inline_rows: int = DEFAULT_INLINE_ROWS,
        on_batch: Callable[[int, int, str], None] | None = None,
        on_wait: Callable[[float], None] | None = None,
        retry_after_s: int = 1,
    ):
        if max_batch < 1 or max_queue_rows < 1 or max_wait_s < 0 or inline_rows < 0:
            raise ValueError(
                "max_batch and max_queue_rows must be positive, max_wait_s and inline_rows not negative; got "
                f"{max_batch}, {max_queue_rows}, {max_wait_s}, {inline_rows}"
            )
        self._run = run
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self.max_queue_rows = int(max_queue_rows)
        self.inline_rows = int(inline_rows)
        self._on_batch = on_batch
        self._on_wait = on_wait
        self.retry_after_s = retry_after_s
        self.stats = BatcherStats()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._closing = False
        self._wakeup: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._idle: asyncio.Event | None = None  # set when nothing is queued or in flight
        self._executor: ThreadPoolExecutor | None = None
        self._probing = False  # a lone request is taking its loop turn (see submit)
        self._fewest_tasks = 1 << 30  # fewest tasks on the loop seen by an idle submit (see submit)
        self._in_flight = False  # the dispatcher is gathering or running a batch

    # -------------------------------------------------------------------- public

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a batch (not counting the batch in flight)."""
        return self._queued_rows

    @property
    def closing(self) -> bool:
        return self._closing

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """This request's ``run`` output rows, computed in a batch with whatever else is queued.

        Args:
          x: ``[rows, features]`` float32, already validated (rows >= 1).

        Raises:
          QueueFull: the queue is full (at once, nothing queued).
          BatcherClosed: :meth:`close` was called.
          Exception: whatever ``run`` raised for the batch this request was in.
        """
        n = len(x)
        self.admit(n)
        self._ensure_dispatcher()
        assert self._wakeup is not None and self._idle is not None
        loop = asyncio.get_running_loop()
        queued_at = time.perf_counter()
        if not (self._queue or self._probing or self._in_flight) and n <= min(self.inline_rows, self.max_batch):
            tasks = len(asyncio.all_tasks(loop))
            if tasks == self._fewest_tasks:  # no other task exists that could join: run now
                return self._now(x, queued_at)
            self._fewest_tasks = min(tasks, self._fewest_tasks)
            out = await self._alone(x, queued_at)
            if out is not None:
                return out
            item = _Pending(x, loop.create_future(), queued_at)
            self._queue.appendleft(item)  # others joined during our turn: we were first
        else:
            item = _Pending(x, loop.create_future(), queued_at)
            self._queue.append(item)
        self._queued_rows += n
        self._idle.clear()
        self._wakeup.set()
        return await item.future

    def _now(self, x: np.ndarray, queued_at: float) -> np.ndarray:
        """Runs a lone request's rows inline, counted as an ``idle`` batch of one."""
        self._record([x], len(x), queued_at, "idle", time.perf_counter())
        try:
            out = self._run(x)
        except Exception:
            self.stats.failed_batches += 1
            raise
        if len(out) != len(x):
            raise RuntimeError(f"the model returned {len(out)} rows for a batch of {len(x)}")
        return out

    async def _alone(self, x: np.ndarray, queued_at: float) -> np.ndarray | None:
        """The idle batcher's road: one loop turn; nobody joined -> run inline now, else None."""
        assert self._wakeup is not None and self._idle is not None
        self._probing = True
        self._idle.clear()
        try:
            await asyncio.sleep(0)  # handlers with a body already here reach submit() and queue
            if self._queue:
                return None
            return self._now(x, queued_at)
        finally:
            self._probing = False
            if self._queue or self._closing:
                self._wakeup.set()  # the dispatcher waits while we probe
            elif not self._in_flight:
                self._idle.set()

    def admit(self, n: int) -> None:
        """Raises what :meth:`submit` would raise at once for ``n`` rows now (callers may ask before encoding).

        Raises:
          QueueFull: the queue is full.
          BatcherClosed: :meth:`close` was called.
        """
        if self._closing:
            self.stats.rejected += 1
            raise BatcherClosed("the server is shutting down", self.retry_after_s)
        if self._queued_rows and self._queued_rows + n > self.max_queue_rows:
            self.stats.rejected += 1
            raise QueueFull(
                f"too busy: {self._queued_rows} rows queued, the limit is {self.max_queue_rows}", self.retry_after_s
            )

    async def drain(self) -> None:
        """Waits until everything submitted so far has been answered (admissions stay open)."""
        if self._idle is not None:
            await self._idle.wait()

    async def close(self) -> None:
        """Stops admissions, finishes the queued and in-flight work, stops the dispatcher. Idempotent."""
        self._closing = True
        if self._dispatcher is not None:
            assert self._wakeup is not None
            self._wakeup.set()
            await asyncio.shield(self._dispatcher)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # -------------------------------------------------------------------- dispatcher

    def _ensure_dispatcher(self) -> None:
        # Created on the first submit so the batcher binds to the loop that serves requests,
        # not the one (if any) that constructed it.
        if self._dispatcher is None:
            self._wakeup = asyncio.Event()
            self._idle = asyncio.Event()
            self._idle.set()
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch(), name="mlp-jax-batcher")

    async def _dispatch(self) -> None:
        assert self._wakeup is not None and self._idle is not None
        while True:
            if not self._queue or self._probing:  # a probing lone request wakes us when it is done
                if not self._probing:
                    self._idle.set()
                    if self._closing:
                        return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._in_flight = True
            try:
                reason = await self._gather()
                batch = self._take()
                if batch:
                    await self._execute(batch, reason)
            finally:
                self._in_flight = False

    async def _gather(self) -> str:
        """Lets runnable handlers join the head request; returns why the batch is cut now."""
        if self._queue[0].x.shape[0] >= self.max_batch:
            return "oversize" if self._queue[0].x.shape[0] > self.max_batch else "full"
        deadline = self._queue[0].queued_at + self.max_wait_s
        seen = len(self._queue)
        while True:
            if self._queued_rows >= self.max_batch:
                return "full"
            if self._closing:
                return "closing"
            await asyncio.sleep(0)  # one loop turn: handlers with a body already here reach submit()
            if not self._queue:  # every queued request was cancelled meanwhile
                return "idle"
            if len(self._queue) == seen:
                return "idle"
            seen = len(self._queue)
            if time.perf_counter() >= deadline:
                return "max_wait"

    def _take(self) -> list[_Pending]:
        """Whole requests from the head, up to ``max_batch`` rows (one oversize request alone)."""
        batch: list[_Pending] = []
        rows = 0
        while self._queue:
            item = self._queue[0]
            n = item.x.shape[0]
            if item.future.done():  # cancelled by its caller (client went away): drop it
                self._queue.popleft()
                self._queued_rows -= n
                continue
            if batch and rows + n > self.max_batch:
                break
            self._queue.popleft()
            self._queued_rows -= n
            batch.append(item)
            rows += n
            if rows >= self.max_batch:
                break
        return batch

    def _record(self, xs: list[np.ndarray], rows: int, queued_at: float | None, reason: str, start: float) -> None:
        """Counts one batch (``queued_at``: a lone request's, whose wait is observed here)."""
        st = self.stats
        st.batches += 1
        st.requests += len(xs)
        st.rows += rows
        st.reasons[reason] += 1
        st.max_batch_rows = max(st.max_batch_rows, rows)
        st.max_batch_requests = max(st.max_batch_requests, len(xs))
        if queued_at is not None and self._on_wait is not None:
            self._on_wait(start - queued_at)
        if self._on_batch is not None:
            self._on_batch(rows, len(xs), reason)

    async def _execute(self, batch: list[_Pending], reason: str) -> None:
        x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch])
        rows = x.shape[0]
        st = self.stats
        start = time.perf_counter()
        if self._on_wait is not None:
            for p in batch:
                self._on_wait(start - p.queued_at)
        self._record([p.x for p in batch], rows, None, reason, start)
        try:
            if rows <= self.inline_rows:
                out = self._run(x)
            else:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="mlp-jax-batcher")
                out = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, x)
        except Exception as e:
            st.failed_batches += 1
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(e)
            return
        if len(out) != rows:
            error = RuntimeError(f"the model returned {len(out)} rows for a batch of {rows}")
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            return
        offset = 0
        for p in batch:
            n = p.x.shape[0]
            if not p.future.done():
                p.future.set_result(out[offset : offset + n])
            offset += n
