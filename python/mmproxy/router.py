"""Choose the deployment that serves a request.

Deployments sharing a ``model_name`` form a group. Within a group the pick is made by
``router_settings.routing_strategy`` (LiteLLM's names) among deployments that are not
cooling down and have rpm/tpm room, preferring ones this request has not tried yet.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection

from mmproxy.config import ROUTING_STRATEGIES
from mmproxy.health import Health
from mmproxy.providers import Provider
from mmproxy.rules import TIERS, Decision
from mmproxy.usage import Usage

Strategy = Callable[[list[Provider], Usage], Provider]


def _weighted(usable: list[Provider], usage: Usage) -> Provider:
    return random.choices(usable, weights=[m.deployment.weight for m in usable])[0]


def _least(usable: list[Provider], score: Callable[[Provider], float]) -> Provider:
    """The lowest score; ties broken at random so equal deployments share the load."""
    best = min(score(m) for m in usable)
    return random.choice([m for m in usable if score(m) == best])


def _least_busy(usable: list[Provider], usage: Usage) -> Provider:
    return _least(usable, lambda m: usage.busy(m.deployment.id))


def _lowest_latency(usable: list[Provider], usage: Usage) -> Provider:
    # A deployment without a sample yet is tried first, so every one gets measured.
    return _least(usable, lambda m: _or_unmeasured(usage.latency_of(m.deployment.id)))


def _or_unmeasured(latency: float | None) -> float:
    return -1.0 if latency is None else latency


def _most_headroom(usable: list[Provider], usage: Usage) -> Provider:
    def used(m: Provider) -> float:
        d = m.deployment
        shares = [usage.requests(d.id) / d.rpm if d.rpm else 0.0, usage.tokens(d.id) / d.tpm if d.tpm else 0.0]
        return max(shares)

    return _least(usable, used)


def _cheapest(usable: list[Provider], usage: Usage) -> Provider:
    def price(m: Provider) -> float:
        d = m.deployment
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


class ModelGroup:
    __slots__ = ("members", "name")

    def __init__(self, name: str, members: list[Provider]) -> None:
        self.name = name
        self.members = members

    def pick(
        self, health: Health, usage: Usage, strategy: Strategy, tokens: int, avoid: Collection[str] = ()
    ) -> Provider | None:
        """A deployment to try, or None when every one is cooling down or at its rpm/tpm limit."""
        usable = [m for m in self.members
                  if not health.cooling(m.deployment.id) and usage.has_room(m.deployment, tokens)]
        if avoid:
            fresh = [m for m in usable if m.deployment.id not in avoid]
            usable = fresh or usable
        if not usable:
            return None
        return usable[0] if len(usable) == 1 else strategy(usable, usage)

    def untried(self, health: Health, tried: Collection[str]) -> bool:
        """Whether a healthy deployment this request has not tried yet is left."""
        return any(m.deployment.id not in tried and not health.cooling(m.deployment.id) for m in self.members)


def is_local(provider: Provider) -> bool:
    return provider.deployment.local


class Router:
    def __init__(self, providers: list[Provider]) -> None:
        by_name: dict[str, list[Provider]] = {}
        for provider in providers:
            by_name.setdefault(provider.deployment.model_name, []).append(provider)
        self.groups = {name: ModelGroup(name, members) for name, members in by_name.items()}
        # Rule targets that are not model names: a tier, local deployments, or both.
        chat = [p for p in providers if p.deployment.mode != "embedding"]
        virtual: dict[str, list[Provider]] = {"local": [p for p in chat if is_local(p)]}
        for tier in TIERS:
            virtual[f"tier:{tier}"] = [p for p in chat if p.deployment.tier == tier]
            virtual[f"local:{tier}"] = [p for p in virtual["local"] if p.deployment.tier == tier]
        self._virtual = {name: ModelGroup(name, members) for name, members in virtual.items() if members}

    def group(self, model: str) -> ModelGroup | None:
        return self.groups.get(model) or self._virtual.get(model)

    @staticmethod
    def target(decision: Decision) -> str:
        """The group name a rule's decision routes to."""
        if decision.model is not None:
            return decision.model
        if decision.local_only:
            return f"local:{decision.tier}" if decision.tier else "local"
        return f"tier:{decision.tier}"
