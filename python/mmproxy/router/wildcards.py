"""LiteLLM's wildcard routing: ``model_name: openai/*`` serves every ``openai/<model>`` a client names, and
``model_name: "*"`` every name at all.

A requested name no model group has is matched against the patterns, the most specific (longest) first, as
LiteLLM orders them; a bare well-known name (``gpt-4o``) is also tried with the provider it implies
(``openai/gpt-4o``). The parts the ``*`` matched fill the ``*`` of the entry's ``litellm_params.model``, and that
concrete model gets a deployment of its own, priced from the registry like a configured one. The resulting group
is kept by requested name, so an already-seen name costs one dict lookup; the table is bounded, so a client
inventing names cannot grow memory. Every deployment made from one entry shares the entry's id: health, rpm/tpm
and metrics count per wildcard entry, not per invented name.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence

from mmproxy.config import Wildcard, provider_of, wildcard_candidates, wildcard_deployment, wildcard_regex
from mmproxy.registry import all_defaults
from mmproxy.router.groups import ModelGroup

MAX_RESOLVED = 1024
"""Requested names whose group is kept; the least recently used one is dropped past this."""

_MODEL_ID = re.compile(r"[A-Za-z0-9._:@+/-]{1,256}")
"""What a name served through a wildcard may be: a model id. Some providers put the model in the request's URL
path (Gemini), so a client's name never brings spaces, control characters or ``.``/``..`` path segments there."""


class Wildcards:
    def __init__(self, wildcards: Sequence[Wildcard]) -> None:
        patterns: dict[str, list[Wildcard]] = {}
        for wildcard in wildcards:
            patterns.setdefault(wildcard.model_name, []).append(wildcard)
        # LiteLLM's order: the longest pattern first, then the one with more wildcards.
        compiled = [(wildcard_regex(name), name, members) for name, members in patterns.items()]
        self._patterns = sorted(compiled, key=lambda item: (len(item[0].pattern), item[1].count("*")), reverse=True)
        self._resolved: OrderedDict[str, ModelGroup] = OrderedDict()
        self.ids = frozenset(w.id for w in wildcards)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def group(self, name: str) -> ModelGroup | None:
        """The group serving requested ``name`` (named after the pattern that matched), or None when no pattern
        matches it or no supported provider serves what it resolves to."""
        group = self._resolved.get(name)
        if group is not None:
            self._resolved.move_to_end(name)
            return group
        group = self._resolve(name)
        if group is not None:
            self._resolved[name] = group
            if len(self._resolved) > MAX_RESOLVED:
                self._resolved.popitem(last=False)
        return group

    def _resolve(self, name: str) -> ModelGroup | None:
        if not _MODEL_ID.fullmatch(name) or {".", ".."} & set(name.split("/")):
            return None
        for candidate in wildcard_candidates(name):
            for regex, pattern, members in self._patterns:
                match = regex.match(candidate)
                if match is None:
                    continue
                deployments = [d for w in members if (d := wildcard_deployment(w, _fill(w.model, match)))]
                return ModelGroup(pattern, deployments) if deployments else None
        return None

    def listed(self, explicit: set[str]) -> list[str]:
        """What ``/v1/models`` shows for the wildcards: as in LiteLLM, the known models each one serves (the
        registry's, named ``provider/model``) in place of the pattern; the pattern itself when it serves none
        of them. A name an explicit group already has is not repeated."""
        names: list[str] = []
        for _, pattern, _ in self._patterns:
            served = []
            for model in all_defaults():
                provider, upstream = provider_of(model)
                name = f"{provider}/{upstream}"
                if provider and name not in explicit and self._serves(name, pattern, upstream):
                    served.append(name)
            names += served or [pattern]
        return list(dict.fromkeys(names))

    def _serves(self, name: str, pattern: str, upstream: str) -> bool:
        group = self._resolve(name)
        return group is not None and group.name == pattern and group.members[0].upstream_model == upstream


def _fill(model: str, match: re.Match[str]) -> str:
    """``model`` with each ``*`` replaced by what the pattern's wildcards matched, in order; the requested name
    itself when the pattern has more wildcards than ``model`` (LiteLLM's rule)."""
    parts = match.groups()
    if "*" not in model:
        return model
    if len(parts) > model.count("*"):
        return match.string
    for part in parts:
        model = model.replace("*", part, 1)
    return model


__all__ = ["MAX_RESOLVED", "Wildcards"]
