"""A virtual key's rpm/tpm limits and budget, counted in Redis so every instance and worker enforces one figure.

Why: each process otherwise admits against its own view. With N processes a key's rpm limit would be N times the
configured one, and each would reserve in-flight cost against the budget without seeing the others' requests.

Per key, Redis holds the current minute's requests and tokens, the money reserved by requests in flight, and the
spend of the current budget period. The spend counter starts from the database's figure the first time a period
is seen (``SET NX``) and then adds every instance's settled cost, so a restarted Redis starts again from the
ledger. Admission is one transaction (count, reserve, read); a request over a limit takes its counts back at
once. A reservation left behind by a crashed instance expires with its counter (``_RESERVED_TTL_S`` after the
key's last request). Redis trouble is the caller's to handle (``RedisError``): it falls back to local figures.
"""

from __future__ import annotations

from mmproxy.db.base import KeyRecord
from mmproxy.redis_client import RedisClient

_TIMEOUT_S = 0.25
_RESERVED_TTL_S = 900
_NO_PERIOD_TTL_S = 30 * 86400  # a budget without a duration: the counter lives while the key is used
_PREFIX = "mmproxy:key:"


class SharedKeyLimits:
    def __init__(self, url: str) -> None:
        self._redis = RedisClient(url, timeout=_TIMEOUT_S)

    async def close(self) -> None:
        await self._redis.close()

    @staticmethod
    def names(record: KeyRecord, now: float) -> tuple[str, str, str, str]:
        """The key's counters for the minute and budget period of ``now``: rpm, tpm, reserved, spend."""
        base = f"{_PREFIX}{record.key_hash}:"
        minute = int(now // 60)
        period = int(record.budget_reset_at or 0)
        return f"{base}rpm:{minute}", f"{base}tpm:{minute}", f"{base}reserved:{period}", f"{base}spend:{period}"

    async def admit(self, record: KeyRecord, names: tuple[str, str, str, str], estimate: float, tokens: int,
                    now: float) -> tuple[int, int, float]:
        """Count the request and reserve ``estimate``; returns (requests this minute, tokens this minute, spend
        plus the other requests' reservations) as they stood with it counted. Over a limit, call ``take_back``."""
        rpm, tpm, reserved, spend = names
        spend_ttl = max(1, int(record.budget_reset_at - now) + 86400) if record.budget_reset_at else _NO_PERIOD_TTL_S
        replies = await self._redis.pipeline((
            ("INCR", rpm), ("EXPIRE", rpm, 120), ("INCRBY", tpm, tokens), ("EXPIRE", tpm, 120),
            ("SET", spend, repr(record.spend), "NX", "EX", spend_ttl),
            ("INCRBYFLOAT", reserved, repr(estimate)), ("EXPIRE", reserved, _RESERVED_TTL_S), ("GET", spend),
        ), transaction=True)
        requests, used, reserved_now, spent = replies[0], replies[2], replies[5], replies[7]
        return int(requests), int(used), float(spent or 0) + float(reserved_now) - estimate  # type: ignore[arg-type]

    async def take_back(self, names: tuple[str, str, str, str], estimate: float, tokens: int) -> None:
        rpm, tpm, reserved, _ = names
        await self._redis.pipeline(
            (("DECR", rpm), ("DECRBY", tpm, tokens), ("INCRBYFLOAT", reserved, repr(-estimate))), transaction=True)

    async def settle(self, names: tuple[str, str, str, str], estimate: float, cost: float,
                     completion_tokens: int) -> None:
        """Release the reservation and add what the request really cost (and its output to this minute's tokens)."""
        _, tpm, reserved, spend = names
        commands: list[tuple[str | int, ...]] = [("INCRBYFLOAT", reserved, repr(-estimate))]
        if cost > 0:
            commands.append(("INCRBYFLOAT", spend, repr(cost)))
        if completion_tokens:
            commands += (("INCRBY", tpm, completion_tokens), ("EXPIRE", tpm, 120))
        await self._redis.pipeline(commands, transaction=True)
