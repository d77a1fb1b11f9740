"""The response cache: exact answers by canonical hash, then near-duplicate questions by embedding.

The exact lookup costs one hash (Rust) and one dict or Redis read; the semantic one adds an embedding
(the local MiniLM or an embedding deployment), a FAISS search and the matcher's near-miss checks, and
runs only when the exact lookup missed. A semantic entry points at the exact entry of the request that
produced it, so both kinds expire together; with a Redis store the answers are shared by every instance
and the semantic entries travel between their indexes through a Redis stream (``semantic_feed``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from mmproxy import hashing
from mmproxy.cache.matcher import MatchSettings, WordVectors, accept_async
from mmproxy.cache.policy import Lookup
from mmproxy.cache.store import CachedResponse, MemoryStore, RedisStore, ResponseStore
from mmproxy.config import CacheSettings

if TYPE_CHECKING:
    import numpy as np

    from mmproxy.cache.semantic import SemanticEntry, SemanticIndex, SemanticIndexes
    from mmproxy.cache.semantic_feed import Entry, SemanticFeed

log = logging.getLogger("mmproxy.cache")

Embed = Callable[[str], Awaitable["np.ndarray"]]
_CANDIDATES = 4


@dataclass(slots=True)
class Hit:
    response: CachedResponse
    kind: str  # "hit" | "semantic-hit"
    similarity: float | None = None


@dataclass(slots=True)
class Question:
    """What the semantic layer compares: the last user turn, in the context of everything before it."""

    text: str
    context: bytes
    vector: np.ndarray | None = None


class ResponseCache:
    def __init__(self, settings: CacheSettings, embed: Embed | None = None, worker: int | None = None,
                 words: WordVectors | None = None) -> None:
        """``worker``: this process's index among ``--workers`` processes; each keeps its own index files.
        ``words``: in-context word vectors (the local embedder) for ``synonym_threshold``."""
        self.settings = settings
        self._words = words
        self._worker = worker
        self.store: ResponseStore = (RedisStore(settings.redis_url, settings.namespace) if settings.redis_url
                                     else MemoryStore(settings.max_bytes))
        self._embed = embed if settings.semantic else None
        self._indexes: SemanticIndexes | None = None  # made on the first vector, whose length is the dimension
        defaults = MatchSettings()
        self._match = MatchSettings(threshold=settings.similarity_threshold or defaults.threshold,
                                    verify=settings.verify, synonym_threshold=settings.synonym_threshold)
        self._background: set[asyncio.Task[Any]] = set()
        self._opened: set[str] = set()
        self._feed: SemanticFeed | None = None  # entries shared through Redis
        self._path = Path(settings.semantic_path) if settings.semantic_path else None
        if self._embed is not None and settings.redis_url:
            from mmproxy.cache.semantic_feed import SemanticFeed  # numpy and FAISS load only for a semantic cache

            self._feed = SemanticFeed(settings.redis_url, settings.namespace, settings.semantic_capacity)
            if self._path is not None:
                log.warning("semantic cache: semantic_path is not used with a Redis cache; the index is rebuilt "
                            "from Redis at start")
                self._path = None

    def jobs(self) -> list[Coroutine[Any, Any, None]]:
        """What the cache keeps doing in the background: saving its index, or following the other instances."""
        if self._feed is not None:
            return [self._feed.follow(self._add_shared)]
        if self._embed is not None and self._path is not None:
            return [self._keep_saving()]
        return []

    async def close(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._indexes is not None and self._path is not None:
            await asyncio.to_thread(self._indexes.save_all)
        if self._feed is not None:
            await self._feed.close()
        await self.store.close()

    async def _keep_saving(self, interval: float = 60.0) -> None:
        """Persist changed semantic indexes every ``interval`` seconds, so a crash loses at most that much."""
        while True:
            await asyncio.sleep(interval)
            if self._indexes is not None:
                try:
                    await asyncio.to_thread(self._indexes.save_all)
                except OSError as exc:
                    log.warning("could not save the semantic cache index: %s", exc)

    async def get(self, lookup: Lookup, payload: dict[str, Any]) -> tuple[Hit | None, Question | None]:
        """The cached answer for this request, if any; and the semantic question to store on a miss."""
        entry = await self.store.get(lookup.key)
        if entry is not None and lookup.fresh(entry.created):
            return Hit(entry, "hit"), None
        if self._embed is None:
            return None, None
        question = _question(payload, lookup.scope)
        if question is None:
            return None, None
        question.vector = await self._embed(question.text)
        index = await self._index(lookup.scope, len(question.vector))
        for candidate, similarity in index.search(question.vector, question.context, _CANDIDATES):
            if not await accept_async(question.text, candidate.text, similarity, self._match, self._words):
                continue
            entry = await self.store.get(candidate.cache_key)
            if entry is not None and lookup.fresh(entry.created):
                return Hit(entry, "semantic-hit", similarity), question
        return None, question

    def put(self, lookup: Lookup, response: CachedResponse, question: Question | None) -> None:
        """Keep an answer, off the response path: the client never waits for the cache."""
        task = asyncio.get_running_loop().create_task(self._put(lookup, response, question))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _put(self, lookup: Lookup, response: CachedResponse, question: Question | None) -> None:
        await self.store.set(lookup.key, response, lookup.ttl)
        if question is not None and question.vector is not None:
            from mmproxy.cache.semantic import SemanticEntry

            entry = SemanticEntry(question.text, question.context, lookup.key, time.time() + lookup.ttl)
            (await self._index(lookup.scope, len(question.vector))).add(question.vector, entry)
            if self._feed is not None:
                await self._feed.publish(lookup.scope, question.vector, entry)

    async def _add_shared(self, entries: list[Entry]) -> None:
        """Other instances' entries, indexed in a worker thread: a catch-up read of thousands of them must not
        hold the event loop (an index takes its own lock per add)."""
        by_scope: dict[str, list[tuple[np.ndarray, SemanticEntry]]] = {}
        for scope, vector, entry in entries:
            by_scope.setdefault(scope, []).append((vector, entry))
        for scope, items in by_scope.items():
            index = await self._index(scope, len(items[0][0]))
            await asyncio.to_thread(_add_all, index, items)

    async def _index(self, scope: str, dim: int) -> SemanticIndex:
        if self._indexes is None:
            from mmproxy.cache.semantic import SemanticIndexes  # FAISS loads only for a semantic cache

            path = self._path
            if path is not None and self._worker is not None:
                path = path / f"worker-{self._worker}"
            self._indexes = SemanticIndexes(dim, self.settings.semantic_capacity, path)
        if scope in self._opened:
            return self._indexes.get(scope)
        # The first use reads the saved index (about 0.6 s at 100,000 entries): not on the event loop.
        index = await asyncio.to_thread(self._indexes.get, scope)
        self._opened.add(scope)
        return index


def _add_all(index: SemanticIndex, items: list[tuple[np.ndarray, SemanticEntry]]) -> None:
    for vector, entry in items:
        index.add(vector, entry)


def _question(payload: dict[str, Any], scope: str) -> Question | None:
    """The last user turn as text, and a hash of the scope, tools and every turn before it."""
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    content = last.get("content")
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        if not all(isinstance(t, str) for t in parts):
            return None  # images and other parts: only an exact hit is safe
        content = " ".join(parts)  # type: ignore[arg-type]
    if not isinstance(content, str) or not content.strip():
        return None
    earlier = {k: v for k, v in payload.items() if k not in ("messages", "cache", "stream", "stream_options")}
    earlier["messages"] = messages[:-1]
    context = bytes.fromhex(hashing.request_hash(orjson.dumps(earlier), scope))
    return Question(" ".join(content.split()), context)
