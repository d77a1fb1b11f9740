"""The batched ledger writer against real databases: batching, shutdown, a full queue and a database outage."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mmproxy.db import Database, open_database
from mmproxy.db.sqlite import SQLiteDatabase
from mmproxy.spend.ledger import Ledger
from tests.db.test_db import (  # noqa: F401 -- the url and db fixtures are shared
    BACKENDS,
    KEY_A,
    KEY_B,
    T0,
    db_fixture,
    fresh_url,
    key,
    record,
    url_fixture,
)


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


def requests(count: int, prefix: str = "r") -> list:
    """``count`` records spread over two keys and the master key, costs 0.001 .. 0.003."""
    keys = [KEY_A, KEY_B, None]
    return [record(f"{prefix}{i}", started=T0 + i, key_hash=keys[i % 3], cost_usd=0.001 * (1 + i % 3))
            for i in range(count)]


def spend_of(records: list, key_hash: str) -> float:
    return sum(rec.cost_usd for rec in records if rec.key_hash == key_hash)


async def stored(db: Database) -> int:
    return sum(row["requests"] for row in await db.spend_report("model"))


async def test_full_batches_leave_at_once_the_rest_on_the_interval(db: Database) -> None:
    await db.insert_key(key(KEY_A))
    ledger = Ledger(db, batch_size=10, flush_interval=60)
    await ledger.start()
    records = requests(25)
    for rec in records:
        ledger.record(rec)
    await until(lambda: ledger.written == 20)
    assert (ledger.queued, await stored(db)) == (5, 20)  # two whole batches; five wait for the interval
    await ledger.flush()
    assert (ledger.written, ledger.queued, await stored(db)) == (25, 0, 25)
    assert (await db.get_key(KEY_A)).spend == pytest.approx(spend_of(records, KEY_A))
    await ledger.close()


async def test_a_partial_batch_goes_out_after_the_interval(db: Database) -> None:
    ledger = Ledger(db, batch_size=1000, flush_interval=0.05)
    await ledger.start()
    for rec in requests(3):
        ledger.record(rec)
    await until(lambda: ledger.written == 3)
    assert await stored(db) == 3
    await ledger.close()


async def test_flush_lets_a_reader_see_its_own_writes(db: Database) -> None:
    ledger = Ledger(db, flush_interval=60)
    await ledger.start()
    ledger.record(record("mine"))
    await ledger.flush()
    assert [row["request_id"] for row in await db.spend_logs()] == ["mine"]
    await ledger.close()


async def test_close_writes_everything_and_the_ledger_survives_a_restart(url: str, tmp_path: Path) -> None:
    db = open_database(url, tmp_path / "unused.db")
    await db.start()
    await db.insert_key(key(KEY_A))
    await db.insert_key(key(KEY_B))
    ledger = Ledger(db, batch_size=100, flush_interval=60)
    await ledger.start()
    records = requests(1234)
    for rec in records:
        ledger.record(rec)
    await ledger.close()
    await db.close()
    assert (ledger.written, ledger.dropped) == (1234, 0)

    reopened = open_database(url, tmp_path / "unused.db")
    await reopened.start()
    try:
        assert await stored(reopened) == 1234
        assert len(await reopened.spend_logs(limit=5000)) == 1234
        for key_hash in (KEY_A, KEY_B):
            assert (await reopened.get_key(key_hash)).spend == pytest.approx(spend_of(records, key_hash))
    finally:
        await reopened.close()


async def test_close_right_after_a_batch_fills_writes_it_and_returns(db: Database) -> None:
    """The flusher is woken by the full batch and told to stop in the same turn of the loop: it must still stop."""
    ledger = Ledger(db, batch_size=1, flush_interval=60)
    await ledger.start()
    await asyncio.sleep(0.05)  # the flusher now waits for a full batch
    ledger.record(record("last"))
    started = time.monotonic()
    await asyncio.wait_for(ledger.close(), 10)
    assert time.monotonic() - started < 5
    assert (ledger.written, ledger.queued) == (1, 0)
    assert [row["request_id"] for row in await db.spend_logs()] == ["last"]


async def test_a_full_queue_drops_counts_and_logs_once(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    ledger = Ledger(db, max_queue=10, batch_size=4)  # not started: nothing drains the queue
    with caplog.at_level(logging.ERROR, logger="mmproxy.spend"):
        for rec in requests(15):
            ledger.record(rec)
    assert (ledger.queued, ledger.dropped) == (10, 5)
    assert len([r for r in caplog.records if "queue full" in r.getMessage()]) == 1
    await ledger.close()
    assert (ledger.written, await stored(db)) == (10, 10)


# -- outages ---------------------------------------------------------------------------------------
class Relay:
    """A TCP relay in front of the PostgreSQL server: cutting it is, to the gateway, the server going away."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


@contextlib.asynccontextmanager
async def outage_switch(backend: str, url: str, tmp_path: Path) -> AsyncIterator[tuple[Database, object]]:
    """A database and a switch: ``await switch(True)`` makes it unreachable, ``await switch(False)`` brings it back."""
    if backend == "sqlite":
        path = url.removeprefix("sqlite://")
        db: Database = SQLiteDatabase(path, busy_timeout=0.1)
        blocker = sqlite3.connect(path, isolation_level=None)

        async def switch(out: bool) -> None:
            blocker.execute("BEGIN EXCLUSIVE" if out else "ROLLBACK")  # another writer holds the file

        try:
            yield db, switch
        finally:
            blocker.close()
        return
    parts = urlsplit(url)
    relay = Relay(parts.hostname or "127.0.0.1", parts.port or 5432)
    await relay.up()
    db = open_database(parts._replace(netloc=f"{parts.username}@127.0.0.1:{relay.port}").geturl(), tmp_path)

    async def switch(out: bool) -> None:
        await (relay.down() if out else relay.up())

    try:
        yield db, switch
    finally:
        with contextlib.suppress(Exception):
            await relay.down()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_rows_wait_out_a_database_outage(backend: str, request: pytest.FixtureRequest, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    async with fresh_url(backend, request, tmp_path) as url, outage_switch(backend, url, tmp_path) as (db, switch):
        await db.start()
        await db.insert_key(key(KEY_A))
        ledger = Ledger(db, batch_size=20, flush_interval=0.05)
        await ledger.start()
        before, during = requests(10, "before-"), requests(30, "during-")
        for rec in before:
            ledger.record(rec)
        await until(lambda: ledger.written == 10)

        await switch(True)
        for rec in during:
            ledger.record(rec)
        await until(lambda: "write failed" in caplog.text)
        with pytest.raises(Exception):  # noqa: B017 -- the driver's error: a reader learns the database is down
            await ledger.flush()
        assert (ledger.written, ledger.queued, ledger.dropped) == (10, 30, 0)

        await switch(False)
        await until(lambda: ledger.written == 40)
        await ledger.close()
        assert await stored(db) == 40
        assert (await db.get_key(KEY_A)).spend == pytest.approx(spend_of(before + during, KEY_A))
        await db.close()


async def test_close_gives_up_on_a_dead_database_after_its_timeout(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "locked.db"
    db = SQLiteDatabase(path, busy_timeout=0.05)
    await db.start()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    ledger = Ledger(db)
    for rec in requests(7):
        ledger.record(rec)
    started = time.monotonic()
    await ledger.close(timeout=0.5)
    assert time.monotonic() - started < 5
    assert (ledger.written, ledger.dropped, ledger.queued) == (0, 7, 0)
    assert "7 rows could not be written" in caplog.text
    blocker.close()
    await db.close()
