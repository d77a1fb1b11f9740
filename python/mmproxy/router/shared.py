"""Limits, cooldowns, in-flight counts and latency shared through Redis, so instances and workers agree.

The per-request path stays local where it can: cooldowns are read from the in-process ``Health``,
which a background task keeps in step with Redis (every ``REFRESH_S``); a failure that starts a
cooldown is written to Redis at once. Limits cannot be approximated that way, so a deployment with
``rpm``/``tpm`` reserves its slot in Redis (one pipelined round trip) before the call. In-flight counts
and latency averages, which steer least-busy and latency-based routing, are exchanged on the same
background beat: each instance sees the others' figures at most ``REFRESH_S`` old.

Redis being slow or gone never fails a request: every Redis call has a short timeout, and on an
error the gateway logs a warning and decides from its local state until Redis answers again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence

from mmproxy.config import Deployment
from mmproxy.redis_client import Arg, RedisClient, RedisError, array, bulk, integer
from mmproxy.router.health import COUNTED_KINDS, Health
from mmproxy.router.usage import Usage

log = logging.getLogger("mmproxy.shared")

REFRESH_S = 0.5
_TIMEOUT_S = 0.25
_PREFIX = "mmproxy:"


class SharedState:
    def __init__(self, url: str, health: Health, usage: Usage, deployments: Sequence[Deployment]) -> None:
        self._instance = os.urandom(6).hex()
        self._redis = RedisClient(url, timeout=_TIMEOUT_S)
        self._health = health
        self._usage = usage
        self._ids = [d.id for d in deployments]
        self._task: asyncio.Task[None] | None = None
        self.degraded = False
        self._warned_at = 0.0

    async def start(self) -> None:
        try:
            await self._redis.execute("PING")
        except RedisError as exc:
            self._trouble(exc)
        self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._redis.close()

    def _trouble(self, exc: Exception) -> None:
        self.degraded = True
        now = time.monotonic()
        if now - self._warned_at > 30:
            self._warned_at = now
            log.warning("Redis unavailable (%s): limits and cooldowns fall back to this process's own state",
                        type(exc).__name__)

    # -- limits ---------------------------------------------------------------------
    async def reserve(self, deployment: Deployment, tokens: int) -> bool:
        """Count one request of ``tokens`` input tokens against the shared minute; False when it is full."""
        if deployment.rpm is None and deployment.tpm is None:
            return True
        if self.degraded:
            return True  # the local check in the pick already applied
        minute = int(time.time() // 60)
        rpm_key = f"{_PREFIX}rpm:{deployment.id}:{minute}"
        tpm_key = f"{_PREFIX}tpm:{deployment.id}:{minute}"
        try:
            replies = await self._redis.pipeline(
                (("INCR", rpm_key), ("EXPIRE", rpm_key, 120), ("INCRBY", tpm_key, tokens), ("EXPIRE", tpm_key, 120)),
                transaction=True)
            requests, used = integer(replies[0]), integer(replies[2])
            over = (deployment.rpm is not None and requests > deployment.rpm) or (
                deployment.tpm is not None and used > deployment.tpm)
            if over:
                await self._redis.pipeline((("DECR", rpm_key), ("DECRBY", tpm_key, tokens)), transaction=True)
            return not over
        except RedisError as exc:
            self._trouble(exc)
            return True

    async def add_tokens(self, deployment_id: str, tokens: int) -> None:
        if self.degraded:
            return
        key = f"{_PREFIX}tpm:{deployment_id}:{int(time.time() // 60)}"
        try:
            await self._redis.pipeline((("INCRBY", key, tokens), ("EXPIRE", key, 120)))
        except RedisError as exc:
            self._trouble(exc)

    # -- cooldowns ------------------------------------------------------------------
    async def failed(self, deployment_id: str, kind: str | None) -> None:
        """Count a failure for every instance; the one that crosses ``allowed_fails`` starts the cooldown."""
        health = self._health
        if self.degraded or kind not in COUNTED_KINDS or health.cooldown_time <= 0:
            return
        fails_key = f"{_PREFIX}fails:{deployment_id}"
        try:
            replies = await self._redis.pipeline(
                (("INCR", fails_key), ("EXPIRE", fails_key, int(health.window), "NX")), transaction=True)
            if integer(replies[0]) >= health.allowed_fails or health.cooling(deployment_id):
                cooldown_ms = max(1, int(health.cooldown_time * 1000))
                await self._redis.pipeline(
                    (("SET", f"{_PREFIX}cooldown:{deployment_id}", 1, "PX", cooldown_ms), ("DEL", fails_key)),
                    transaction=True)
                health.adopt_cooldown(deployment_id, health.cooldown_time)
        except RedisError as exc:
            self._trouble(exc)

    # -- the periodic exchange ----------------------------------------------------------
    async def _refresh_forever(self) -> None:
        """Every ``REFRESH_S``: adopt other instances' cooldowns; publish this instance's in-flight counts
        and latency averages and read everyone else's, for least-busy and latency-based routing."""
        usage = self._usage
        ids = self._ids
        mine = self._instance.encode()
        while True:
            await asyncio.sleep(REFRESH_S)
            commands: list[tuple[Arg, ...]] = [("PTTL", f"{_PREFIX}cooldown:{d}") for d in ids]
            reads = []  # where each deployment's two HGETALL replies start
            for deployment_id in ids:
                busy_key, latency_key = f"{_PREFIX}busy:{deployment_id}", f"{_PREFIX}latency:{deployment_id}"
                commands += (("HSET", busy_key, mine, usage.in_flight.get(deployment_id, 0)), ("EXPIRE", busy_key, 10))
                if deployment_id in usage.latency:
                    commands += (("HSET", latency_key, mine, usage.latency[deployment_id]),
                                 ("EXPIRE", latency_key, 300))
                reads.append(len(commands))
                commands += (("HGETALL", busy_key), ("HGETALL", latency_key))
            try:
                replies = await self._redis.pipeline(commands)
            except RedisError as exc:
                self._trouble(exc)
                continue
            if self.degraded:
                log.warning("Redis is back: limits and cooldowns are shared again")
                self.degraded = False
            for deployment_id, ms in zip(ids, replies[: len(ids)], strict=True):
                if integer(ms) > 0:
                    self._health.adopt_cooldown(deployment_id, integer(ms) / 1000)
            for deployment_id, at in zip(ids, reads, strict=True):
                busy, latency = array(replies[at]), array(replies[at + 1])  # HGETALL: field, value, field, value, ...
                try:
                    usage.remote_in_flight[deployment_id] = sum(
                        int(bulk(n)) for k, n in zip(busy[0::2], busy[1::2], strict=True) if k != mine)
                    samples = [float(bulk(ms)) for ms in latency[1::2]]
                except ValueError:
                    continue  # a field not written by an instance of ours: ignore this deployment's figures
                if samples:
                    usage.shared_latency[deployment_id] = sum(samples) / len(samples)
