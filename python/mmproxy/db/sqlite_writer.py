"""The SQLite ledger's writer: a process of its own that hands the core back to the gateway every few rows.

Why (issue 11: a single client's p99 went from ~1 ms to ~4 ms with the default ledger on): a batch costs the
writer several milliseconds of CPU (~20 µs a row), and on the core the gateway runs on, the kernel let that burst
run on for a scheduler slice (a few ms) before the event loop, woken by its client's socket, got the core. The
writer therefore yields the core (``sched_yield``) after every few rows of its transaction, which costs nothing
when nobody waits. It is a process rather than the database's worker thread so that it runs on its own GIL:
a thread yielding the core may still hold the gateway's GIL, and the loop would wait for it just the same.

The gateway sends each batch as one frame on the child's stdin and waits for one reply frame on its stdout (both a
4-byte length, then a pickle): ``(None, dropped)`` once the batch is committed, ``dropped`` being
``(request_id, reason)`` of each row the database refused, or ``(error, [])`` when nothing was committed (the
database is locked, the disk is full, ...), which the gateway raises so the ledger keeps the rows for a retry.
The child ends at the end of its stdin, and only then: it ignores SIGINT and SIGTERM, which a terminal or a
supervisor sends the whole process group, so a gateway shutting down can still write its last rows through it.
"""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from mmproxy.db.base import spend_after_skips
from mmproxy.db.queries import Queries
from mmproxy.db.schema import SQLITE

__all__ = ["BAD_ROW", "FRAME", "connect", "serve", "transaction", "write_requests"]

FRAME = struct.Struct("!I")  # the length of the pickle that follows
_Q = Queries.build(SQLITE)
_CHUNK = 16  # rows inserted between two offers of the core: ~0.3 ms of work
_INSERT_NEW = _Q.insert_log.removesuffix(" ON CONFLICT (request_id) DO NOTHING")
# Errors that belong to a row's values, not to the database being unavailable.
BAD_ROW = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, sqlite3.DataError,
           OverflowError, TypeError, ValueError)


def connect(path: str, busy_ms: int) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) that waits ``busy_ms`` for the write lock."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
    conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: a commit does not wait for the disk
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")  # take the write lock now, not halfway through
    try:
        yield conn
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def write_requests(conn: sqlite3.Connection, rows: list[tuple[object, ...]],
                   key_spend: dict[str, float]) -> list[tuple[object, str]]:
    """``Database.write_requests`` on ``conn``: the ``(request_id, reason)`` of each row the database refused."""
    try:
        with transaction(conn):
            # A plain INSERT (2.6 µs a row cheaper than ON CONFLICT): a stored request_id raises and the batch is
            # sorted out row by row below.
            for start in range(0, len(rows), _CHUNK):
                conn.executemany(_INSERT_NEW, rows[start:start + _CHUNK])
                os.sched_yield()  # a gateway waiting for this core gets it now, not after the whole batch
            conn.executemany(_Q.add_spend, key_spend.items())
        return []
    except BAD_ROW:
        pass
    refused: list[tuple[object, str]] = []
    with transaction(conn):
        skipped = []
        for row in rows:
            try:
                if conn.execute(_Q.insert_log, row).rowcount == 1:
                    continue
            except BAD_ROW as exc:
                refused.append((row[0] if row else None, f"{type(exc).__name__}: {exc}"))
            skipped.append(row)
        conn.executemany(_Q.add_spend, spend_after_skips(key_spend, skipped).items())
    return refused


def _reply(out: BinaryIO, reply: tuple[BaseException | None, list[tuple[object, str]]]) -> None:
    try:
        data = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
    except Exception:  # an error that does not pickle: its text still tells the gateway what went wrong
        error = reply[0]
        data = pickle.dumps((RuntimeError(f"{type(error).__name__}: {error}"), []), pickle.HIGHEST_PROTOCOL)
    out.write(FRAME.pack(len(data)) + data)
    out.flush()


def serve(path: str, busy_ms: int) -> None:
    """Write each batch from stdin and answer on stdout, until stdin ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    source, out = sys.stdin.buffer, sys.stdout.buffer
    conn = connect(path, busy_ms)
    try:
        while len(head := source.read(FRAME.size)) == FRAME.size:
            rows, key_spend = pickle.loads(source.read(FRAME.unpack(head)[0]))
            try:
                _reply(out, (None, write_requests(conn, rows, key_spend)))
            except Exception as exc:
                _reply(out, (exc, []))
    finally:
        conn.close()
