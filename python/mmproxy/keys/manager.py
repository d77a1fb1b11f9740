"""Virtual keys: who may call which models, how fast, and with how much money.

Keys live in the database as sha256 hashes (the clear key is shown once, by ``/key/generate``) and in
memory for the request path: authenticating is a hash and a dict lookup. Budgets are race-safe: a request
reserves its estimated cost before any upstream call and settles the real cost when it ends, and a key is
refused once spend plus reservations reach its budget, so concurrent requests on one key cannot overspend
by more than the requests already in flight. Several workers or instances converge through the database:
each refreshes its view every ``refresh_interval`` seconds and keeps the larger of its own and the stored
spend, so a key's spend seen anywhere is never behind what was stored. With Redis configured
(``router_settings.redis_url``) a key's rpm/tpm counts, reservations and spend are counted there instead
(``shared_limits``), so every process enforces the same figures; while Redis is unreachable each process
falls back to its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import secrets
import time
from dataclasses import dataclass

from mmproxy.db.base import Database, KeyRecord
from mmproxy.errors import ProxyError, auth_error
from mmproxy.keys import durations
from mmproxy.keys.shared_limits import SharedKeyLimits
from mmproxy.redis_client import RedisError

log = logging.getLogger("mmproxy.keys")

_NEGATIVE_TTL_S = 2.0  # an unknown key is looked up in the database again after this long
_NEGATIVE_MAX = 10_000


def hash_key(clear: str) -> str:
    return hashlib.sha256(clear.encode()).hexdigest()


def new_key() -> str:
    return "sk-" + secrets.token_urlsafe(24)


def display_name(clear: str) -> str:
    """What lists and logs show instead of the key: enough to tell keys apart, never enough to use one."""
    return f"sk-...{clear[-4:]}"


class KeyState:
    """A key's record plus what only this process tracks: reservations and the current minute's usage."""

    __slots__ = ("minute", "record", "requests", "reserved", "tokens")

    def __init__(self, record: KeyRecord) -> None:
        self.record = record
        self.reserved = 0.0
        self.minute = 0
        self.requests = 0
        self.tokens = 0


@dataclass(slots=True)
class Caller:
    """Who sent a request: ``key`` is None for the master key (and for a gateway without one)."""

    key: KeyState | None
    admin: bool

    @property
    def scope(self) -> str:
        """Whose items (cache entries, files, batches) a request may read: its team's, else its key's; the
        master key has its own."""
        key = self.key
        if key is None:
            return "master"
        return f"team:{key.record.team_id}" if key.record.team_id else f"key:{key.record.key_hash}"

    def may_use(self, model: str) -> bool:
        """Whether the key's model list allows ``model`` (an empty list or ``*`` allows every model)."""
        allowed = self.key.record.models if self.key is not None else None
        return not allowed or model in allowed or "*" in allowed


@dataclass(slots=True)
class Reservation:
    key: KeyState
    amount: float
    settled: bool = False
    shared: tuple[str, str, str, str] | None = None  # the Redis counters it was counted in


MASTER = Caller(None, True)


class Keys:
    def __init__(self, db: Database, master_key: str | None, refresh_interval: float = 1.0,
                 redis_url: str | None = None) -> None:
        self._db = db
        self._shared = SharedKeyLimits(redis_url, self._trouble) if redis_url else None
        self._warned_at = -60.0
        self._master = master_key.encode() if master_key else None
        self._by_hash: dict[str, KeyState] = {}
        self._unknown: dict[str, float] = {}
        self._refresh_interval = refresh_interval
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._master is not None

    async def start(self) -> None:
        for record in await self._db.all_keys():
            self._by_hash[record.key_hash] = KeyState(record)
        self._task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._shared is not None:
            await self._shared.close()

    # -- the request path ------------------------------------------------------------------------
    async def authenticate(self, supplied: str | None) -> Caller:
        """The caller behind ``supplied``; 401 for a missing, unknown, blocked or expired key."""
        master = self._master
        if master is None:
            return MASTER
        if not supplied:
            raise auth_error("missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'")
        if hmac.compare_digest(supplied.encode(), master):
            return MASTER
        key_hash = hash_key(supplied)
        state = self._by_hash.get(key_hash)
        if state is None:
            state = await self._lookup(key_hash)
            if state is None:
                raise auth_error("invalid API key")
        record = state.record
        if record.blocked:
            raise auth_error("this API key is blocked")
        if record.expires is not None and record.expires <= time.time():
            raise auth_error("this API key has expired")
        return Caller(state, False)

    async def admit(self, caller: Caller, model: str, estimate: float, tokens: int) -> Reservation | None:
        """Check the key may make this request now and reserve its estimated cost."""
        state = caller.key
        if state is None:
            return None
        record = state.record
        if not caller.may_use(model):
            raise ProxyError(403, f"this API key may not use model {model!r}", type="permission_error",
                             param="model", code="model_not_allowed")
        now = time.time()
        if record.max_budget is not None:
            self._maybe_reset(record, now)
        shared = self._shared
        if shared is not None and (record.max_budget is not None or record.rpm_limit is not None
                                   or record.tpm_limit is not None):
            names = shared.names(record, now)
            try:
                refused = await shared.admit(record, names, estimate, tokens, now)
            except RedisError as exc:
                self._trouble(exc)  # decided below from this process's figures
            else:
                if refused is not None:
                    raise _refusal(record, refused[0], now)
                state.reserved += estimate
                return Reservation(state, estimate, shared=names)
        minute = int(now // 60)
        if state.minute != minute:
            state.minute, state.requests, state.tokens = minute, 0, 0
        _check(record, state.requests, state.tokens, tokens, record.spend + state.reserved, now)
        state.requests += 1
        state.tokens += tokens
        state.reserved += estimate
        return Reservation(state, estimate)

    def settle(self, reservation: Reservation, cost: float, completion_tokens: int) -> None:
        """Replace the reservation by what the request really cost (every attempt included)."""
        if reservation.settled:
            return
        reservation.settled = True
        state = reservation.key
        state.reserved = max(state.reserved - reservation.amount, 0.0)
        state.record.spend += cost
        if state.minute == int(time.time() // 60):
            state.tokens += completion_tokens
        if reservation.shared is not None and self._shared is not None:
            self._shared.settle(reservation.shared, reservation.amount, cost, completion_tokens)

    def _trouble(self, exc: RedisError) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 30:
            self._warned_at = now
            log.warning("key limits: Redis unavailable (%s); each process enforces limits and budgets on its own",
                        type(exc).__name__)

    def _maybe_reset(self, record: KeyRecord, now: float) -> None:
        if record.budget_duration is None or record.budget_reset_at is None or now < record.budget_reset_at:
            return
        record.spend = 0.0
        record.budget_reset_at = durations.next_reset(record.budget_reset_at, record.budget_duration, now)
        changes = {"spend": 0.0, "budget_reset_at": record.budget_reset_at}
        task = asyncio.get_running_loop().create_task(self._db.update_key(record.key_hash, changes))
        task.add_done_callback(_log_failure)

    async def _lookup(self, key_hash: str) -> KeyState | None:
        """A key created by another worker or instance since the last refresh."""
        now = time.monotonic()
        until = self._unknown.get(key_hash)
        if until is not None and until > now:
            return None
        try:
            record = await self._db.get_key(key_hash)
        except Exception as exc:
            if not self._db.unavailable(exc):
                raise
            raise ProxyError(503, "cannot check this API key now: the key database is unavailable",
                             type="service_unavailable", code="database_unavailable") from None
        if record is None:
            if len(self._unknown) >= _NEGATIVE_MAX:
                self._unknown.clear()
            self._unknown[key_hash] = now + _NEGATIVE_TTL_S
            return None
        state = self._by_hash.setdefault(key_hash, KeyState(record))
        return state

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_interval)
            try:
                records = await self._db.all_keys()
            except Exception as exc:  # the database is down: keep serving from memory
                log.warning("key refresh failed (%s); serving keys from memory", type(exc).__name__)
                continue
            self._merge(records)

    def _merge(self, records: list[KeyRecord]) -> None:
        fresh: dict[str, KeyState] = {}
        for record in records:
            state = self._by_hash.get(record.key_hash)
            if state is None:
                state = KeyState(record)
            else:
                # This process's spend may be ahead of the ledger's last batch; never go backwards.
                local = state.record
                if record.budget_reset_at == local.budget_reset_at:
                    record.spend = max(record.spend, local.spend)
                state.record = record
            fresh[record.key_hash] = state
        self._by_hash = fresh

    # -- administration --------------------------------------------------------------------------
    def known(self, key_hash: str) -> KeyState | None:
        return self._by_hash.get(key_hash)

    def add(self, record: KeyRecord) -> None:
        self._by_hash[record.key_hash] = KeyState(record)
        self._unknown.pop(record.key_hash, None)

    def forget(self, key_hashes: list[str]) -> None:
        for key_hash in key_hashes:
            self._by_hash.pop(key_hash, None)




def _check(record: KeyRecord, requests: int, used: int, tokens: int, committed: float, now: float) -> None:
    """Refuse a request that would go over the key's budget (``committed``: spend plus the money reserved by
    requests in flight) or its per-minute limits (``requests`` and ``used`` tokens before this one)."""
    if record.max_budget is not None and committed >= record.max_budget:
        raise _refusal(record, "budget", now)
    if record.rpm_limit is not None and requests >= record.rpm_limit:
        raise _refusal(record, "rpm", now)
    if record.tpm_limit is not None and used + tokens > record.tpm_limit:
        raise _refusal(record, "tpm", now)


def _refusal(record: KeyRecord, limit: str, now: float) -> ProxyError:
    if limit == "budget":
        return ProxyError(
            429,
            f"budget exceeded for this API key: spent ${record.spend:.6f} of ${record.max_budget:.6f}"
            + (f"; it resets at {durations.iso(record.budget_reset_at)}" if record.budget_reset_at else ""),
            type="budget_exceeded", code="budget_exceeded",
        )
    retry = {"Retry-After": str(max(1, math.ceil(60 - now % 60)))}
    if limit == "rpm":
        return ProxyError(429, f"this API key is at its limit of {record.rpm_limit} requests per minute",
                          type="rate_limit_error", code="key_rpm_exceeded", headers=retry)
    return ProxyError(429, f"this API key is at its limit of {record.tpm_limit} tokens per minute",
                      type="rate_limit_error", code="key_tpm_exceeded", headers=retry)


def _log_failure(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not store a budget reset: %s", type(task.exception()).__name__)
