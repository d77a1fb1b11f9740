"""Virtual keys: who may call which models, how fast, and with how much money.

Keys live in the database as sha256 hashes (the clear key is shown once, by ``/key/generate``) and in
memory for the request path: authenticating is a hash and a dict lookup (one more for a key's team, one for
its user). Budgets are race-safe: a request reserves its estimated cost before any upstream call and settles
the real cost when it ends, and a key is refused once spend plus reservations reach its budget, so concurrent
requests on one key cannot overspend by more than the requests already in flight. A key that belongs to a
team or a user is held to their models, limits and budget as well as its own, by the same checks and
reservations (the stricter wins). Several workers or instances converge through the database: each refreshes
its view every ``refresh_interval`` seconds and keeps the larger of its own and the stored spend, so spend
seen anywhere is never behind what was stored. With Redis configured (``router_settings.redis_url``) the
rpm/tpm counts, reservations and spend of keys, teams and users are counted there instead
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
from typing import Any

from mmproxy.db.base import Database, KeyRecord, Record, TeamRecord, UserRecord
from mmproxy.errors import ProxyError, auth_error
from mmproxy.keys import durations, sessions
from mmproxy.keys.sessions import Sessions
from mmproxy.keys.shared_limits import Names, SharedKeyLimits
from mmproxy.keys.states import Registry, Usage
from mmproxy.redis_client import RedisError

log = logging.getLogger("mmproxy.keys")

KeyState = Usage[KeyRecord]


def hash_key(clear: str) -> str:
    return hashlib.sha256(clear.encode()).hexdigest()


def new_key() -> str:
    return "sk-" + secrets.token_urlsafe(24)


def display_name(clear: str) -> str:
    """What lists and logs show instead of the key: enough to tell keys apart, never enough to use one."""
    return f"sk-...{clear[-4:]}"


@dataclass(slots=True)
class Caller:
    """Who sent a request: ``key`` is None for the master key (and for a gateway without one); ``team`` and
    ``user`` are the key's, when it has them."""

    key: KeyState | None
    admin: bool
    team: Usage[TeamRecord] | None = None
    user: Usage[UserRecord] | None = None

    @property
    def scope(self) -> str:
        """Whose items (cache entries, files, batches) a request may read: its team's, else its key's; the
        master key has its own."""
        key = self.key
        if key is None:
            return "master"
        return _scope(key.record.key_hash, key.record.team_id)

    def owns(self, key_hash: str | None, team_id: str | None) -> bool:
        """Whether a request made with ``key_hash`` (of ``team_id``) is this caller's to see or rate: the master key
        owns every request, a virtual key those of its scope."""
        return self.admin or (key_hash is not None and _scope(key_hash, team_id) == self.scope)

    def may_use(self, model: str) -> bool:
        return self.barred_by(model) is None

    def barred_by(self, model: str) -> str | None:
        """Who refuses ``model`` (the key, its team or its user), or None when every model list allows it (an
        empty list or ``*`` allows every model)."""
        return _barrier(self.holders(), model)

    def holders(self) -> tuple[Usage[Any], ...]:
        """Everything the request counts against: the key, then its team and its user."""
        key = self.key
        if key is None:
            return ()
        if self.team is None and self.user is None:
            return (key,)
        return tuple(holder for holder in (key, self.team, self.user) if holder is not None)

    def has_budget(self) -> bool:
        return any(holder.record.max_budget is not None for holder in self.holders())


def _barrier(holders: tuple[Usage[Any], ...], model: str) -> str | None:
    for holder in holders:
        allowed = holder.record.models
        if allowed and model not in allowed and "*" not in allowed:
            return holder.record.label
    return None


def _scope(key_hash: str, team_id: str | None) -> str:
    return f"team:{team_id}" if team_id else f"key:{key_hash}"


@dataclass(slots=True)
class Reservation:
    holders: tuple[Usage[Any], ...]
    amount: float
    settled: bool = False
    shared: list[Names] | None = None  # the Redis counters it was counted in, one set per holder


MASTER = Caller(None, True)


class Keys:
    def __init__(self, db: Database, master_key: str | None, refresh_interval: float = 1.0,
                 redis_url: str | None = None) -> None:
        self._db = db
        self._shared = SharedKeyLimits(redis_url, self._trouble) if redis_url else None
        self._warned_at = -60.0
        self._master = master_key.encode() if master_key else None
        self.sessions = Sessions(self._master or b"")
        self._keys = Registry(db, KeyRecord)
        self._by_hash = self._keys.states
        self._teams = Registry(db, TeamRecord)
        self._users = Registry(db, UserRecord)
        self._registries: dict[type[Record], Registry[Any]] = {
            KeyRecord: self._keys, TeamRecord: self._teams, UserRecord: self._users}
        self._refresh_interval = refresh_interval
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._master is not None

    async def start(self) -> None:
        for registry in self._registries.values():
            await registry.load()
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
        """The caller behind ``supplied``; 401 for a missing, unknown, blocked or expired key, or a key whose team
        or user is blocked."""
        master = self._master
        if master is None:
            return MASTER
        if not supplied:
            raise auth_error("missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'")
        if hmac.compare_digest(supplied.encode(), master):
            return MASTER
        return await self._by_key_hash(hash_key(supplied))

    async def authenticate_session(self, token: str | None) -> Caller:
        """The caller behind a dashboard session cookie (``keys.sessions``); 401 when it is missing, forged or
        expired, or when its key has since been deleted, blocked or has expired."""
        if self._master is None:
            return MASTER
        subject = self.sessions.subject(token)
        if subject is None:
            raise auth_error("no dashboard session: log in at /ui")
        return MASTER if subject == sessions.ADMIN else await self._by_key_hash(subject)

    async def _by_key_hash(self, key_hash: str) -> Caller:
        state = self._by_hash.get(key_hash)
        if state is None:
            state = await self._keys.lookup(key_hash)
            if state is None:
                raise auth_error("invalid API key")
        record = state.record
        if record.blocked:
            raise auth_error("this API key is blocked")
        if record.expires is not None and record.expires <= time.time():
            raise auth_error("this API key has expired")
        if record.team_id is None and record.user_id is None:
            return Caller(state, False)
        return Caller(state, False, await self._owner(self._teams, record.team_id),
                      await self._owner(self._users, record.user_id))

    @staticmethod
    async def _owner(registry: Registry[Any], ident: str | None) -> Usage[Any] | None:
        """The key's team or user: a dict lookup, or the database for one made elsewhere since the last refresh."""
        if ident is None:
            return None
        state = registry.states.get(ident)
        if state is None:
            state = await registry.lookup(ident)
            if state is None:  # deleted while this key was still being used
                raise auth_error("this API key's team or user no longer exists")
        if state.record.blocked:
            raise auth_error(f"{state.record.label} is blocked")
        return state

    async def admit(self, caller: Caller, model: str, estimate: float, tokens: int) -> Reservation | None:
        """Check the key (and its team and user) may make this request now and reserve its estimated cost."""
        if caller.key is None:
            return None
        holders = caller.holders()
        barrier = _barrier(holders, model)
        if barrier is not None:
            raise ProxyError(403, f"{barrier} may not use model {model!r}", type="permission_error",
                             param="model", code="model_not_allowed")
        now = time.time()
        for holder in holders:
            if holder.record.max_budget is not None:
                self._maybe_reset(holder.record, now)
        shared = self._shared
        if shared is not None and any(_limited(holder.record) for holder in holders):
            records = [holder.record for holder in holders]
            names = [shared.names(record, now) for record in records]
            try:
                refused = await shared.admit(records, names, estimate, tokens, now)
            except RedisError as exc:
                self._trouble(exc)  # decided below from this process's figures
            else:
                if refused is not None:
                    raise _refusal(records[refused[2]], refused[0], now)
                for holder in holders:
                    holder.reserved += estimate
                return Reservation(holders, estimate, shared=names)
        minute = int(now // 60)
        for holder in holders:
            if holder.minute != minute:
                holder.minute, holder.requests, holder.tokens = minute, 0, 0
            record = holder.record
            _check(record, holder.requests, holder.tokens, tokens, record.spend + holder.reserved, now)
        for holder in holders:
            holder.requests += 1
            holder.tokens += tokens
            holder.reserved += estimate
        return Reservation(holders, estimate)

    def settle(self, reservation: Reservation, cost: float, completion_tokens: int) -> None:
        """Replace the reservation by what the request really cost (every attempt included)."""
        if reservation.settled:
            return
        reservation.settled = True
        minute = int(time.time() // 60)
        for holder in reservation.holders:
            holder.reserved = max(holder.reserved - reservation.amount, 0.0)
            holder.record.spend += cost
            if holder.minute == minute:
                holder.tokens += completion_tokens
        if reservation.shared is not None and self._shared is not None:
            for names in reservation.shared:
                self._shared.settle(names, reservation.amount, cost, completion_tokens)

    def _trouble(self, exc: RedisError) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 30:
            self._warned_at = now
            log.warning("key limits: Redis unavailable (%s); each process enforces limits and budgets on its own",
                        type(exc).__name__)

    def _maybe_reset(self, record: Record, now: float) -> None:
        if record.budget_duration is None or record.budget_reset_at is None or now < record.budget_reset_at:
            return
        record.spend = 0.0
        record.budget_reset_at = durations.next_reset(record.budget_reset_at, record.budget_duration, now)
        changes = {"spend": 0.0, "budget_reset_at": record.budget_reset_at}
        task = asyncio.get_running_loop().create_task(self._db.update_record(type(record), record.ident, changes))
        task.add_done_callback(_log_failure)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_interval)
            for registry in self._registries.values():
                try:
                    await registry.load()
                except Exception as exc:  # the database is down: keep serving from memory
                    log.warning("key refresh failed (%s); serving keys from memory", type(exc).__name__)
                    break

    # -- administration --------------------------------------------------------------------------
    def known(self, kind: type[Record], ident: str) -> Usage[Any] | None:
        return self._registries[kind].states.get(ident)

    def add(self, record: Record) -> None:
        self._registries[type(record)].add(record)

    def forget(self, kind: type[Record], idents: list[str]) -> None:
        self._registries[kind].forget(idents)


def _limited(record: Record) -> bool:
    return record.max_budget is not None or record.rpm_limit is not None or record.tpm_limit is not None


def _check(record: Record, requests: int, used: int, tokens: int, committed: float, now: float) -> None:
    """Refuse a request that would go over the record's budget (``committed``: spend plus the money reserved by
    requests in flight) or its per-minute limits (``requests`` and ``used`` tokens before this one)."""
    if record.max_budget is not None and committed >= record.max_budget:
        raise _refusal(record, "budget", now)
    if record.rpm_limit is not None and requests >= record.rpm_limit:
        raise _refusal(record, "rpm", now)
    if record.tpm_limit is not None and used + tokens > record.tpm_limit:
        raise _refusal(record, "tpm", now)


def _refusal(record: Record, limit: str, now: float) -> ProxyError:
    if limit == "budget":
        return ProxyError(
            429,
            f"budget exceeded for {record.label}: spent ${record.spend:.6f} of ${record.max_budget:.6f}"
            + (f"; it resets at {durations.iso(record.budget_reset_at)}" if record.budget_reset_at else ""),
            type="budget_exceeded", code="budget_exceeded",
        )
    retry = {"Retry-After": str(max(1, math.ceil(60 - now % 60)))}
    if limit == "rpm":
        return ProxyError(429, f"{record.label} is at its limit of {record.rpm_limit} requests per minute",
                          type="rate_limit_error", code=f"{record.KIND}_rpm_exceeded", headers=retry)
    return ProxyError(429, f"{record.label} is at its limit of {record.tpm_limit} tokens per minute",
                      type="rate_limit_error", code=f"{record.KIND}_tpm_exceeded", headers=retry)


def _log_failure(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not store a budget reset: %s", type(task.exception()).__name__)
