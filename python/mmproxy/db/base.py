"""What the gateway stores -- the spend ledger, feedback and virtual keys -- whatever the database behind it."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from mmproxy.spend.record import COLUMNS

__all__ = ["Database", "KeyRecord"]

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


class Database(ABC):
    """One backend; every method may raise the driver's errors when the database is unreachable."""

    @abstractmethod
    async def start(self) -> None:
        """Connect, and create or migrate the schema (safe to run on every start, by several processes at once)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def write_requests(self, rows: list[tuple[object, ...]], key_spend: dict[str, float]) -> None:
        """Insert ledger rows (``COLUMNS`` order) and add ``key_spend`` to the keys, in one transaction.

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
    async def spend_report(self, group_by: str, start: float | None = None,
                           end: float | None = None) -> list[dict[str, Any]]:
        """Totals per group, most expensive first; ``group`` holds the group's value (``key_alias`` too by key).

        ``failures`` is ``requests - successes``: errors and answers rated below 0.5 alike.
        """

    @abstractmethod
    async def add_feedback(self, request_id: str, score: float | None, label: str | None,
                           comment: str | None) -> bool: ...

    @abstractmethod
    async def insert_key(self, key: KeyRecord) -> None:
        """Store a new key; ValueError when its hash is already stored."""

    @abstractmethod
    async def get_key(self, key_hash: str) -> KeyRecord | None: ...

    @abstractmethod
    async def update_key(self, key_hash: str, changes: dict[str, Any]) -> KeyRecord | None:
        """Set fields (KeyRecord names; ValueError for others); the key as stored after, or None if unknown."""

    @abstractmethod
    async def delete_keys(self, key_hashes: list[str]) -> int: ...

    @abstractmethod
    async def list_keys(self, team_id: str | None = None, limit: int = 100, offset: int = 0) -> list[KeyRecord]:
        """Keys oldest first."""

    @abstractmethod
    async def all_keys(self) -> list[KeyRecord]: ...

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
