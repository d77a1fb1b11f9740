"""Model groups and the names a request can target.

Deployments sharing a ``model_name`` form a group. Routing rules can also target groups that are not
model names: a tier (``tier:<tier>``), the deployments inside the operator's trust boundary (``local``),
or both (``local:<tier>``); only chat deployments belong to those.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from mmproxy.config import Deployment
from mmproxy.router.health import Health
from mmproxy.router.strategies import Strategy
from mmproxy.router.usage import Usage
from mmproxy.rules import TIERS, Decision


class ModelGroup:
    __slots__ = ("members", "name", "trusted_only")

    def __init__(self, name: str, members: list[Deployment], trusted_only: bool = False) -> None:
        self.name = name
        self.members = members
        # Its requests must stay inside the trust boundary: no fallback may take them out of it.
        self.trusted_only = trusted_only

    def pick(
        self, health: Health, usage: Usage, strategy: Strategy, tokens: int, avoid: Collection[str] = (),
        limited: bool = True,
    ) -> Deployment | None:
        """A deployment to try, preferring ones not in ``avoid``; None when every one is cooling down or (for a
        ``limited`` call) at its rpm/tpm limit."""
        usable = [d for d in self.members
                  if not health.cooling(d.id) and (not limited or usage.has_room(d, tokens))]
        if avoid:
            fresh = [d for d in usable if d.id not in avoid]
            usable = fresh or usable
        if not usable:
            return None
        return usable[0] if len(usable) == 1 else strategy(usable, usage)

    def only(self, eligible: Callable[[Deployment], bool]) -> ModelGroup:
        """The group narrowed to the ``eligible`` deployments."""
        return ModelGroup(self.name, [d for d in self.members if eligible(d)], self.trusted_only)

    def untried(self, health: Health, tried: Collection[str]) -> bool:
        """Whether a healthy deployment this request has not tried yet is left."""
        return any(d.id not in tried and not health.cooling(d.id) for d in self.members)


def build_groups(deployments: Sequence[Deployment]) -> tuple[dict[str, ModelGroup], dict[str, ModelGroup]]:
    """The model groups by name, and the rule-only targets (tiers, local) that have members."""
    by_name: dict[str, list[Deployment]] = {}
    for deployment in deployments:
        by_name.setdefault(deployment.model_name, []).append(deployment)
    chat = [d for d in deployments if d.mode != "embedding"]
    virtual: dict[str, list[Deployment]] = {"local": [d for d in chat if d.local]}
    for tier in TIERS:
        virtual[f"tier:{tier}"] = [d for d in chat if d.tier == tier]
        virtual[f"local:{tier}"] = [d for d in virtual["local"] if d.tier == tier]
    return ({name: ModelGroup(name, members) for name, members in by_name.items()},
            {name: ModelGroup(name, members, name.startswith("local")) for name, members in virtual.items()
             if members})


def target(decision: Decision, requested: str) -> str:
    """The group name a rule's decision routes to (``requested``, the client's model, for a rule that only
    redacts)."""
    if decision.model is not None:
        return decision.model
    if decision.local_only:
        return f"local:{decision.tier}" if decision.tier else "local"
    if decision.tier is not None:
        return f"tier:{decision.tier}"
    return requested
