"""Semantic cache entries shared by every instance through a Redis stream.

Why a stream and not a shared index: a lookup must not cost a network hop, so each instance (each worker)
searches its own in-memory index. What instances share is the log of additions: every entry an instance
indexes is appended to ``<namespace>:semantic`` (XADD, trimmed near ``capacity`` entries), and every instance
reads the stream on from where it left off, adding the entries the others made. A new instance reads it
from the start, so its index is rebuilt from Redis. The answers themselves live in the exact store (Redis
too), so an entry from another instance points at an answer this one can read.

The verified cache's outcomes (an explored request's answer compared with a cached one) travel on the same
stream, so every instance's error bound learns from all of them and the entries' evidence stays the same
everywhere.

Each entry carries its expiry; expired ones are skipped. Redis trouble costs the sharing only: the local
index keeps working, the writer drops what it cannot send (counted in a warning), and the reader resumes from
its last id (entries trimmed in the meantime are lost to it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable

import numpy as np

from mmproxy.cache.semantic import SemanticEntry
from mmproxy.redis_client import RedisClient, RedisError, array, bulk

log = logging.getLogger("mmproxy.cache")

Entry = tuple[str, np.ndarray, SemanticEntry]  # scope, vector, entry
Outcome = tuple[str, bytes, bytes, float, np.ndarray, bool]  # scope, context, entry's cache key, similarity, features,
# right
Add = Callable[[list[Entry]], Awaitable[None]]  # called once per read with every new entry of the others
Learn = Callable[[list[Outcome]], Awaitable[None]]  # and with every new outcome of the others
_READ_BATCH = 200  # entries per XREAD: ~350 KB of reply at dim 384
_WARN_EVERY_S = 30.0


class SemanticFeed:
    def __init__(self, url: str, namespace: str, capacity: int, timeout: float = 2.0) -> None:
        # Its own connection: a catch-up read of a long stream must not queue the request path's cache reads.
        self._redis = RedisClient(url, timeout=timeout, retry_s=1.0)
        self._stream = f"{namespace}:semantic".encode()
        self._capacity = capacity
        self._origin = os.urandom(8).hex().encode()  # this process: it skips its own entries when reading
        self._last_id = b"0"
        self._dropped = 0
        self._warned_at = -_WARN_EVERY_S

    async def publish(self, scope: str, vector: np.ndarray, entry: SemanticEntry) -> None:
        fields = (
            b"o", self._origin, b"s", scope.encode(), b"t", entry.text.encode(), b"c", entry.context,
            b"k", entry.cache_key, b"e", repr(entry.expires).encode(),
            b"v", np.asarray(vector, dtype="<f4").tobytes(), b"a", entry.answer.encode(),
        )
        await self._add(fields)

    async def publish_outcome(self, scope: str, context: bytes, cache_key: bytes, similarity: float,
                              features: np.ndarray, right: bool) -> None:
        fields = (b"o", self._origin, b"s", scope.encode(), b"c", context, b"k", cache_key,
                  b"y", repr(similarity).encode(), b"x", np.asarray(features, dtype="<f8").tobytes(),
                  b"r", b"1" if right else b"0")
        await self._add(fields)

    async def _add(self, fields: tuple[bytes, ...]) -> None:
        try:
            await self._redis.execute(b"XADD", self._stream, b"MAXLEN", b"~", self._capacity, b"*", *fields)
        except RedisError as exc:
            self._dropped += 1
            self._trouble(exc, "write")

    async def follow(self, add: Add, learn: Learn | None = None, interval: float = 0.5) -> None:
        """Add every other instance's entries and outcomes as they come, from the start of the stream; runs until
        cancelled."""
        while True:
            try:
                while await self._read_once(add, learn) == _READ_BATCH:
                    pass  # catching up: read on without waiting
            except RedisError as exc:
                self._trouble(exc, "read")
            await asyncio.sleep(interval)

    async def _read_once(self, add: Add, learn: Learn | None) -> int:
        reply = await self._redis.execute(b"XREAD", b"COUNT", _READ_BATCH, b"STREAMS", self._stream, self._last_id)
        if not isinstance(reply, list) or not reply:
            return 0
        messages = array(array(reply[0])[1])  # XREAD: [[stream, [[id, [field, value, ...]], ...]]]
        now = time.time()
        entries: list[Entry] = []
        outcomes: list[Outcome] = []
        for message in messages:
            message_id, flat = array(message)
            self._last_id = bulk(message_id)
            try:
                values = array(flat)
                fields = {bulk(k): bulk(v) for k, v in zip(values[::2], values[1::2], strict=True)}
                if fields[b"o"] == self._origin:
                    continue
                if b"r" in fields:
                    outcomes.append((fields[b"s"].decode(), fields[b"c"], fields[b"k"], float(fields[b"y"]),
                                     np.frombuffer(fields[b"x"], dtype="<f8"), fields[b"r"] == b"1"))
                    continue
                if float(fields[b"e"]) <= now:
                    continue
                entry = SemanticEntry(fields[b"t"].decode(), fields[b"c"], fields[b"k"], float(fields[b"e"]),
                                      fields.get(b"a", b"").decode())
                entries.append((fields[b"s"].decode(), np.frombuffer(fields[b"v"], dtype="<f4"), entry))
            except (KeyError, ValueError, TypeError, UnicodeDecodeError):
                continue  # not ours, or from another version: skipped, never an error
        if entries:
            await add(entries)
        if outcomes and learn is not None:
            await learn(outcomes)
        return len(messages)

    def _trouble(self, exc: RedisError, doing: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning("semantic cache: Redis %s of shared entries failed (%s; %d entries not shared so far); "
                        "the local index keeps working", doing, type(exc).__name__, self._dropped)

    async def close(self) -> None:
        await self._redis.close()
