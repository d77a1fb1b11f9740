"""The embedded default: one SQLite file, written by a process of its own and read from a worker thread.

Ledger batches go to the writer process (``mmproxy.db.sqlite_writer``, which says why it is a process); every
other statement -- migrations, reads, keys, feedback -- runs on one worker thread, in order, over one connection
(``sqlite3`` objects must stay on the thread that made them), so the event loop never blocks. WAL lets the
connections and other processes -- ``--workers``, a second gateway -- read while one writes; ``busy_timeout``
makes a writer wait its turn instead of failing at once. An in-memory database exists only in this process, so
its ledger rows are written on the worker thread too.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import sqlite3
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

import mmproxy
from mmproxy.db import queries, sqlite_writer
from mmproxy.db.base import Database, KeyRecord, log, log_bad_row, spend_after_skips
from mmproxy.db.schema import KEYS, LATEST, SQLITE, pending, version_table
from mmproxy.db.sqlite_writer import FRAME, transaction

__all__ = ["SQLiteDatabase"]

T = TypeVar("T")

_Q = queries.Queries.build(SQLITE)
_STREAM = "stream"
_JSON_FIELDS = frozenset({"models", "metadata"})
_MEMORY = ":memory:"
# The writer runs the mmproxy this process runs, whatever the child's sys.path would find first.
_PACKAGE_ROOT = str(Path(mmproxy.__file__).resolve().parent.parent)
_WRITER_MAIN = "import sys; from mmproxy.db.sqlite_writer import serve; serve(sys.argv[1], int(sys.argv[2]))"


class SQLiteDatabase(Database):
    def __init__(self, path: Path | str, busy_timeout: float = 5.0) -> None:
        self._path = str(path)
        self._busy_ms = int(busy_timeout * 1000)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmproxy-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._writer = _WriterProcess(self._path, self._busy_ms) if self._path != _MEMORY else None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the database is not started")
        return self._conn

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._call(self._open)
        if self._writer is not None:
            try:
                await self._writer.start()
            except BaseException:
                await self._call(self._db.close)
                self._conn = None
                raise

    def _open(self) -> None:
        if self._path != _MEMORY:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            self._enable_wal(conn)  # before the writer process opens the file: WAL, not a rollback journal
            conn.execute("PRAGMA synchronous = NORMAL")
            self._conn = conn
            with transaction(conn):
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
        if self._writer is not None:
            await self._writer.close()
        if self._conn is not None:
            await self._call(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=False)

    # -- ledger -------------------------------------------------------------------------------------
    async def write_requests(self, rows: list[tuple[object, ...]], key_spend: dict[str, float]) -> None:
        if self._writer is None:
            refused = await self._call(sqlite_writer.write_requests, self._db, rows, key_spend)
        else:
            refused = await self._writer.write(rows, key_spend)
        for request_id, reason in refused:
            log_bad_row(request_id, reason)

    async def spend_logs(self, *, request_id: str | None = None, key_hash: str | None = None,
                         team_id: str | None = None, model: str | None = None, start: float | None = None,
                         end: float | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql, args = queries.spend_logs(SQLITE, request_id, key_hash, team_id, model, start, end, limit)
        rows = await self._call(self._fetch, sql, args)
        for row in rows:
            if row[_STREAM] is not None:
                row[_STREAM] = bool(row[_STREAM])
        return rows

    async def spend_report(self, group_by: str, start: float | None = None,
                           end: float | None = None) -> list[dict[str, Any]]:
        sql, args = queries.spend_report(SQLITE, group_by, start, end)
        return [queries.report_row(row) for row in await self._call(self._fetch, sql, args)]

    def _fetch(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        cursor = self._db.execute(sql, args)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    async def add_feedback(self, request_id: str, score: float | None, label: str | None,
                           comment: str | None) -> bool:
        return await self._call(self._add_feedback, (request_id, score, label, comment, time.time()))

    def _add_feedback(self, values: tuple[object, ...]) -> bool:
        with transaction(self._db) as conn:
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
        with transaction(self._db) as conn:
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
        with transaction(self._db) as conn:
            return conn.execute(sql, args).fetchall()

    async def delete_keys(self, key_hashes: list[str]) -> int:
        return await self._call(self._delete, [(key_hash,) for key_hash in key_hashes])

    def _delete(self, args: list[tuple[str]]) -> int:
        with transaction(self._db) as conn:
            return conn.executemany(f"DELETE FROM {KEYS} WHERE key_hash = ?1", args).rowcount

    async def list_keys(self, team_id: str | None = None, limit: int = 100, offset: int = 0) -> list[KeyRecord]:
        sql, args = queries.list_keys(SQLITE, team_id, limit, offset)
        return [_decode(row) for row in await self._call(self._select, sql, args)]

    async def all_keys(self) -> list[KeyRecord]:
        return [_decode(row) for row in await self._call(self._select, _Q.all_keys, [])]

    def _select(self, sql: str, args: list[Any]) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, args).fetchall()


class _WriterProcess:
    """The gateway's end of the writer process: one batch at a time, the process (re)started when needed.

    Any failure halfway through an exchange -- the process gone, a cancelled caller -- ends the process, since
    its pipes may hold half a frame; the next write starts a new one. A batch whose commit the gateway did not
    hear about is written again then, and its stored rows are skipped as ``Database.write_requests`` promises.
    """

    def __init__(self, path: str, busy_ms: int) -> None:
        self._argv = [sys.executable, "-c", _WRITER_MAIN, path, str(busy_ms)]
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            await self._running()

    async def _running(self) -> asyncio.subprocess.Process:
        if self._proc is None or self._proc.returncode is not None:
            path = os.environ.get("PYTHONPATH")
            env = os.environ | {"PYTHONPATH": _PACKAGE_ROOT + (os.pathsep + path if path else "")}
            self._proc = await asyncio.create_subprocess_exec(*self._argv, stdin=asyncio.subprocess.PIPE,
                                                              stdout=asyncio.subprocess.PIPE, env=env)
        return self._proc

    async def write(self, rows: list[tuple[object, ...]], key_spend: dict[str, float]
                    ) -> list[tuple[object, str]]:
        refused: list[tuple[object, str]] = []
        try:
            payload = pickle.dumps((rows, key_spend), pickle.HIGHEST_PROTOCOL)
        except Exception:
            refused, rows, key_spend = _picklable(rows, key_spend)
            payload = pickle.dumps((rows, key_spend), pickle.HIGHEST_PROTOCOL)
        async with self._lock:
            proc = await self._running()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(FRAME.pack(len(payload)))
                proc.stdin.write(payload)
                await proc.stdin.drain()
                size, = FRAME.unpack(await proc.stdout.readexactly(FRAME.size))
                error, refused_there = pickle.loads(await proc.stdout.readexactly(size))
            except BaseException as exc:
                await self._end(proc)
                if isinstance(exc, OSError | asyncio.IncompleteReadError):
                    raise ConnectionError(f"the SQLite writer process stopped (exit code {proc.returncode})"
                                          ) from exc
                raise
        if error is not None:
            raise error
        return refused + refused_there

    async def close(self) -> None:
        """Let the process finish and exit: the end of its stdin is its signal."""
        async with self._lock:
            proc, self._proc = self._proc, None
            if proc is None or proc.returncode is not None:
                return
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                await self._end(proc)

    async def _end(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if self._proc is proc:
            self._proc = None


def _picklable(rows: list[tuple[object, ...]], key_spend: dict[str, float]
               ) -> tuple[list[tuple[object, str]], list[tuple[object, ...]], dict[str, float]]:
    """Why each row that cannot travel to the writer was refused, the rows that can, and their spend.

    A value no pickle can carry is a bad row like any other: dropped, so that it does not hold back the batch.
    """
    refused: list[tuple[object, str]] = []
    kept, skipped = [], []
    for row in rows:
        try:
            pickle.dumps(row, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            refused.append((row[0] if row else None, f"{type(exc).__name__}: {exc}"))
            skipped.append(row)
        else:
            kept.append(row)
    return refused, kept, spend_after_skips(key_spend, skipped)


def _encode(name: str, value: Any) -> Any:
    return orjson.dumps(value).decode() if name in _JSON_FIELDS else value


def _decode(row: tuple[Any, ...]) -> KeyRecord:
    """The key as stored: ``models`` and ``metadata`` come back as JSON text, ``blocked`` as 0 or 1."""
    values = dict(zip(queries.KEY_FIELDS, row, strict=True))
    values["models"] = orjson.loads(values["models"])
    values["metadata"] = orjson.loads(values["metadata"])
    values["blocked"] = bool(values["blocked"])
    return KeyRecord(**values)
