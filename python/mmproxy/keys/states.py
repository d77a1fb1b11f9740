"""What one process knows of keys, teams and users: their records by id, plus the usage only it tracks.

Keys, teams and users carry the same budget and limit fields, so one ``Usage`` and one ``Registry`` serve all
three and ``Keys.admit`` checks a key, its team and its user with the same code.
"""

from __future__ import annotations

import time
from typing import Generic

from mmproxy.db.base import Database, R
from mmproxy.errors import ProxyError

_NEGATIVE_TTL_S = 2.0  # an unknown id is looked up in the database again after this long
_NEGATIVE_MAX = 10_000


class Usage(Generic[R]):
    """A record plus what only this process tracks: reservations and the current minute's usage."""

    __slots__ = ("minute", "record", "requests", "reserved", "tokens")

    def __init__(self, record: R) -> None:
        self.record: R = record
        self.reserved = 0.0
        self.minute = 0
        self.requests = 0
        self.tokens = 0


class Registry(Generic[R]):
    """The records of one kind by id (``states``), kept in step with the database.

    Several workers or instances converge through the database: ``refresh`` reloads every record and keeps the
    larger of this process's spend and the stored one, so spend seen anywhere is never behind what was stored.
    A record created elsewhere since the last refresh is found by ``lookup``; ids the database does not have
    are remembered briefly so that a stream of bad ids does not become a stream of queries.
    """

    def __init__(self, db: Database, kind: type[R]) -> None:
        self._db = db
        self._kind: type[R] = kind
        self.states: dict[str, Usage[R]] = {}
        self._unknown: dict[str, float] = {}

    async def load(self) -> None:
        self.merge(await self._db.all_records(self._kind))

    async def lookup(self, ident: str) -> Usage[R] | None:
        now = time.monotonic()
        until = self._unknown.get(ident)
        if until is not None and until > now:
            return None
        try:
            record = await self._db.get_record(self._kind, ident)
        except Exception as exc:
            if not self._db.unavailable(exc):
                raise
            # Refusing a key that may be good would be wrong, serving it unchecked too: the client may retry.
            raise ProxyError(503, f"cannot check this {self._kind.KIND} now: the key database is unavailable",
                             type="service_unavailable", code="database_unavailable") from None
        if record is None:
            if len(self._unknown) >= _NEGATIVE_MAX:
                self._unknown.clear()
            self._unknown[ident] = now + _NEGATIVE_TTL_S
            return None
        return self.states.setdefault(ident, Usage(record))

    def merge(self, records: list[R]) -> None:
        """Take the stored records; those the database no longer has are dropped. Changed in place: the request
        path holds the dict."""
        fresh = {record.ident: self._take(record) for record in records}
        self.states.clear()
        self.states.update(fresh)

    def add(self, record: R) -> None:
        """A record just stored by this process's administration endpoints."""
        self.states[record.ident] = self._take(record)
        self._unknown.pop(record.ident, None)

    def _take(self, record: R) -> Usage[R]:
        """``record``'s state: the same object while the record lives, so requests in flight settle into the
        state later requests read."""
        state = self.states.get(record.ident)
        if state is None:
            return Usage(record)
        # This process's spend may be ahead of the ledger's last batch; never go backwards.
        local = state.record
        if same_period(record.budget_reset_at, local.budget_reset_at):
            record.spend = max(record.spend, local.spend)
        state.record = record
        return state

    def forget(self, idents: list[str]) -> None:
        for ident in idents:
            self.states.pop(ident, None)


def same_period(stored: float | None, local: float | None) -> bool:
    """Whether two budget reset times are one: PostgreSQL keeps microseconds, so a time read back may differ from
    the float it was written from by less than one."""
    return stored == local or (stored is not None and local is not None and abs(stored - local) < 1e-3)
