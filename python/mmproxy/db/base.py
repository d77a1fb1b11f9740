"""What the gateway stores -- the spend ledger, feedback, virtual keys, teams and users -- whatever the database
behind it."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from mmproxy.spend.record import COLUMNS

__all__ = ["Database", "KeyRecord", "Record", "TeamRecord", "UserRecord"]

log = logging.getLogger("mmproxy.db")

_KEY_HASH = COLUMNS.index("key_hash")
_COST = COLUMNS.index("cost_usd")
_REQUEST_ID = COLUMNS.index("request_id")


@dataclass(slots=True)
class KeyRecord:
    key_hash: str  # sha256 hex of the clear key; the clear key is never stored
    key_name: str  # display form, e.g. "sk-...a1b2"
    key_alias: str | None
    team_id: str | None
    user_id: str | None
    models: list[str]  # allowed model names; empty = all
    max_budget: float | None
    budget_duration: str | None  # LiteLLM style "30s", "10m", "1h", "7d", "30d"
    budget_reset_at: float | None  # epoch seconds
    spend: float
    rpm_limit: int | None
    tpm_limit: int | None
    metadata: dict[str, Any]
    expires: float | None  # epoch seconds
    created_at: float
    blocked: bool = False

    KIND: ClassVar[str] = "key"

    @property
    def ident(self) -> str:
        return self.key_hash

    @property
    def label(self) -> str:
        """How a refusal names it."""
        return "this API key"


@dataclass(slots=True)
class TeamRecord:
    """A team: its keys share its model list, limits and budget (each key's own apply as well)."""

    team_id: str
    team_alias: str | None
    models: list[str]  # allowed model names; empty = all
    max_budget: float | None
    budget_duration: str | None
    budget_reset_at: float | None
    spend: float  # what its keys spent in the current budget period
    rpm_limit: int | None
    tpm_limit: int | None
    metadata: dict[str, Any]
    created_at: float
    blocked: bool = False

    KIND: ClassVar[str] = "team"

    @property
    def ident(self) -> str:
        return self.team_id

    @property
    def label(self) -> str:
        return f"team {self.team_id!r}"


@dataclass(slots=True)
class UserRecord:
    """A user: the keys generated for them share their model list, limits and budget."""

    user_id: str
    user_email: str | None
    user_alias: str | None
    teams: list[str]  # the teams the user belongs to (informational; a key's team is the key's own)
    models: list[str]
    max_budget: float | None
    budget_duration: str | None
    budget_reset_at: float | None
    spend: float
    rpm_limit: int | None
    tpm_limit: int | None
    metadata: dict[str, Any]
    created_at: float
    blocked: bool = False

    KIND: ClassVar[str] = "user"

    @property
    def ident(self) -> str:
        return self.user_id

    @property
    def label(self) -> str:
        return f"user {self.user_id!r}"


Record = KeyRecord | TeamRecord | UserRecord
R = TypeVar("R", bound=Record)


class Database(ABC):
    """One backend; every method may raise the driver's errors when the database is unreachable."""

    @abstractmethod
    async def start(self) -> None:
        """Connect, and create or migrate the schema (safe to run on every start, by several processes at once)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def write_requests(self, rows: list[tuple[object, ...]], key_spend: dict[str, float]) -> None:
        """Insert ledger rows (``COLUMNS`` order) and add ``key_spend`` to the keys and to their teams and users, in
        one transaction.

        A row whose ``request_id`` is already stored is skipped and its cost is not added again, so a batch
        retried after a commit whose outcome was unknown counts once. A row the database cannot take (a
        value of the wrong type) is dropped and logged rather than holding back the rest.
        """

    @abstractmethod
    async def spend_logs(self, *, request_id: str | None = None, key_hash: str | None = None,
                         team_id: str | None = None, model: str | None = None, start: float | None = None,
                         end: float | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Ledger rows, newest first, with ``feedback_score``/``_label``/``_comment`` (None without feedback).

        ``model`` matches the requested model; the window is ``start <= started < end``.
        """

    @abstractmethod
    async def rated_decisions(self, model: str, limit: int) -> list[dict[str, Any]]:
        """Requests to ``model`` with a ``decision`` and a ``feedback_score``, newest first (``started`` in epoch
        seconds): request_id, started, decision, completion_tokens, feedback_score."""

    @abstractmethod
    async def spend_report(self, group_by: str, start: float | None = None, end: float | None = None,
                           key_hash: str | None = None, bucket_s: int | None = None) -> list[dict[str, Any]]:
        """Totals per group, most expensive first; ``group`` holds the group's value (``key_alias`` too by key).

        ``failures`` is ``requests - successes``: errors and answers rated below 0.5 alike. ``key_hash`` keeps
        one key's requests; ``bucket_s`` splits each group into time buckets (``bucket``: epoch seconds).
        """

    @abstractmethod
    async def add_feedback(self, request_id: str, score: float | None, label: str | None,
                           comment: str | None) -> bool: ...

    # -- keys, teams and users: one set of methods for the three tables ---------------------------------
    @abstractmethod
    async def insert_record(self, record: Record) -> None:
        """Store a new key, team or user; ValueError when its id is already stored."""

    @abstractmethod
    async def get_record(self, kind: type[R], ident: str) -> R | None: ...

    @abstractmethod
    async def update_record(self, kind: type[R], ident: str, changes: dict[str, Any]) -> R | None:
        """Set fields (the record's names; ValueError for others); the record as stored after, or None if unknown."""

    @abstractmethod
    async def delete_records(self, kind: type[R], idents: list[str]) -> int: ...

    @abstractmethod
    async def list_records(self, kind: type[R], limit: int = 100, offset: int = 0,
                           **equal: str | None) -> list[R]:
        """Records oldest first; ``equal``: columns that must hold these values (None: no condition)."""

    @abstractmethod
    async def all_records(self, kind: type[R]) -> list[R]: ...

    async def insert_key(self, key: KeyRecord) -> None:
        await self.insert_record(key)

    async def get_key(self, key_hash: str) -> KeyRecord | None:
        return await self.get_record(KeyRecord, key_hash)

    async def update_key(self, key_hash: str, changes: dict[str, Any]) -> KeyRecord | None:
        return await self.update_record(KeyRecord, key_hash, changes)

    async def delete_keys(self, key_hashes: list[str]) -> int:
        return await self.delete_records(KeyRecord, key_hashes)

    async def list_keys(self, team_id: str | None = None, limit: int = 100, offset: int = 0) -> list[KeyRecord]:
        """Keys oldest first."""
        return await self.list_records(KeyRecord, limit, offset, team_id=team_id)

    async def all_keys(self) -> list[KeyRecord]:
        return await self.all_records(KeyRecord)

    def describe_error(self, exc: BaseException) -> str:
        """``exc`` fit for a log line: no password from the connection URL."""
        return f"{type(exc).__name__}: {exc}"

    def unavailable(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the database cannot be reached now (down, restarting, timed out), as opposed to
        a fault of the query or of the gateway."""
        return isinstance(exc, OSError | TimeoutError)


def spend_after_skips(key_spend: dict[str, float], skipped: list[tuple[object, ...]]) -> dict[str, float]:
    """``key_spend`` less the cost of rows that were not inserted."""
    remaining = dict(key_spend)
    for row in skipped:
        key_hash = row[_KEY_HASH]
        if isinstance(key_hash, str) and key_hash in remaining and isinstance(row[_COST], int | float):
            remaining[key_hash] -= row[_COST]  # type: ignore[operator]
    return {key_hash: amount for key_hash, amount in remaining.items() if abs(amount) > 1e-12}


def log_bad_row(row: tuple[object, ...], exc: BaseException) -> None:
    request_id = row[_REQUEST_ID] if row else None
    log.error("spend ledger: dropped the row of request %r, which the database refused (%s: %s)",
              request_id, type(exc).__name__, exc)
