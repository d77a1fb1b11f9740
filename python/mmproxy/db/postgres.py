"""PostgreSQL through a small asyncpg pool, for several gateway instances sharing one ledger and key store.

Timestamps travel as epoch seconds: a per-connection codec turns floats into ``timestamptz`` and back (in
asyncpg's microseconds-since-2000 tuple form), so rows go from ``RequestRecord.row()`` to ``COPY`` untouched
and read back as the floats the rest of the gateway uses.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import orjson

from mmproxy.db import queries
from mmproxy.db.base import Database, R, Record, log, log_bad_row, spend_after_skips
from mmproxy.db.schema import LATEST, LOGS, POSTGRES, pending, version_table
from mmproxy.spend.record import COLUMNS

__all__ = ["PostgresDatabase"]

_Q = queries.Queries.build(POSTGRES)
_RQ = queries.RecordQueries.every(POSTGRES)
_PG_EPOCH = 946_684_800.0  # 2000-01-01T00:00:00Z, where PostgreSQL counts timestamps from
_MIGRATION_LOCK = 0x6D6D70726F7879  # "mmproxy": one migrator at a time across instances
_INSERT_ONE = _Q.insert_log + " RETURNING 1"
# Errors that belong to a row's values, not to the database being unavailable.
_BAD_ROW = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, OverflowError, TypeError, ValueError)
# Errors of a server that is down, shutting down, starting up or dropped the connection.
_UNAVAILABLE = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.OperatorInterventionError)


def _encode_ts(seconds: float) -> tuple[int]:
    return (round((seconds - _PG_EPOCH) * 1_000_000),)


def _decode_ts(value: tuple[int]) -> float:
    return value[0] / 1_000_000 + _PG_EPOCH


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("timestamptz", schema="pg_catalog", encoder=_encode_ts, decoder=_decode_ts,
                              format="tuple")
    await conn.set_type_codec("jsonb", schema="pg_catalog", encoder=lambda value: orjson.dumps(value).decode(),
                              decoder=orjson.loads, format="text")


class PostgresDatabase(Database):
    def __init__(self, url: str, min_size: int = 0, max_size: int = 4, connect_timeout: float = 5.0,
                 command_timeout: float = 60.0) -> None:
        self._url = url
        # min_size 0: idle connections are still kept and reused, but during an outage asyncpg does not also
        # try to restore a floor of connections (logging a traceback each time); the ledger's retries suffice.
        self._pool_args = {"min_size": min_size, "max_size": max_size, "timeout": connect_timeout,
                           "command_timeout": command_timeout}
        password = urlsplit(url).password
        self._secrets = [secret for secret in {password, unquote(password)} if secret] if password else []
        self._pool: asyncpg.Pool | None = None

    @property
    def _db(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the database is not started")
        return self._pool

    def describe_error(self, exc: BaseException) -> str:
        text = super().describe_error(exc)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, _UNAVAILABLE) or super().unavailable(exc)

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        pool = await asyncpg.create_pool(self._url, init=_init_connection, **self._pool_args)
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await conn.execute(version_table(POSTGRES))
                current = await conn.fetchval(_Q.version) or 0
                if current > LATEST:
                    log.warning("the database schema is version %d, newer than this mmproxy's %d", current, LATEST)
                for version, statements in pending(POSTGRES, current):
                    for statement in statements:
                        await conn.execute(statement)
                    await conn.execute(_Q.record_version, version, time.time())
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # -- ledger -------------------------------------------------------------------------------------
    async def write_requests(self, rows: list[tuple[object, ...]], key_spend: dict[str, float]) -> None:
        async with self._db.acquire() as conn:
            try:
                async with conn.transaction():
                    await conn.copy_records_to_table(LOGS, records=rows, columns=COLUMNS)
                    await _add_spend(conn, key_spend)
                return
            except _BAD_ROW:
                pass  # a duplicate or a bad value: undone; sort it out row by row
            async with conn.transaction():
                skipped = []
                for row in rows:
                    try:
                        async with conn.transaction():
                            if await conn.fetchval(_INSERT_ONE, *row) is not None:
                                continue
                    except _BAD_ROW as exc:
                        log_bad_row(row, exc)
                    skipped.append(row)
                await _add_spend(conn, spend_after_skips(key_spend, skipped))

    async def spend_logs(self, *, request_id: str | None = None, key_hash: str | None = None,
                         team_id: str | None = None, model: str | None = None, start: float | None = None,
                         end: float | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql, args = queries.spend_logs(POSTGRES, request_id, key_hash, team_id, model, start, end, limit)
        return [dict(row.items()) for row in await self._db.fetch(sql, *args)]

    async def rated_decisions(self, model: str, limit: int) -> list[dict[str, Any]]:
        sql, args = queries.rated_decisions(POSTGRES, model, limit)
        return [dict(row.items()) for row in await self._db.fetch(sql, *args)]

    async def spend_report(self, group_by: str, start: float | None = None, end: float | None = None,
                           key_hash: str | None = None, bucket_s: int | None = None) -> list[dict[str, Any]]:
        sql, args = queries.spend_report(POSTGRES, group_by, start, end, key_hash, bucket_s)
        return [queries.report_row(dict(row.items())) for row in await self._db.fetch(sql, *args)]

    async def add_feedback(self, request_id: str, score: float | None, label: str | None,
                           comment: str | None) -> bool:
        async with self._db.acquire() as conn, conn.transaction():
            if await conn.fetchval(_Q.request_exists, request_id) is None:
                return False
            await conn.execute(_Q.upsert_feedback, request_id, score, label, comment, time.time())
            return True

    # -- keys, teams and users -------------------------------------------------------------------------
    async def insert_record(self, record: Record) -> None:
        table = queries.TABLES[record.KIND]
        try:
            await self._db.execute(_RQ[record.KIND].insert, *(getattr(record, name) for name in table.fields))
        except asyncpg.UniqueViolationError:
            raise ValueError(f"a {record.KIND} with this id is already stored") from None

    async def get_record(self, kind: type[R], ident: str) -> R | None:
        row = await self._db.fetchrow(_RQ[kind.KIND].get, ident)
        return _decode(kind, row) if row is not None else None

    async def update_record(self, kind: type[R], ident: str, changes: dict[str, Any]) -> R | None:
        if not changes:
            return await self.get_record(kind, ident)
        sql = queries.update_record(POSTGRES, queries.TABLES[kind.KIND], list(changes))
        row = await self._db.fetchrow(sql, ident, *changes.values())
        return _decode(kind, row) if row is not None else None

    async def delete_records(self, kind: type[R], idents: list[str]) -> int:
        table = queries.TABLES[kind.KIND]
        status = await self._db.execute(f"DELETE FROM {table.name} WHERE {table.ident} = ANY($1::text[])",
                                        list(idents))
        return int(status.rsplit(" ", 1)[1])

    async def list_records(self, kind: type[R], limit: int = 100, offset: int = 0,
                           **equal: str | None) -> list[R]:
        sql, args = queries.list_records(POSTGRES, queries.TABLES[kind.KIND], equal, limit, offset)
        return [_decode(kind, row) for row in await self._db.fetch(sql, *args)]

    async def all_records(self, kind: type[R]) -> list[R]:
        return [_decode(kind, row) for row in await self._db.fetch(_RQ[kind.KIND].all)]


async def _add_spend(conn: asyncpg.Connection, key_spend: dict[str, float]) -> None:
    if key_spend:
        for statement in _Q.add_spend:
            await conn.executemany(statement, key_spend.items())


def _decode(kind: type[R], row: asyncpg.Record) -> R:
    record = kind(*row)
    for name in queries.TABLES[kind.KIND].lists:
        setattr(record, name, list(getattr(record, name)))
    return record
