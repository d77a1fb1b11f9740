"""The verified semantic cache's side of a lookup: which cached neighbour may answer, whether it may, and what
an explored request teaches.

A lookup finds the nearest cached prompts (same scope and conversation context). The first one the Rust
near-miss check does not veto is the candidate: a changed number, unit, direction, an opposite or a swap of
roles is never worth exploring, since its answer is wrong by construction. The candidate's features (its
cosine, how many neighbours' answers agree with its answer, the margin to the nearest prompt answered
otherwise, what reusing it showed so far) go to the workload's ``ErrorBound``, which serves it or not. A request
not served is explored: it is forwarded as usual, and once its answer is in, the answer equivalence compares
it with the candidate's cached answer; the outcome trains the bound and the candidate's evidence.

A workload is a scope and a conversation context (for a single-turn request, its system prompt and parameters):
the only entries that may answer a request share both, so its bound learns from the traffic it decides for.
One bound for every context would carry what it learned on one workload over to another, where the same
features mean something else: measured on the dev data, a bound certified on the Banking77 stream then served
hand-written near misses under another instruction ("...in Excel?" for "...in Python?") at 46 % error.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson

from mmproxy import _native
from mmproxy.cache.error_bound import NEIGHBOURS, Decision, ErrorBound, Evidence, features

if TYPE_CHECKING:
    from mmproxy._native import NearMissVerdict
    from mmproxy.cache.answers import Equivalence
    from mmproxy.cache.semantic import SemanticEntry
    from mmproxy.config import CacheSettings

__all__ = ["SEARCHED", "VETOES", "Candidate", "VerifiedHits", "workload"]

VETOES: frozenset[NearMissVerdict] = frozenset(
    ("number", "number order", "number unit", "unit", "direction", "opposite", "swapped"))
log = logging.getLogger("mmproxy.cache")

SEARCHED = NEIGHBOURS + 3  # cached prompts a lookup reads: the neighbours, and room for vetoed ones
MAX_WORKLOADS = 10_000  # bounds kept; the least recently used one is forgotten first


def workload(scope: str, context: bytes) -> str:
    """The key of the bound that decides for requests of ``scope`` in the conversation ``context``."""
    return f"{scope}\0{context.hex()}"


@dataclass(slots=True)
class Candidate:
    """The cached prompt that may answer a request, what the bound decided, and what an exploration records."""

    entry: SemanticEntry
    similarity: float
    features: np.ndarray
    decision: Decision


class VerifiedHits:
    """Error-bounded hit decisions for every workload (``workload()``) of one cache, and the counters the metrics
    read."""

    def __init__(self, settings: CacheSettings, equivalence: Equivalence, rng: random.Random | None = None) -> None:
        assert settings.max_error_rate is not None
        self.settings = settings
        self.equivalence = equivalence
        self.floor = settings.similarity_threshold or 0.7  # prompts less similar are not candidates at all
        self._rng = rng or random.Random()
        self._bounds: OrderedDict[str, ErrorBound] = OrderedDict()
        self._refitting: set[str] = set()
        self.vetoes = self.right = self.wrong = 0

    def bound(self, key: str) -> ErrorBound:
        """The bound of the workload ``key``."""
        bound = self._bounds.get(key)
        if bound is None:
            settings = self.settings
            assert settings.max_error_rate is not None
            bound = self._bounds[key] = ErrorBound(settings.max_error_rate, settings.error_confidence,
                                                   settings.explore_rate, rng=self._rng)
            if len(self._bounds) > MAX_WORKLOADS:
                self._bounds.popitem(last=False)
        else:
            self._bounds.move_to_end(key)
        return bound

    def choose(self, key: str, text: str, found: list[tuple[SemanticEntry, float]]) -> Candidate | None:
        """The candidate among ``found`` (nearest first) for the prompt ``text``, with the bound's decision; None
        when no cached prompt is close enough or every close one is vetoed. ``key``: the request's workload."""
        for index, (entry, similarity) in enumerate(found):
            if not similarity >= self.floor:
                return None
            if _native.near_miss_verdict(text, entry.text) in VETOES:
                self.vetoes += 1
                continue
            rest = found[:index] + found[index + 1:]
            x = features([similarity] + [s for _, s in rest],
                         [True] + [bool(entry.answer) and e.answer == entry.answer for e, _ in rest], entry.evidence)
            return Candidate(entry, similarity, x, self.bound(key).decide(x))
        return None

    async def learn(self, key: str, candidate: Candidate, question: str, cached: str, fresh: str,
                    equivalence: Equivalence | None = None) -> bool:
        """Compare an explored request's fresh answer with the candidate's cached one (by ``equivalence``, else the
        configured one), and learn from it."""
        right = await (equivalence or self.equivalence).same(question, cached, fresh)
        self.record(key, candidate.entry, candidate.similarity, candidate.features, right)
        await self.refit_if_due(key)
        return right

    def record(self, key: str, entry: SemanticEntry | None, similarity: float, x: np.ndarray, right: bool) -> None:
        """An outcome, this process's or another instance's: the entry's evidence (when it is indexed here) and
        the bound of the workload ``key``."""
        if entry is not None:
            if entry.evidence is None:
                entry.evidence = Evidence()
            entry.evidence.add(similarity, right)
        if right:
            self.right += 1
        else:
            self.wrong += 1
        self.bound(key).observe(x, right)

    async def refit_if_due(self, key: str) -> None:
        """Refit a workload's bound in a worker thread when enough outcomes came in, one refit at a time."""
        bound = self.bound(key)
        if not bound.due or key in self._refitting:
            return
        self._refitting.add(key)
        try:
            await asyncio.to_thread(bound.refit)
        finally:
            self._refitting.discard(key)

    def save(self, path: Path) -> None:
        """Every workload's bound, to ``path`` (atomically: a temporary file, then rename)."""
        arrays: dict[str, np.ndarray] = {}
        bounds = list(self._bounds.items())  # a copy: requests may add workloads meanwhile
        keys = [key for key, _ in bounds]
        for number, (_, bound) in enumerate(bounds):
            arrays[f"x{number}"], arrays[f"right{number}"], arrays[f"seen{number}"] = bound.state()
        arrays["keys"] = np.frombuffer(orjson.dumps(keys), dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
        tmp.replace(path)

    def load(self, path: Path) -> None:
        """The bounds saved at ``path``; a missing file is none, an unreadable one is warned about and skipped."""
        try:
            with np.load(path, allow_pickle=False) as saved:
                keys = orjson.loads(saved["keys"].tobytes())
                for number, key in enumerate(keys):
                    self.bound(key).restore(saved[f"x{number}"], saved[f"right{number}"], saved[f"seen{number}"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, orjson.JSONDecodeError) as exc:
            log.warning("verified semantic cache: %s is not a usable saved state (%s); learning afresh", path, exc)
            self._bounds.clear()

    def series(self) -> dict[str, dict[tuple[str, ...], float | list[float]]]:
        """The counters as metrics series (``mmproxy.metrics.families``)."""
        return {"mmproxy_semantic_outcomes_total": {("right",): self.right, ("wrong",): self.wrong},
                "mmproxy_semantic_vetoes_total": {(): self.vetoes}}
