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

    from mmproxy.cache.answers import Equivalence
    from mmproxy.cache.semantic import SemanticEntry, SemanticIndex, SemanticIndexes
    from mmproxy.cache.semantic_feed import Entry, Outcome, SemanticFeed
    from mmproxy.cache.verified import Candidate, VerifiedHits

log = logging.getLogger("mmproxy.cache")

Embed = Callable[[str], Awaitable["np.ndarray"]]
_CANDIDATES = 4
_BOUNDS_FILE = "error-bounds.npz"  # the verified cache's learned bounds, beside the index files


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
    explored: Candidate | None = None  # verified cache: the cached prompt whose answer this request's is compared with


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
        self.verified: VerifiedHits | None = None  # error-bounded hits instead of the matcher's thresholds
        if self._embed is not None and settings.max_error_rate is not None:
            from mmproxy.cache.answers import Embedded, Exact
            from mmproxy.cache.verified import VerifiedHits

            equivalence: Equivalence = (Embedded(self._embed, settings.answer_similarity)
                                        if settings.answer_equivalence == "embedding" else Exact())
            self.verified = VerifiedHits(settings, equivalence)  # a judge is per request: see put()
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
            return [self._feed.follow(self._add_shared, self._learn_shared)]
        if self._embed is not None and self._path is not None:
            return [self._keep_saving()]
        return []

    @property
    def _directory(self) -> Path | None:
        """Where this process keeps its semantic state (each worker its own)."""
        if self._path is None or self._worker is None:
            return self._path
        return self._path / f"worker-{self._worker}"

    async def close(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        try:
            await asyncio.to_thread(self._save)
        except OSError as exc:
            log.warning("could not save the semantic cache: %s", exc)
        if self._feed is not None:
            await self._feed.close()
        await self.store.close()

    def _save(self) -> None:
        """The semantic indexes and the verified cache's bounds, to ``semantic_path``."""
        directory = self._directory
        if directory is None:
            return
        if self._indexes is not None:
            self._indexes.save_all()
        if self.verified is not None:
            self.verified.save(directory / _BOUNDS_FILE)

    async def _keep_saving(self, interval: float = 60.0) -> None:
        """Persist changed semantic indexes every ``interval`` seconds, so a crash loses at most that much."""
        if self.verified is not None and self._directory is not None:
            await asyncio.to_thread(self.verified.load, self._directory / _BOUNDS_FILE)
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self._save)
            except OSError as exc:
                log.warning("could not save the semantic cache: %s", exc)

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
        if self.verified is not None:
            return await self._verified_get(lookup, index, question), question
        for candidate, similarity in index.search(question.vector, question.context, _CANDIDATES):
            if not await accept_async(question.text, candidate.text, similarity, self._match, self._words):
                continue
            entry = await self.store.get(candidate.cache_key)
            if entry is not None and lookup.fresh(entry.created):
                return Hit(entry, "semantic-hit", similarity), question
        return None, question

    async def _verified_get(self, lookup: Lookup, index: SemanticIndex, question: Question) -> Hit | None:
        """The hit the error bound allows; otherwise the request is explored against the nearest candidate."""
        assert self.verified is not None and question.vector is not None
        from mmproxy.cache.verified import SEARCHED, workload

        found = index.search(question.vector, question.context, SEARCHED)
        candidate = self.verified.choose(workload(lookup.scope, question.context), question.text, found)
        if candidate is None:
            return None
        if candidate.decision.serve:
            entry = await self.store.get(candidate.entry.cache_key)
            if entry is not None and lookup.fresh(entry.created):
                return Hit(entry, "semantic-hit", candidate.similarity)
            return None  # its answer expired: nothing to compare with either
        question.explored = candidate
        return None

    def put(self, lookup: Lookup, response: CachedResponse, question: Question | None,
            equivalence: Equivalence | None = None) -> None:
        """Keep an answer, off the response path: the client never waits for the cache. An explored request's
        answer is compared with its candidate's (by ``equivalence``, else the configured one)."""
        task = asyncio.get_running_loop().create_task(self._put(lookup, response, question, equivalence))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _put(self, lookup: Lookup, response: CachedResponse, question: Question | None,
                   equivalence: Equivalence | None) -> None:
        await self.store.set(lookup.key, response, lookup.ttl)
        if question is None or question.vector is None:
            return
        from mmproxy.cache.semantic import SemanticEntry

        answer = ""
        if self.verified is not None:
            from mmproxy.cache.answers import answer_key, answer_text

            text = answer_text(response.body, response.stream)
            if text is None:
                return  # no text answer (a tool call): nothing to compare a later answer with
            answer = answer_key(text)
            if question.explored is not None:
                await self._learn(lookup, question, question.explored, text, equivalence)
        entry = SemanticEntry(question.text, question.context, lookup.key, time.time() + lookup.ttl, answer)
        (await self._index(lookup.scope, len(question.vector))).add(question.vector, entry)
        if self._feed is not None:
            await self._feed.publish(lookup.scope, question.vector, entry)

    async def _learn(self, lookup: Lookup, question: Question, candidate: Candidate, fresh: str,
                     equivalence: Equivalence | None) -> None:
        """Compare an explored request's answer with its candidate's cached one; the outcome trains the bound
        here and, through Redis, in every instance."""
        from mmproxy.cache.answers import answer_text

        assert self.verified is not None
        cached = await self.store.get(candidate.entry.cache_key)
        text = answer_text(cached.body, cached.stream) if cached is not None else None
        if text is None:
            return  # the candidate's answer expired meanwhile
        from mmproxy.cache.verified import workload

        right = await self.verified.learn(workload(lookup.scope, question.context), candidate, question.text, text,
                                          fresh, equivalence)
        if self._feed is not None:
            await self._feed.publish_outcome(lookup.scope, question.context, candidate.entry.cache_key,
                                             candidate.similarity, candidate.features, right)

    async def _learn_shared(self, outcomes: list[Outcome]) -> None:
        """Other instances' outcomes: the same bound everywhere, and the evidence of entries indexed here."""
        verified = self.verified
        if verified is None:
            return
        from mmproxy.cache.verified import workload

        keys = set()
        for scope, context, cache_key, similarity, x, right in outcomes:
            index = self._indexes.get(scope) if self._indexes is not None and scope in self._opened else None
            key = workload(scope, context)
            verified.record(key, index.entry(cache_key) if index is not None else None, similarity, x, right)
            keys.add(key)
        for key in keys:
            await verified.refit_if_due(key)

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

            self._indexes = SemanticIndexes(dim, self.settings.semantic_capacity, self._directory)
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
