"""The spend ledger writer: requests hand over their record in O(1); a background task writes them in batches.

The request path only turns its record into a row and appends it to a bounded deque: converting a whole batch at
once would hold the event loop for it. Rows leave the deque only once the database has committed them, so a write
that fails (database down, restarting, locked) keeps them for the next try, with backoff; the bound is what
protects memory while that lasts, and rows beyond it are dropped and counted. Each batch carries the sum of its
cost per virtual key, added to the keys in the same transaction as the rows. With a ``Spool`` every row is also
on disk from the moment it is queued until it is committed, so neither a crash nor a full queue loses it.

A stream's row is written when the stream ends, but its client had the request id from the moment its headers
left: a process killed mid-stream would leave no row for a request the client was answered (and billed upstream)
for. So a stream also spools a provisional row as its headers leave (``begin``), marked ``INTERRUPTED``; it never
goes to the database while the process lives (the final row takes its place in the spool), and a process that
finds it without its final row after a crash writes it as the request's row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from itertools import islice

from mmproxy.db.base import Database
from mmproxy.spend.record import COLUMNS, RequestRecord
from mmproxy.spend.spool import Spool

__all__ = ["INTERRUPTED", "Ledger"]

log = logging.getLogger("mmproxy.spend")

_LOG_EVERY_S = 10.0
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 30.0
_KEY_HASH = COLUMNS.index("key_hash")
_COST = COLUMNS.index("cost_usd")
_REQUEST_ID = COLUMNS.index("request_id")
_ERROR_CODE = COLUMNS.index("error_code")
INTERRUPTED = "gateway_interrupted"  # the error code of a stream whose process died before it ended


class Ledger:
    def __init__(self, db: Database, spool: Spool | None = None, max_queue: int = 50_000, batch_size: int = 500,
                 flush_interval: float = 0.5) -> None:
        if max_queue < 1 or batch_size < 1 or flush_interval <= 0:
            raise ValueError("max_queue and batch_size must be at least 1 and flush_interval positive")
        self._db = db
        self._spool = spool
        self._queue: deque[tuple[int, tuple[object, ...]]] = deque()  # (spool segment or -1, row)
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._interval = flush_interval
        self._full = asyncio.Event()  # a whole batch is waiting, or close() was called
        self._stop = asyncio.Event()  # close() was called: the flusher ends after its write in flight
        self._lock = asyncio.Lock()  # one write at a time: the flusher's or a flush() caller's
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0
        self._drop_logged_at = -_LOG_EVERY_S
        self._error_logged_at = -_LOG_EVERY_S
        self._failing = False
        self._begun: dict[str, int] = {}  # request id -> spool segment of a stream's provisional row

    @property
    def queued(self) -> int:
        return len(self._queue)

    def record(self, record: RequestRecord) -> None:
        """Queue ``record`` for writing; the caller must not change it afterwards."""
        queue = self._queue
        row = record.row()
        spool = self._spool
        segment = spool.append(row) if spool is not None else -1
        if self._begun and spool is not None and (begun := self._begun.pop(record.request_id, None)) is not None:
            spool.committed([begun])  # the stream's provisional row (begin): the final row stands in its place
        if len(queue) >= self._max_queue:
            self.dropped += 1
            now = time.monotonic()
            if now - self._drop_logged_at >= _LOG_EVERY_S:
                self._drop_logged_at = now
                log.error("spend ledger queue full (%d rows waiting for the database): %d rows dropped so far%s",
                          len(queue), self.dropped,
                          " (kept in the spool: written at the next start)" if self._spool is not None else "")
            return
        queue.append((segment, row))
        if len(queue) >= self._batch_size:
            self._full.set()

    def begin(self, record: RequestRecord) -> None:
        """A stream's headers are leaving: spool its provisional row (see the module's docstring), on disk before
        they go."""
        if self._spool is not None:
            row = record.row()
            provisional = (*row[:_ERROR_CODE], INTERRUPTED, *row[_ERROR_CODE + 1:])
            self._begun[record.request_id] = self._spool.append(provisional)
            self._spool.write()

    def persist(self) -> None:
        """An answer is about to leave: the rows spooled so far (its own, and those of requests that finished
        earlier in this turn of the event loop) go to the kernel now rather than at the turn's end, so no answer is
        ever ahead of its row."""
        if self._spool is not None:
            self._spool.write()

    async def start(self) -> None:
        if self._spool is not None and self._task is None:
            recovered = self._spool.recover()  # a stopped process's rows go first
            ended = {row[_REQUEST_ID] for _, row in recovered if row[_ERROR_CODE] != INTERRUPTED}
            superseded = [segment for segment, row in recovered
                          if row[_ERROR_CODE] == INTERRUPTED and row[_REQUEST_ID] in ended]
            if superseded:  # streams that ended: their final rows stand, the provisional ones go
                recovered = [(segment, row) for segment, row in recovered
                             if row[_ERROR_CODE] != INTERRUPTED or row[_REQUEST_ID] not in ended]
                self._spool.committed(superseded)
            self._queue.extendleft(reversed(recovered))
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mmproxy-ledger")

    async def flush(self) -> None:
        """Write every row queued at the time of the call; the database's error if it cannot."""
        remaining = len(self._queue)
        while remaining > 0:
            written = await self._write_batch()
            if written == 0:
                break
            remaining -= written

    async def close(self, timeout: float = 30.0) -> None:
        """Stop the flusher and write what is left, retrying for up to ``timeout`` seconds if the database fails."""
        task, self._task = self._task, None
        if task is not None:
            # Told, not cancelled: a write in flight finishes, and a cancel landing just as the flusher woke for
            # a full batch would be lost inside asyncio.wait_for (Python 3.11), leaving it to run forever.
            self._stop.set()
            self._full.set()
            await task
        deadline = time.monotonic() + timeout
        delay = 0.1
        while self._queue:
            try:
                await self.flush()
            except Exception as exc:
                self._failed(exc)
                if time.monotonic() + delay > deadline:
                    async with self._lock:
                        lost = len(self._queue)
                        self._queue.clear()
                    self.dropped += lost
                    log.error("spend ledger: %d rows could not be written before shutdown%s", lost,
                              "; they stay in the spool for the next start" if self._spool is not None
                              else " and are lost")
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if self._spool is not None:
            self._spool.close()

    async def _run(self) -> None:
        delay = _RETRY_FIRST_S
        while True:
            if len(self._queue) < self._batch_size:
                await _wait(self._full, self._interval)
            if self._stop.is_set():
                return
            self._full.clear()
            try:
                await self._write_batch()
            except Exception as exc:
                self._failed(exc)
                await _wait(self._stop, delay)
                delay = min(delay * 2, _RETRY_MAX_S)
            else:
                delay = _RETRY_FIRST_S

    async def _write_batch(self) -> int:
        """Write the oldest batch; it leaves the queue only once committed."""
        async with self._lock:
            queue = self._queue
            count = min(len(queue), self._batch_size)
            if count == 0:
                return 0
            items = list(islice(queue, count))
            rows = [row for _, row in items]
            key_spend: dict[str, float] = {}
            for row in rows:
                key_hash, cost = row[_KEY_HASH], row[_COST]
                # A cost that is not a number must not fail the batch forever; the database drops its row.
                if isinstance(key_hash, str) and cost and isinstance(cost, float | int):
                    key_spend[key_hash] = key_spend.get(key_hash, 0.0) + cost
            await self._db.write_requests(rows, key_spend)
            for _ in range(count):
                queue.popleft()
            if self._spool is not None:
                self._spool.committed([segment for segment, _ in items if segment >= 0])
            self.written += count
            if self._failing:
                self._failing = False
                log.warning("spend ledger: the database is back; %d rows still queued", len(queue))
            return count

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if not self._failing or now - self._error_logged_at >= _LOG_EVERY_S:
            self._error_logged_at = now
            log.error("spend ledger: write failed (%s); %d rows kept for retry, %d dropped so far",
                      self._db.describe_error(exc), len(self._queue), self.dropped)
        self._failing = True


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until ``event`` is set or ``seconds`` have passed."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
