"""mmproxy.cache.store: the value format, the in-process LRU, and the Redis backend against a real redis-server."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time

import pytest
import redis

from mmproxy.cache.store import (
    ENTRY_OVERHEAD,
    CacheDecodeError,
    CachedResponse,
    MemoryStore,
    RedisStore,
)
from tests.router import test_shared_redis

redis_url = test_shared_redis.redis_url  # the module fixture: one throwaway redis-server, started the same way


def response(body: bytes = b'{"id":"chatcmpl-1","choices":[]}', **fields) -> CachedResponse:
    values = dict(stream=False, model_group="gpt-4o", deployment="frontier-1", prompt_tokens=12,
                  completion_tokens=34, cost_usd=0.000375, created=1_764_000_000.25)
    values.update(fields)
    return CachedResponse(body, **values)


def key(n: int) -> bytes:
    return n.to_bytes(16, "big")


# -- the value format ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    response(),
    response(b"data: {\"x\":1}\n\ndata: [DONE]\n\n", stream=True),
    response(b"", model_group="gruppe-\u00fc\u00df", deployment="\u6a21\u578b", prompt_tokens=0, completion_tokens=0,
             cost_usd=0.0),
    response(bytes(range(256)) * 1000, prompt_tokens=2**40, cost_usd=1e-12),
])
def test_encode_decode_roundtrip(value):
    assert CachedResponse.decode(value.encode()) == value


def test_encoding_is_compact():
    value = response()
    assert len(value.encode()) <= len(value.body) + len(value.model_group) + len(value.deployment) + 48


@pytest.mark.parametrize("data", [
    b"",
    b"mc",
    b'{"id":"chatcmpl-1"}',  # a foreign value under our key
    b"\x00" * 64,
    response().encode()[:30],  # cut inside the header
    response(model_group="a-long-group-name").encode()[:45],  # cut inside the names
    b"mc\x02" + response().encode()[3:],  # a later version
    struct.pack("<2sBBqqddII", b"mc", 1, 0, 1, 1, 0.0, 0.0, 2, 0) + b"\xff\xfe",  # names not UTF-8
])
def test_a_corrupt_or_foreign_value_is_a_decode_error(data):
    with pytest.raises(CacheDecodeError):
        CachedResponse.decode(data)


# -- MemoryStore -----------------------------------------------------------------------------------


def entry_size(value: CachedResponse) -> int:
    return len(value.body) + len(value.model_group) + len(value.deployment) + ENTRY_OVERHEAD


async def test_memory_get_set_delete():
    store = MemoryStore(1 << 20)
    assert await store.get(key(1)) is None
    value = response()
    await store.set(key(1), value, 60)
    assert await store.get(key(1)) == value
    assert store.get_now(key(1)) == value
    await store.delete(key(1))
    assert await store.get(key(1)) is None
    assert store.bytes == 0


async def test_memory_is_bounded_by_bytes_and_evicts_the_least_recently_used():
    value = response(b"x" * 1000)
    store = MemoryStore(max_bytes=4 * entry_size(value), max_entry_bytes=1 << 20)
    for n in range(4):
        await store.set(key(n), value, 60)
    assert len(store) == 4 and store.bytes == 4 * entry_size(value)
    assert await store.get(key(0)) is not None  # recency now 1, 2, 3, 0
    await store.set(key(4), value, 60)  # evicts 1
    big = response(b"y" * 2500)  # needs the room of two small entries
    await store.set(key(5), big, 60)  # evicts 2 and 3
    assert store.bytes == 2 * entry_size(value) + entry_size(big) <= store.max_bytes
    assert [store.get_now(key(n)) is not None for n in range(6)] == [True, False, False, False, True, True]


async def test_memory_overwrite_keeps_the_byte_count_right():
    store = MemoryStore(1 << 20)
    await store.set(key(1), response(b"a" * 500), 60)
    await store.set(key(1), response(b"b" * 100), 60)
    assert store.get_now(key(1)).body == b"b" * 100
    assert len(store) == 1 and store.bytes == entry_size(response(b"b" * 100))


async def test_memory_ttl_expiry_is_a_miss_and_frees_the_bytes():
    store = MemoryStore(1 << 20)
    await store.set(key(1), response(), 0.05)
    await store.set(key(2), response(), 60)
    assert store.get_now(key(1)) is not None
    await asyncio.sleep(0.08)
    assert await store.get(key(1)) is None
    assert len(store) == 1 and store.bytes == entry_size(response())
    assert store.get_now(key(2)) is not None


async def test_memory_zero_or_negative_ttl_stores_nothing():
    store = MemoryStore(1 << 20)
    await store.set(key(1), response(), 0)
    await store.set(key(2), response(), -5)
    assert len(store) == 0 and store.bytes == 0


async def test_memory_under_pressure_expired_entries_go_before_live_ones():
    value = response(b"x" * 1000)
    store = MemoryStore(max_bytes=3 * entry_size(value), max_entry_bytes=1 << 20)
    await store.set(key(0), value, 60)  # the least recently used, but live
    await store.set(key(1), value, 60)
    await store.set(key(2), value, 0.05)  # the most recently used, but about to expire
    await asyncio.sleep(0.08)
    await store.set(key(3), value, 60)
    assert [store.get_now(key(n)) is not None for n in range(4)] == [True, True, False, True]


async def test_memory_an_oversize_value_is_not_cached_and_replaces_the_old_one():
    store = MemoryStore(max_bytes=64_000)  # entries up to 4,000 bytes
    small = response(b"x" * 100)
    for n in range(5):
        await store.set(key(n), small, 60)
    await store.set(key(0), response(b"z" * 5000), 60)
    assert store.get_now(key(0)) is None  # the stale answer is gone too
    assert all(store.get_now(key(n)) is not None for n in range(1, 5))  # nothing was flushed for it
    assert store.bytes == 4 * entry_size(small)


async def test_memory_many_writes_stay_within_budget_and_account_exactly():
    store = MemoryStore(max_bytes=50_000, max_entry_bytes=50_000)
    for n in range(2000):
        await store.set(key(n % 300), response(b"x" * (n % 700)), 60 if n % 3 else 0.001)
        assert store.bytes <= store.max_bytes
    for n in range(300):
        await store.delete(key(n))
    assert len(store) == 0 and store.bytes == 0


# -- RedisStore ------------------------------------------------------------------------------------


def dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"redis://:hunter2-secret@127.0.0.1:{probe.getsockname()[1]}/0"


async def test_redis_set_get_delete_and_key_layout(redis_url):
    store = RedisStore(redis_url, namespace="t-layout")
    try:
        value = response(b"data: 1\n\n", stream=True)
        await store.set(key(7), value, 30)
        assert await store.get(key(7)) == value
        raw = redis.Redis.from_url(redis_url)
        name = "t-layout:cache:" + key(7).hex()
        assert raw.get(name) == value.encode()
        assert 29_000 < raw.pttl(name) <= 30_000
        await store.delete(key(7))
        assert await store.get(key(7)) is None and raw.exists(name) == 0
    finally:
        await store.close()


async def test_redis_ttl_expiry(redis_url):
    store = RedisStore(redis_url, namespace="t-ttl")
    try:
        await store.set(key(1), response(), 0.1)
        assert await store.get(key(1)) is not None
        await asyncio.sleep(0.2)
        assert await store.get(key(1)) is None
    finally:
        await store.close()


async def test_two_instances_share_entries_within_a_namespace(redis_url):
    one, two = RedisStore(redis_url, "t-shared"), RedisStore(redis_url, "t-shared")
    other = RedisStore(redis_url, "t-elsewhere")
    try:
        await one.set(key(3), response(b"from one"), 30)
        assert (await two.get(key(3))).body == b"from one"
        assert await other.get(key(3)) is None
    finally:
        for store in (one, two, other):
            await store.close()


async def test_redis_a_foreign_value_is_a_miss(redis_url):
    store = RedisStore(redis_url, "t-foreign")
    try:
        redis.Redis.from_url(redis_url).set("t-foreign:cache:" + key(1).hex(), b'{"written": "by someone else"}')
        assert await store.get(key(1)) is None
    finally:
        await store.close()


async def test_redis_down_is_a_miss_with_one_warning_and_no_secret(caplog):
    store = RedisStore(dead_url(), "t-down")
    try:
        with caplog.at_level(logging.WARNING, logger="mmproxy.cache"):
            assert await store.get(key(1)) is None
            await store.set(key(1), response(), 30)
            await store.delete(key(1))
            started = time.monotonic()
            for _ in range(20):
                assert await store.get(key(1)) is None
            assert time.monotonic() - started < 0.2  # backing off: no connection attempt per request
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "Redis" in warnings[0].getMessage()
        assert "hunter2" not in caplog.text
    finally:
        await store.close()


async def test_a_stalled_redis_is_a_miss_after_the_socket_timeout(redis_url):
    store = RedisStore(redis_url, "t-stall")
    admin = redis.Redis.from_url(redis_url)
    try:
        await store.set(key(1), response(), 30)
        admin.execute_command("CLIENT", "PAUSE", 800, "ALL")
        started = time.monotonic()
        assert await store.get(key(1)) is None
        await store.set(key(2), response(), 30)  # skipped while backing off
        assert time.monotonic() - started < 1.0
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        await store.close()
    again = RedisStore(redis_url, "t-stall")
    try:
        assert await again.get(key(1)) is not None
        assert await again.get(key(2)) is None
    finally:
        await again.close()


