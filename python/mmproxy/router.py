"""Choose the deployment that serves a request.

Deployments sharing a ``model_name`` form a group; within a group the pick is
weighted random (LiteLLM's ``simple-shuffle``), the only strategy so far.
"""

from __future__ import annotations

import random
from itertools import accumulate

from mmproxy.providers import Provider


class ModelGroup:
    __slots__ = ("_cum_weights", "members", "name")

    def __init__(self, name: str, members: list[Provider]) -> None:
        self.name = name
        self.members = members
        self._cum_weights = list(accumulate(m.deployment.weight for m in members))

    def pick(self) -> Provider:
        if len(self.members) == 1:
            return self.members[0]
        return random.choices(self.members, cum_weights=self._cum_weights)[0]


class Router:
    def __init__(self, providers: list[Provider]) -> None:
        by_name: dict[str, list[Provider]] = {}
        for provider in providers:
            by_name.setdefault(provider.deployment.model_name, []).append(provider)
        self.groups = {name: ModelGroup(name, members) for name, members in by_name.items()}

    def group(self, model: str) -> ModelGroup | None:
        return self.groups.get(model)
