"""Where cached answers live: an exact-match store keyed by 16-byte request digests.

Two backends behind one interface. ``MemoryStore`` keeps answers in this process, as objects (a hit
costs a dict lookup and no decoding), in an LRU bounded by bytes rather than entries because answers
range from a few hundred bytes to a whole SSE stream. ``RedisStore`` shares answers between instances
and workers; Redis is an optimisation there, never a dependency: an error or a slow reply is a miss or
a skipped write, and after a failure the store stops asking for ``_RETRY_S`` so a dead Redis does not
add a socket timeout to every request.
"""

from __future__ import annotations

import heapq
import logging
import struct
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass

from mmproxy.redis_client import RedisClient, RedisError

__all__ = ["CacheDecodeError", "CachedResponse", "MemoryStore", "RedisStore", "ResponseStore"]

log = logging.getLogger("mmproxy.cache")

# magic, version, flags, prompt/completion tokens, cost, created, group and deployment lengths; then the
# two names (UTF-8) and the body. A new layout gets a new version: old values then read as misses.
_HEADER = struct.Struct("<2sBBqqddII")
_MAGIC = b"mc"
_VERSION = 1
_STREAM = 1


class CacheDecodeError(ValueError):
    """A stored value that is not a ``CachedResponse`` of this version: the store reads it as a miss."""


@dataclass(slots=True)
class CachedResponse:
    body: bytes  # exactly what the client got: the JSON body, or for a stream the whole SSE byte stream
    stream: bool
    model_group: str
    deployment: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float  # what the upstream charged for it: reported as saved on each hit
    created: float  # epoch seconds

    def encode(self) -> bytes:
        group, deployment = self.model_group.encode(), self.deployment.encode()
        header = _HEADER.pack(_MAGIC, _VERSION, _STREAM if self.stream else 0, self.prompt_tokens,
                              self.completion_tokens, self.cost_usd, self.created, len(group), len(deployment))
        return b"".join((header, group, deployment, self.body))

    @staticmethod
    def decode(data: bytes) -> CachedResponse:
        try:
            magic, version, flags, prompt, completion, cost, created, n_group, n_dep = _HEADER.unpack_from(data)
        except struct.error:
            raise CacheDecodeError("too short for a cached response") from None
        if magic != _MAGIC or version != _VERSION:
            raise CacheDecodeError("not a cached response of this version")
        start = _HEADER.size
        body_at = start + n_group + n_dep
        if body_at > len(data):
            raise CacheDecodeError("truncated cached response")
        try:
            group = data[start:start + n_group].decode()
            deployment = data[start + n_group:body_at].decode()
        except UnicodeDecodeError:
            raise CacheDecodeError("cached response names are not UTF-8") from None
        return CachedResponse(data[body_at:], bool(flags & _STREAM), group, deployment, prompt, completion, cost,
                              created)


class ResponseStore(ABC):
    """Exact-match answers by key. Never raises on the request path: trouble is a miss."""

    @abstractmethod
    async def get(self, key: bytes) -> CachedResponse | None: ...

    @abstractmethod
    async def set(self, key: bytes, value: CachedResponse, ttl: float) -> None: ...

    @abstractmethod
    async def delete(self, key: bytes) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...


# What an entry costs beyond its body and names: the dict slot, the OrderedDict link, the key, the
# CachedResponse and its boxed fields, and its row in the expiry heap (~450 bytes measured on CPython 3.11).
ENTRY_OVERHEAD = 512


@dataclass(slots=True)
class _Slot:
    value: CachedResponse
    expires: float  # time.monotonic(): TTLs do not jump with the wall clock
    size: int


class MemoryStore(ResponseStore):
    """An in-process LRU bounded by bytes, with a TTL per entry.

    Expired entries are misses and are dropped when read; when a write needs room, expired entries go
    first (the expiry heap finds them without a scan) and then the least recently used. A value larger
    than ``max_entry_bytes`` (default: 1/16 of the budget) is not kept: one huge stream would otherwise
    flush many small answers.
    """

    def __init__(self, max_bytes: int, max_entry_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_bytes // 16 if max_entry_bytes is None else max_entry_bytes
        self.bytes = 0
        self._slots: OrderedDict[bytes, _Slot] = OrderedDict()
        self._expiry: list[tuple[float, bytes]] = []  # (expires, key); stale rows are skipped and compacted

    def __len__(self) -> int:
        return len(self._slots)

    def get_now(self, key: bytes) -> CachedResponse | None:
        """``get`` without an await, for the handler's hot path."""
        slot = self._slots.get(key)
        if slot is None:
            return None
        if slot.expires <= time.monotonic():
            self._drop(key)
            return None
        self._slots.move_to_end(key)
        return slot.value

    async def get(self, key: bytes) -> CachedResponse | None:
        return self.get_now(key)

    def set_now(self, key: bytes, value: CachedResponse, ttl: float) -> None:
        size = len(value.body) + len(value.model_group) + len(value.deployment) + ENTRY_OVERHEAD
        if key in self._slots:
            self._drop(key)
        if not ttl > 0 or size > self.max_entry_bytes:
            return
        expires = time.monotonic() + ttl
        self._slots[key] = _Slot(value, expires, size)
        self.bytes += size
        heapq.heappush(self._expiry, (expires, key))
        if self.bytes > self.max_bytes:
            self._make_room()
        if len(self._expiry) > 2 * len(self._slots) + 64:
            self._expiry = [(slot.expires, k) for k, slot in self._slots.items()]
            heapq.heapify(self._expiry)

    async def set(self, key: bytes, value: CachedResponse, ttl: float) -> None:
        self.set_now(key, value, ttl)

    async def delete(self, key: bytes) -> None:
        if key in self._slots:
            self._drop(key)

    async def close(self) -> None:
        self._slots.clear()
        self._expiry.clear()
        self.bytes = 0

    def _drop(self, key: bytes) -> None:
        self.bytes -= self._slots.pop(key).size

    def _make_room(self) -> None:
        now = time.monotonic()
        expiry, slots = self._expiry, self._slots
        while expiry and expiry[0][0] <= now:
            expires, key = heapq.heappop(expiry)
            slot = slots.get(key)
            if slot is not None and slot.expires == expires:
                self._drop(key)
        while self.bytes > self.max_bytes:
            _, slot = slots.popitem(last=False)
            self.bytes -= slot.size


_REDIS_TIMEOUT_S = 0.25
_RETRY_S = 1.0  # after a Redis failure, misses without asking for this long
_WARN_EVERY_S = 30.0


class RedisStore(ResponseStore):
    """Answers in Redis as ``<namespace>:cache:<hex key>`` with a PX expiry, shared by every instance."""

    def __init__(self, url: str, namespace: str = "mmproxy") -> None:
        # The client backs off by itself: for _RETRY_S after a failure, calls fail without touching the network.
        self._redis = RedisClient(url, timeout=_REDIS_TIMEOUT_S, retry_s=_RETRY_S)
        self._prefix = f"{namespace}:cache:".encode()
        self._warned_at = -_WARN_EVERY_S

    def _name(self, key: bytes) -> bytes:
        return self._prefix + key.hex().encode()

    def _trouble(self, exc: RedisError, doing: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            # The type only, as a matter of principle: nothing about the connection reaches the log.
            log.warning("response cache: Redis %s failed (%s); serving without the shared cache",
                        doing, type(exc).__name__)

    async def get(self, key: bytes) -> CachedResponse | None:
        try:
            data = await self._redis.execute("GET", self._name(key))
        except RedisError as exc:
            self._trouble(exc, "read")
            return None
        if not isinstance(data, bytes):
            return None
        try:
            return CachedResponse.decode(data)
        except CacheDecodeError:
            return None  # written by another version, or not by us: a miss, overwritten on the next set

    async def set(self, key: bytes, value: CachedResponse, ttl: float) -> None:
        if not ttl > 0:
            return
        try:
            await self._redis.execute("SET", self._name(key), value.encode(), "PX", max(1, int(ttl * 1000)))
        except RedisError as exc:
            self._trouble(exc, "write")

    async def delete(self, key: bytes) -> None:
        try:
            await self._redis.execute("DEL", self._name(key))
        except RedisError as exc:
            self._trouble(exc, "delete")

    async def close(self) -> None:
        await self._redis.close()


DEFAULT_MAX_BYTES = 256 * 1024 * 1024
