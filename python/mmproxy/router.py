"""Choose the deployment that serves a request.

Deployments sharing a ``model_name`` form a group; within a group the pick is
weighted random (LiteLLM's ``simple-shuffle``), the only strategy so far, among
deployments that are not cooling down, preferring ones this request has not tried.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from itertools import accumulate

from mmproxy.health import Health
from mmproxy.providers import Provider
from mmproxy.rules import TIERS, Decision


class ModelGroup:
    __slots__ = ("_cum_weights", "members", "name")

    def __init__(self, name: str, members: list[Provider]) -> None:
        self.name = name
        self.members = members
        self._cum_weights = list(accumulate(m.deployment.weight for m in members))

    def pick(self, health: Health, avoid: Collection[str] = ()) -> Provider | None:
        """A deployment to try, or None when every one is cooling down."""
        members = self.members
        usable = [m for m in members if not health.cooling(m.deployment.id)]
        if avoid:
            fresh = [m for m in usable if m.deployment.id not in avoid]
            usable = fresh or usable
        if not usable:
            return None
        if len(usable) == 1:
            return usable[0]
        if len(usable) == len(members):
            return random.choices(members, cum_weights=self._cum_weights)[0]
        return random.choices(usable, weights=[m.deployment.weight for m in usable])[0]

    def untried(self, health: Health, tried: Collection[str]) -> bool:
        """Whether a healthy deployment this request has not tried yet is left."""
        return any(m.deployment.id not in tried and not health.cooling(m.deployment.id) for m in self.members)


# The local tier: models run by the operator's own Ollama, where data does not leave their machines.
_LOCAL_PROVIDERS = frozenset({"ollama", "ollama_chat"})


def is_local(provider: Provider) -> bool:
    return provider.deployment.provider in _LOCAL_PROVIDERS


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
