"""The semantic cache's shared feed against a real redis-server: what one instance indexes, the others get."""

from __future__ import annotations

import asyncio
import socket
import time

import numpy as np
import redis

from mmproxy.cache.semantic import SemanticEntry
from mmproxy.cache.semantic_feed import SemanticFeed
from tests.router.test_shared_redis import redis_url  # noqa: F401  (the module fixture: a real redis-server)


def _entry(text: str, ttl: float = 60.0) -> SemanticEntry:
    return SemanticEntry(text, b"ctx-" + text.encode()[:4], bytes(range(16)), time.time() + ttl)


def _collect() -> tuple[list[tuple[str, np.ndarray, SemanticEntry]], object]:
    got: list[tuple[str, np.ndarray, SemanticEntry]] = []

    async def add(entries: list[tuple[str, np.ndarray, SemanticEntry]]) -> None:
        got.extend(entries)

    return got, add


async def _follow_briefly(feed: SemanticFeed, add: object, seconds: float = 0.3) -> None:
    task = asyncio.ensure_future(feed.follow(add, interval=0.05))  # type: ignore[arg-type]
    await asyncio.sleep(seconds)
    task.cancel()


def test_entries_reach_other_instances_and_a_late_one(redis_url: str):  # noqa: F811
    async def scenario() -> None:
        one = SemanticFeed(redis_url, "feed-a", capacity=1000)
        two = SemanticFeed(redis_url, "feed-a", capacity=1000)
        vector = np.arange(8, dtype=np.float32)
        await one.publish("gpt-4o\0ns", vector, _entry("how do I reverse a list"))
        await one.publish("gpt-4o\0ns", vector, _entry("already expired", ttl=-1))
        got, add = _collect()
        await _follow_briefly(two, add)
        assert [(scope, entry.text) for scope, _, entry in got] == [("gpt-4o\0ns", "how do I reverse a list")]
        _, received, entry = got[0]
        assert np.array_equal(received, vector) and entry.cache_key == bytes(range(16))
        assert entry.context == b"ctx-how "
        # The publisher skips its own entries; a feed started later replays the stream from the start.
        mine, add_mine = _collect()
        await _follow_briefly(one, add_mine)
        assert mine == []
        late_got, add_late = _collect()
        late = SemanticFeed(redis_url, "feed-a", capacity=1000)
        await _follow_briefly(late, add_late)
        assert [entry.text for _, _, entry in late_got] == ["how do I reverse a list"]
        # Another namespace is another stream.
        other_got, add_other = _collect()
        other = SemanticFeed(redis_url, "feed-b", capacity=1000)
        await _follow_briefly(other, add_other)
        assert other_got == []
        for feed in (one, two, late, other):
            await feed.close()

    asyncio.run(scenario())


def test_foreign_stream_entries_are_skipped(redis_url: str):  # noqa: F811
    redis.Redis.from_url(redis_url).xadd("feed-c:semantic", {"o": "someone", "s": "x", "e": "not a number"})

    async def scenario() -> None:
        feed = SemanticFeed(redis_url, "feed-c", capacity=1000)
        got, add = _collect()
        await _follow_briefly(feed, add)
        assert got == []
        await feed.publish("x", np.ones(4, dtype=np.float32), _entry("still works"))
        reader = SemanticFeed(redis_url, "feed-c", capacity=1000)
        await _follow_briefly(reader, add)
        assert [entry.text for _, _, entry in got] == ["still works"]
        await feed.close()
        await reader.close()

    asyncio.run(scenario())


def test_redis_down_costs_only_the_sharing():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> None:
        feed = SemanticFeed(f"redis://127.0.0.1:{port}/0", "feed-d", capacity=10, timeout=0.2)
        await feed.publish("x", np.ones(4, dtype=np.float32), _entry("lost"))  # no exception
        got, add = _collect()
        await _follow_briefly(feed, add)  # keeps retrying without raising
        assert got == []
        await feed.close()

    asyncio.run(scenario())
