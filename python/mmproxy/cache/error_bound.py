"""Error-bounded semantic hits: serve a similar prompt's answer only while the observed error rate allows it.

Why not a cosine threshold: no single threshold is both safe and useful. On the Banking77 dev stream with the
local embedder, cosine ≥ 0.98 still serves 1.5 % wrong answers (for 4.4 % of requests), and the default 0.75
serves 39 % at 4.4 % wrong. vCache (Schroeder et al., "vCache: Verified Semantic Prompt Caching", arXiv
2502.03771) showed that learning online, from explorations, when a cached answer stays right gives a
user-set error bound and more hits. This module follows that idea with three differences, each measured on
the dev stream (``benches/bench_semantic_stream.py``):

- The bound is on the error rate of *served hits* (vCache bounds it over all requests, so a cache that serves
  few hits may get every one wrong). A candidate is served when the request's estimated P(right) clears a
  cutoff, and the cutoff is certified on the outcomes observed so far: of the regions above a grid of cutoffs,
  the lowest one whose error rate's upper bound (at ``confidence``, split over the grid) is at most
  ``max_error_rate`` (risk control by multiple testing, as in "Learn then Test", Angelopoulos et al. 2021).
- P(right) is one logistic model per workload over features of the whole neighbourhood, not a sigmoid per entry:
  the nearest prompt's cosine, the share of the nearest ``NEIGHBOURS`` cached prompts whose answer agrees with
  the nearest one's, the cosine margin to the nearest prompt answered otherwise, and what was observed about
  reusing this entry (right at a lower similarity, wrong at a higher one: vCache's per-entry evidence). A
  per-entry model needs many observations of each entry before it serves; answer agreement among the
  neighbours carries most of the signal from the start (oracle ranking on the stream's second half:
  cosine alone serves 4.8 % of requests at 1 % error, the neighbourhood model 68 %).
- A would-be hit is explored with probability ``explore_rate`` (the client gets the fresh answer, which is then
  compared with the cached one), so the certified region keeps being measured; every request that is not served
  is explored at no extra model cost, since it is forwarded anyway. Whether a request is explored depends on its
  score only, never on its outcome, so the outcomes above a cutoff are fair draws of "wrong, given a score that
  high"; but they lean towards the scores just above the cutoff (explored fully before it was certified), where
  errors are likelier than in the served traffic. ``_certify`` corrects that mix with the model (a ratio
  estimate). Weighting each outcome by 1/P(explored) instead would need ~1/``explore_rate`` times more outcomes
  before any cutoff passes (measured: no δ = 0.05 cutoff certified in 9,000 requests).

Everything here is plain numpy on a few thousand observations: a decision is one dot product; a refit (IRLS
and the cutoff scan) takes a few ms and runs off the event loop.
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mmproxy.smart.model import fit_logistic, sigmoid

__all__ = ["NEIGHBOURS", "Decision", "ErrorBound", "Evidence", "features", "kl_upper_bound"]

NEIGHBOURS = 5  # cached prompts whose answers are compared with the nearest one's
FEATURES = ("cosine", "agreement", "margin", "right_below", "wrong_above")
_ENTRY_MEMORY = 32  # observations kept per entry
_L2 = 1.0
_GROWTH = 1.25  # each region tested holds this many times the outcomes of the last


@dataclass(slots=True)
class Evidence:
    """What was observed about reusing one cached entry: (similarity of the incoming prompt, right?) pairs."""

    seen: list[tuple[float, bool]] = field(default_factory=list)

    def add(self, similarity: float, right: bool) -> None:
        self.seen.append((similarity, right))
        if len(self.seen) > _ENTRY_MEMORY:
            del self.seen[0]

    def counts(self, similarity: float) -> tuple[int, int]:
        """(times it was right for a prompt no closer than this one, times it was wrong for one at least as close)."""
        right = sum(1 for s, ok in self.seen if ok and s <= similarity)
        wrong = sum(1 for s, ok in self.seen if not ok and s >= similarity)
        return right, wrong


def features(similarities: Sequence[float], agrees: Sequence[bool], evidence: Evidence | None) -> np.ndarray:
    """The model's features for serving the first of ``similarities`` (the cosines of the nearest cached prompts,
    best first; ``agrees[i]``: whether prompt i's answer is equivalent to the first one's, ``agrees[0]`` True).

    Missing neighbours count as disagreeing, and the margin to an unseen disagreeing prompt is at least the
    distance to the farthest one seen."""
    top = similarities[0]
    agree = sum(1 for a in agrees[:NEIGHBOURS] if a) / NEIGHBOURS
    other = next((s for s, a in zip(similarities, agrees, strict=True) if not a), None)
    if other is None:
        other = similarities[-1] if len(similarities) >= NEIGHBOURS else 0.0
    right, wrong = evidence.counts(top) if evidence is not None else (0, 0)
    return np.array([top, agree, top - other, math.log1p(right), math.log1p(wrong)], dtype=np.float64)


@dataclass(slots=True)
class Decision:
    serve: bool
    p_right: float  # the model's estimate; NaN before the first fit
    certified: bool  # the estimate cleared the cutoff (an explored one was drawn for measurement)


def kl_upper_bound(errors: float, n: float, confidence: float) -> float:
    """The largest q with n·KL(errors/n ‖ q) ≤ ln(1/(1-confidence)): a binomial upper confidence bound (Chernoff),
    valid for any n, unlike a normal approximation near 0."""
    if n <= 0:
        return 1.0
    p = min(max(errors / n, 0.0), 1.0)
    budget = math.log(1.0 / (1.0 - confidence)) / n
    lo, hi = p, 1.0
    for _ in range(40):
        q = (lo + hi) / 2
        if _kl(p, q) > budget:
            hi = q
        else:
            lo = q
    return hi


def _kl(p: float, q: float) -> float:
    q = min(max(q, 1e-12), 1 - 1e-12)
    out = 0.0
    if p > 0:
        out += p * math.log(p / q)
    if p < 1:
        out += (1 - p) * math.log((1 - p) / (1 - q))
    return out


class ErrorBound:
    """One workload's hit decisions and what they learn from. Thread-safe: decisions on the event loop, ``refit`` in
    a worker thread, observations from both (the request's own and other instances' through Redis)."""

    def __init__(self, max_error_rate: float, confidence: float = 0.95, explore_rate: float = 0.05,
                 refit_every: int = 32, max_observations: int = 20_000, rng: random.Random | None = None) -> None:
        if not 0.0 < max_error_rate < 1.0:
            raise ValueError("max_error_rate must be in (0, 1)")
        if not 0.5 <= confidence < 1.0:
            raise ValueError("confidence must be in [0.5, 1)")
        if not 0.0 < explore_rate <= 1.0:
            raise ValueError("explore_rate must be in (0, 1]")
        self.max_error_rate, self.confidence, self.explore_rate = max_error_rate, confidence, explore_rate
        self.refit_every = refit_every
        self._rng = rng or random.Random()
        # The newest ``max_observations`` of each: explored requests' features and their outcomes, and every
        # decided request's features (the traffic's mix of scores).
        self._x: deque[np.ndarray] = deque(maxlen=max_observations)
        self._right: deque[bool] = deque(maxlen=max_observations)
        self._seen: deque[np.ndarray] = deque(maxlen=max_observations)
        self._since_fit = 0
        self._weights: np.ndarray | None = None  # logistic coefficients, the bias last
        self.cutoff: float | None = None  # least P(right) served; None: nothing certified yet
        self._lock = threading.Lock()
        # The first test covers twice the outcomes that pass with no error at all (-ln(1-confidence)/δ): a few
        # errors are expected even at the top (label noise: ~1.5 % of near-identical Banking77 messages).
        self._first = math.ceil(2 * math.log(1 / (1 - confidence)) / max_error_rate)

    def __len__(self) -> int:
        return len(self._right)

    def p_right(self, x: np.ndarray) -> float:
        weights = self._weights
        if weights is None:
            return math.nan
        return float(sigmoid(x @ weights[:-1] + weights[-1]))

    def decide(self, x: np.ndarray) -> Decision:
        """Serve when the estimate clears the certified cutoff, except for an ``explore_rate`` share of those."""
        p = self.p_right(x)
        cutoff = self.cutoff
        with self._lock:
            self._seen.append(x)
        if cutoff is None or not p >= cutoff:
            return Decision(False, p, False)
        return Decision(self._rng.random() >= self.explore_rate, p, True)

    @property
    def due(self) -> bool:
        """Enough outcomes came in since the last fit to refit."""
        return self._since_fit >= self.refit_every

    def observe(self, x: np.ndarray, right: bool) -> None:
        """Record an explored request's outcome."""
        with self._lock:
            self._x.append(np.asarray(x, dtype=np.float64))
            self._right.append(bool(right))
            self._since_fit += 1

    def refit(self) -> None:
        """Fit P(right | features) on every outcome, then certify the lowest cutoff whose served region's error
        bound holds (see the module docstring)."""
        with self._lock:
            if not self._right:
                return
            x = np.vstack(self._x)
            right = np.array(self._right, dtype=np.float64)
            seen = np.vstack(self._seen) if self._seen else x
            self._since_fit = 0
        if right.min() == right.max():  # one class only: nothing to tell apart yet
            return
        weights = fit_logistic(x, right, _L2)
        scores = sigmoid(x @ weights[:-1] + weights[-1])
        cutoff = self._certify(scores, right, sigmoid(seen @ weights[:-1] + weights[-1]))
        self._weights, self.cutoff = weights, cutoff

    def _certify(self, scores: np.ndarray, right: np.ndarray, seen: np.ndarray) -> float | None:
        """The lowest cutoff on P(right) whose served region passes. The regions tested are the top ``n`` explored
        outcomes for ``n`` on a geometric grid (each ``_GROWTH`` times the last, from ``_first``); each test runs
        at ``confidence`` split over the grid (Bonferroni), so passing tests may be picked freely: the largest
        wins. (Testing in order from the top and stopping at the first failure needs no split, but one unlucky
        cluster of errors near the top then blocks every cutoff below it: across seeds of the same stream,
        the hit rate at δ = 0.02 varied twice as much.)

        The region's error is bounded by a ratio estimate: the model's predicted error over the traffic in the
        region (``seen``: every decision's score), scaled by how the explored outcomes in it compare with what
        the model predicted for them, whose count of errors is bounded. The model only carries the explored
        outcomes' mix of scores over to the traffic's (the outcomes lean towards the cutoff, where errors are
        likelier); the error level itself comes from the outcomes."""
        order = np.argsort(-scores, kind="stable")
        if len(order) < self._first:
            return None
        wrong = np.cumsum(1.0 - right[order])
        expected = np.cumsum(1.0 - scores[order])
        traffic = np.sort(seen)[::-1]
        traffic_error = np.cumsum(1.0 - traffic)
        sizes = sorted({min(len(order), round(self._first * _GROWTH ** k))
                        for k in range(int(math.log(len(order) / self._first, _GROWTH)) + 2)})
        level = 1.0 - (1.0 - self.confidence) / len(sizes)
        cutoff = None
        for end in sizes:
            at = float(scores[order[end - 1]])
            served = int(np.searchsorted(-traffic, -at, side="right"))
            predicted = traffic_error[served - 1] / served if served else expected[end - 1] / end
            errors = kl_upper_bound(float(wrong[end - 1]), end, level) * end
            if errors / max(float(expected[end - 1]), 1e-9) * predicted <= self.max_error_rate:
                cutoff = at
        return cutoff

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the bound learned from, to save: the explored requests' features and outcomes, and every decided
        request's features."""
        with self._lock:
            width = len(FEATURES)
            return (np.vstack(self._x) if self._x else np.empty((0, width)), np.array(self._right, dtype=bool),
                    np.vstack(self._seen) if self._seen else np.empty((0, width)))

    def restore(self, x: np.ndarray, right: np.ndarray, seen: np.ndarray) -> None:
        """Take back a saved ``state`` and refit on it."""
        if x.ndim != 2 or x.shape[1] != len(FEATURES) or len(right) != len(x) or seen.ndim != 2 \
                or seen.shape[1] != len(FEATURES):
            raise ValueError("a saved error bound of another shape")
        with self._lock:
            self._x.clear()
            self._x.extend(x.astype(np.float64))
            self._right.clear()
            self._right.extend(bool(r) for r in right)
            self._seen.clear()
            self._seen.extend(seen.astype(np.float64))
        self.refit()
