"""The routing strategies (LiteLLM's names): which of a group's usable deployments takes the request.

A strategy sees only deployments that are healthy and within their rpm/tpm limits, and the live usage
figures; it returns one of them. Ties are broken at random so equal deployments share the load.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from mmproxy.config import ROUTING_STRATEGIES, Deployment
from mmproxy.router.usage import Usage

Strategy = Callable[[list[Deployment], Usage], Deployment]


def _weighted(usable: list[Deployment], usage: Usage) -> Deployment:
    return random.choices(usable, weights=[d.weight for d in usable])[0]


def _least(usable: list[Deployment], score: Callable[[Deployment], float]) -> Deployment:
    """The lowest score; ties broken at random."""
    best = min(score(d) for d in usable)
    return random.choice([d for d in usable if score(d) == best])


def _least_busy(usable: list[Deployment], usage: Usage) -> Deployment:
    return _least(usable, lambda d: usage.busy(d.id))


def _lowest_latency(usable: list[Deployment], usage: Usage) -> Deployment:
    # A deployment without a sample yet is tried first, so every one gets measured.
    return _least(usable, lambda d: _or_unmeasured(usage.latency_of(d.id)))


def _or_unmeasured(latency: float | None) -> float:
    return -1.0 if latency is None else latency


def _most_headroom(usable: list[Deployment], usage: Usage) -> Deployment:
    def used(d: Deployment) -> float:
        shares = [usage.requests(d.id) / d.rpm if d.rpm else 0.0, usage.tokens(d.id) / d.tpm if d.tpm else 0.0]
        return max(shares)

    return _least(usable, used)


def _cheapest(usable: list[Deployment], usage: Usage) -> Deployment:
    def price(d: Deployment) -> float:
        if d.input_cost_per_token is None and d.output_cost_per_token is None:
            return math.inf
        return (d.input_cost_per_token or 0.0) + (d.output_cost_per_token or 0.0)

    return _least(usable, price)


STRATEGIES: dict[str, Strategy] = {
    "simple-shuffle": _weighted,
    "least-busy": _least_busy,
    "latency-based-routing": _lowest_latency,
    "usage-based-routing": _most_headroom,
    "usage-based-routing-v2": _most_headroom,
    "cost-based-routing": _cheapest,
}
assert set(STRATEGIES) == set(ROUTING_STRATEGIES), "config and router disagree on strategy names"
