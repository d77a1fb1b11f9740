"""The embedded default: one SQLite file, used from a single worker thread so the event loop never blocks.

All statements run on that one thread, in order, over one connection (``sqlite3`` objects must stay on the
thread that made them). WAL lets other processes -- ``--workers``, a second gateway -- read while one writes;
``busy_timeout`` makes a writer wait its turn instead of failing at once.

A ledger batch costs the thread several milliseconds of CPU (~20 µs a row). On a core the event loop shares,
the kernel let that burst run on for a scheduler slice before the loop, woken by its client's socket, got the
core back: the stall behind issue 11's ledger-on p99 at concurrency 1. So the thread inserts a batch a few
rows at a time and offers the core (``sched_yield``, which also lets go of the GIL) between them; that costs
next to nothing when nothing else waits for the core.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson

from mmproxy.db import queries
from mmproxy.db.base import Database, KeyRecord, log, log_bad_row, spend_after_skips
from mmproxy.db.schema import KEYS, LATEST, SQLITE, pending, version_table

__all__ = ["SQLiteDatabase"]

T = TypeVar("T")

_Q = queries.Queries.build(SQLITE)
_STREAM = "stream"
_JSON_FIELDS = frozenset({"models", "metadata"})
# Errors that belong to a row's values, not to the database being unavailable.
_INSERT_NEW = _Q.insert_log.removesuffix(" ON CONFLICT (request_id) DO NOTHING")
_BAD_ROW = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, sqlite3.DataError,
            OverflowError, TypeError, ValueError)
_CHUNK = 16  # rows inserted between two offers of the core: ~0.3 ms of work


class SQLiteDatabase(Database):
    def __init__(self, path: Path | str, busy_timeout: float = 5.0) -> None:
        self._path = str(path)
        self._busy_ms = int(busy_timeout * 1000)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmproxy-sqlite")
        self._conn: sqlite3.Connection | None = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the database is not started")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._db
        conn.execute("BEGIN IMMEDIATE")  # take the write lock now, not halfway through
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._call(self._open)

    def _open(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            self._enable_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            self._conn = conn
            with self._transaction():
                conn.execute(version_table(SQLITE))
                current = conn.execute(_Q.version).fetchone()[0] or 0
                if current > LATEST:
                    log.warning("the database schema is version %d, newer than this mmproxy's %d", current, LATEST)
                for version, statements in pending(SQLITE, current):
                    for statement in statements:
                        conn.execute(statement)
                    conn.execute(_Q.record_version, (version, time.time()))
        except BaseException:
            self._conn = None
            conn.close()
            raise

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL; the switch can report "locked" without waiting on busy_timeout when several
        processes (``--workers N``) open a new file at once, so it is retried for as long."""
        deadline = time.monotonic() + self._busy_ms / 1000
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    async def close(self) -> None:
        if self._conn is not None:
            await self._call(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=False)

    # -- ledger -------------------------------------------------------------------------------------
    async def write_requests(self, rows: list[tuple[object, ...]], key_spend: dict[str, float]) -> None:
        await self._call(self._write, rows, key_spend)

    def _write(self, rows: list[tuple[object, ...]], key_spend: dict[str, float]) -> None:
        try:
            with self._transaction() as conn:
                # A plain INSERT (2.6 µs a row cheaper than ON CONFLICT): a stored request_id raises and the
                # batch is sorted out row by row below.
                for start in range(0, len(rows), _CHUNK):
                    conn.executemany(_INSERT_NEW, rows[start:start + _CHUNK])
                    os.sched_yield()  # an event loop waiting for this core gets it now, not after the batch
                conn.executemany(_Q.add_spend, key_spend.items())
            return
        except _BAD_ROW:
            pass
        with self._transaction() as conn:
            skipped = []
            for row in rows:
                try:
                    if conn.execute(_Q.insert_log, row).rowcount == 1:
                        continue
                except _BAD_ROW as exc:
                    log_bad_row(row, exc)
                skipped.append(row)
            conn.executemany(_Q.add_spend, spend_after_skips(key_spend, skipped).items())

    async def spend_logs(self, *, request_id: str | None = None, key_hash: str | None = None,
                         team_id: str | None = None, model: str | None = None, start: float | None = None,
                         end: float | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql, args = queries.spend_logs(SQLITE, request_id, key_hash, team_id, model, start, end, limit)
        rows = await self._call(self._fetch, sql, args)
        for row in rows:
            if row[_STREAM] is not None:
                row[_STREAM] = bool(row[_STREAM])
        return rows

    async def rated_decisions(self, model: str, limit: int) -> list[dict[str, Any]]:
        sql, args = queries.rated_decisions(SQLITE, model, limit)
        return await self._call(self._fetch, sql, args)

    async def spend_report(self, group_by: str, start: float | None = None, end: float | None = None,
                           key_hash: str | None = None, bucket_s: int | None = None) -> list[dict[str, Any]]:
        sql, args = queries.spend_report(SQLITE, group_by, start, end, key_hash, bucket_s)
        return [queries.report_row(row) for row in await self._call(self._fetch, sql, args)]

    def _fetch(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        cursor = self._db.execute(sql, args)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    async def add_feedback(self, request_id: str, score: float | None, label: str | None,
                           comment: str | None) -> bool:
        return await self._call(self._add_feedback, (request_id, score, label, comment, time.time()))

    def _add_feedback(self, values: tuple[object, ...]) -> bool:
        with self._transaction() as conn:
            if conn.execute(_Q.request_exists, values[:1]).fetchone() is None:
                return False
            conn.execute(_Q.upsert_feedback, values)
            return True

    # -- keys ---------------------------------------------------------------------------------------
    async def insert_key(self, key: KeyRecord) -> None:
        values = [_encode(name, getattr(key, name)) for name in queries.KEY_FIELDS]
        try:
            await self._call(self._execute, _Q.insert_key, values)
        except sqlite3.IntegrityError:
            raise ValueError("a key with this hash is already stored") from None

    def _execute(self, sql: str, args: list[Any]) -> int:
        with self._transaction() as conn:
            return conn.execute(sql, args).rowcount

    async def get_key(self, key_hash: str) -> KeyRecord | None:
        rows = await self._call(self._select, _Q.get_key, [key_hash])
        return _decode(rows[0]) if rows else None

    async def update_key(self, key_hash: str, changes: dict[str, Any]) -> KeyRecord | None:
        if not changes:
            return await self.get_key(key_hash)
        sql = queries.update_key(SQLITE, list(changes))
        args = [key_hash, *(_encode(name, value) for name, value in changes.items())]
        rows = await self._call(self._update, sql, args)
        return _decode(rows[0]) if rows else None

    def _update(self, sql: str, args: list[Any]) -> list[tuple[Any, ...]]:
        with self._transaction() as conn:
            return conn.execute(sql, args).fetchall()

    async def delete_keys(self, key_hashes: list[str]) -> int:
        return await self._call(self._delete, [(key_hash,) for key_hash in key_hashes])

    def _delete(self, args: list[tuple[str]]) -> int:
        with self._transaction() as conn:
            return conn.executemany(f"DELETE FROM {KEYS} WHERE key_hash = ?1", args).rowcount

    async def list_keys(self, team_id: str | None = None, limit: int = 100, offset: int = 0) -> list[KeyRecord]:
        sql, args = queries.list_keys(SQLITE, team_id, limit, offset)
        return [_decode(row) for row in await self._call(self._select, sql, args)]

    async def all_keys(self) -> list[KeyRecord]:
        return [_decode(row) for row in await self._call(self._select, _Q.all_keys, [])]

    def _select(self, sql: str, args: list[Any]) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, args).fetchall()


def _encode(name: str, value: Any) -> Any:
    return orjson.dumps(value).decode() if name in _JSON_FIELDS else value


def _decode(row: tuple[Any, ...]) -> KeyRecord:
    """The key as stored: ``models`` and ``metadata`` come back as JSON text, ``blocked`` as 0 or 1."""
    values = dict(zip(queries.KEY_FIELDS, row, strict=True))
    values["models"] = orjson.loads(values["models"])
    values["metadata"] = orjson.loads(values["metadata"])
    values["blocked"] = bool(values["blocked"])
    return KeyRecord(**values)
