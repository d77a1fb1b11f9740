"""The rpm/tpm limits and budgets of virtual keys, teams and users, counted in Redis so every instance and worker
enforces one figure.

Why: each process otherwise admits against its own view. With N processes a key's rpm limit would be N times the
configured one, and each would reserve in-flight cost against the budget without seeing the others' requests.

Per key (and per team and user: "key" below stands for any of them), Redis holds the current minute's requests
and tokens, the money reserved by requests in flight, and the spend of the current budget period. The spend
counter starts from the database's figure the first time a period is seen (``SET NX``) and then adds every
instance's settled cost, so a restarted Redis starts again from the ledger. Admission is one script call that
checks a key, its team and its user and counts the request in all of them atomically (one round trip, one small
reply), so concurrent requests through a team's keys cannot overshoot the team's budget any more than one key's
requests can overshoot its own. Settling is batched: what requests really cost is added, and their reservations
released, every ``FLUSH_S`` in one pipeline for all keys; until then the reservation still counts, so the
committed figure never runs below the truth. A reservation left behind by a crashed instance expires with its
counter (``_RESERVED_TTL_S`` after the key's last request). Redis trouble on admission is the caller's to handle
(``RedisError``: it falls back to local figures); settlements wait for Redis to come back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from mmproxy.db.base import Record
from mmproxy.redis_client import RedisClient, RedisError, RedisReplyError, array, bulk, integer

log = logging.getLogger("mmproxy.keys")

FLUSH_S = 0.05
_TIMEOUT_S = 0.25
_RESERVED_TTL_S = 900
_NO_PERIOD_TTL_S = 30 * 86400  # a budget without a duration: the counter lives while the key is used
_PREFIX = "mmproxy:"
Names = tuple[str, str, str, str]  # a key's (team's, user's) rpm, tpm, reserved and spend counters

# KEYS: rpm, tpm, reserved, spend of each holder (the key, then its team and user). ARGV: tokens, estimate,
# reserved ttl, then per holder: spend seed, spend ttl, rpm limit, tpm limit, budget (-1: none). Returns {0} when
# every holder has room and the request is counted in all, else {1 budget | 2 rpm | 3 tpm, figure, holder index}.
_ADMIT = b"""
local tokens = tonumber(ARGV[1])
local holders = #KEYS / 4
for h = 0, holders - 1 do
  local k, a = h * 4, 3 + h * 5
  redis.call('SET', KEYS[k + 4], ARGV[a + 1], 'NX', 'EX', ARGV[a + 2])
  local budget = tonumber(ARGV[a + 5])
  if budget >= 0 then
    local committed = tonumber(redis.call('GET', KEYS[k + 4]) or '0') + tonumber(redis.call('GET', KEYS[k + 3]) or '0')
    if committed >= budget then return {1, tostring(committed), h} end
  end
  local requests = tonumber(redis.call('GET', KEYS[k + 1]) or '0')
  local rpm = tonumber(ARGV[a + 3])
  if rpm >= 0 and requests >= rpm then return {2, tostring(requests), h} end
  local used = tonumber(redis.call('GET', KEYS[k + 2]) or '0')
  local tpm = tonumber(ARGV[a + 4])
  if tpm >= 0 and used + tokens > tpm then return {3, tostring(used), h} end
end
for h = 0, holders - 1 do
  local k = h * 4
  redis.call('INCR', KEYS[k + 1])
  redis.call('EXPIRE', KEYS[k + 1], 120)
  redis.call('INCRBY', KEYS[k + 2], tokens)
  redis.call('EXPIRE', KEYS[k + 2], 120)
  redis.call('INCRBYFLOAT', KEYS[k + 3], ARGV[2])
  redis.call('EXPIRE', KEYS[k + 3], ARGV[3])
end
return {0}
"""
REFUSALS = {1: "budget", 2: "rpm", 3: "tpm"}


class SharedKeyLimits:
    def __init__(self, url: str, on_trouble: Callable[[RedisError], None]) -> None:
        self._redis = RedisClient(url, timeout=_TIMEOUT_S)
        self._sha: bytes | None = None
        self._on_trouble = on_trouble
        # Settlements not yet sent, summed per key: [reservations to release, cost, output tokens].
        self._pending: dict[Names, list[float]] = {}
        self._flusher: asyncio.Task[None] | None = None

    @staticmethod
    def names(record: Record, now: float) -> Names:
        """The record's counters for the minute and budget period of ``now``."""
        base = f"{_PREFIX}{record.KIND}:{record.ident}:"
        minute = int(now // 60)
        period = int(record.budget_reset_at or 0)
        return f"{base}rpm:{minute}", f"{base}tpm:{minute}", f"{base}reserved:{period}", f"{base}spend:{period}"

    async def admit(self, records: Sequence[Record], names: Sequence[Names], estimate: float, tokens: int,
                    now: float) -> tuple[str, float, int] | None:
        """Count the request and reserve ``estimate`` in every record if all have room; else (which limit, its
        figure, the index of the record that refused)."""
        args: list[str | int] = [len(names) * 4]
        for counters in names:
            args += counters
        args += [tokens, repr(estimate), _RESERVED_TTL_S]
        for record in records:
            reset_at = record.budget_reset_at
            args += [repr(record.spend), max(1, int(reset_at - now) + 86400) if reset_at else _NO_PERIOD_TTL_S,
                     -1 if record.rpm_limit is None else record.rpm_limit,
                     -1 if record.tpm_limit is None else record.tpm_limit,
                     -1 if record.max_budget is None else repr(record.max_budget)]
        if self._sha is None:
            self._sha = bulk(await self._redis.execute("SCRIPT", "LOAD", _ADMIT))
        try:
            reply = array(await self._redis.execute("EVALSHA", self._sha, *args))
        except RedisReplyError as exc:
            if "NOSCRIPT" not in str(exc):
                raise
            reply = array(await self._redis.execute("EVAL", _ADMIT, *args))  # Redis restarted and lost the script
            self._sha = None
        if reply[0] == 0:
            return None
        return REFUSALS[integer(reply[0])], float(bulk(reply[1])), integer(reply[2])

    def settle(self, names: Names, estimate: float, cost: float, completion_tokens: int) -> None:
        """Release the reservation and add what the request really cost, with the next flush."""
        pending = self._pending.get(names)
        if pending is None:
            self._pending[names] = [estimate, cost, completion_tokens]
        else:
            pending[0] += estimate
            pending[1] += cost
            pending[2] += completion_tokens
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        while self._pending:
            await asyncio.sleep(FLUSH_S)
            await self.flush()
            if self._pending:  # Redis is down: try again later, keeping what is owed
                await asyncio.sleep(1.0)

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        commands: list[tuple[str | int, ...]] = []
        for (_, tpm, reserved, spend), (estimate, cost, completion) in pending.items():
            commands.append(("INCRBYFLOAT", reserved, repr(-estimate)))
            if cost > 0:
                commands.append(("INCRBYFLOAT", spend, repr(cost)))
            if completion:
                commands += (("INCRBY", tpm, int(completion)), ("EXPIRE", tpm, 120))
        if not commands:
            return
        try:
            await self._redis.pipeline(commands, transaction=True)
        except RedisError as exc:
            self._on_trouble(exc)
            for names, owed in pending.items():  # merge back: nothing owed is lost
                mine = self._pending.setdefault(names, [0.0, 0.0, 0])
                for i in range(3):
                    mine[i] += owed[i]

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        if self._pending:
            await self.flush()
        await self._redis.close()
