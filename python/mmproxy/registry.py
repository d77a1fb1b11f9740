"""Shipped defaults for known models: tier, strengths, context window and prices, per provider where they differ.

A deployment's ``model_info`` always wins; these defaults only fill what it leaves out, so a config that
names ``openai/gpt-4o-mini`` gets sensible routing tiers and cost figures without copying a price sheet.
Two files inside the package hold them, read once; nothing is fetched at run time:

* ``data/models.json``: hand-curated entries (tier, strengths, prices, the pricing page and month read), keyed
  by the bare model id. They win over generated ones.
* ``data/prices.json``: generated from LiteLLM's price list by ``python -m mmproxy.prices.update``, keyed as
  LiteLLM keys them: bare for OpenAI and Anthropic, ``host/model`` for every other provider.

``general_settings.price_file`` lays an operator's file over both (``ModelTable.overlaid``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any

import orjson

from mmproxy.rules import TIERS

__all__ = ["MODES", "OWNERS", "STRENGTHS", "TIERS", "ModelDefaults", "ModelTable", "all_defaults", "defaults_for",
           "derive_tier", "entries", "shipped"]

MODES = ("chat", "embedding")
STRENGTHS = ("code", "math", "reasoning", "long-context", "vision", "extraction", "fast")
"""Closed vocabulary, so a routing rule that asks for "long-context" cannot silently miss a "long_context" entry."""

OWNERS = ("openai", "anthropic", "gemini", "mistral", "deepseek", "xai")
"""Providers that make the models they serve. Their ``owner/model`` entries are filed under the bare id, so
``gemini/gemini-2.5-pro`` and ``gemini-2.5-pro`` are one entry and a bare id finds its maker's price."""

_HOST_ALIASES = {"ollama_chat": "ollama"}
"""LiteLLM prefixes that reach the same host as another: their prices are that host's."""

_VERSION_SUFFIX = re.compile(r"(?=-\d|-latest$|@|:)")
"""Where a known id may end inside a longer name for a prefix match: before a date or version (``-2024-08-06``,
``-20250929``, ``-001``), ``-latest``, a Vertex ``@`` snapshot or an Ollama ``:tag``. A named variant such as
``o3-pro``, ``gpt-5-pro`` or ``gpt-4o-audio-preview`` is priced differently from its base, so it gets no defaults
rather than wrong ones."""

_ECONOMY_BELOW = 2e-6
_FRONTIER_FROM = 20e-6


def derive_tier(output_cost_per_token: float | None) -> str | None:
    """The routing tier of an entry that names none, from its output price per token (what dominates a chat
    bill): under $2 per million tokens economy, $20 or more frontier, workhorse between. It agrees with 28 of
    the 37 hand-tiered chat models in ``models.json``; None when the price is unknown."""
    if output_cost_per_token is None:
        return None
    if output_cost_per_token < _ECONOMY_BELOW:
        return "economy"
    return "frontier" if output_cost_per_token >= _FRONTIER_FROM else "workhorse"


@dataclass(frozen=True)
class ModelDefaults:
    """One model's shipped metadata. Prices are USD per token; None means unknown, never free."""

    model: str
    tier: str | None
    strengths: tuple[str, ...]
    mode: str
    max_input_tokens: int | None
    max_output_tokens: int | None
    input_cost_per_token: float | None
    output_cost_per_token: float | None
    cache_read_input_token_cost: float | None
    cache_creation_input_token_cost: float | None
    source: str
    batch_discount: float | None = None  # fraction off the prices above for batch requests (0.5: half price)
    tier_derived: bool = False  # the tier comes from ``derive_tier``, not from a curated entry


def _entry(model: str, raw: Mapping[str, Any], source: str) -> ModelDefaults:
    tier = raw.get("tier")
    return ModelDefaults(
        model=model,
        tier=tier if tier is not None else derive_tier(raw.get("output_cost_per_token")),
        strengths=tuple(raw.get("strengths", ())),
        mode=raw.get("mode", "chat"),
        max_input_tokens=raw.get("max_input_tokens"),
        max_output_tokens=raw.get("max_output_tokens"),
        input_cost_per_token=raw.get("input_cost_per_token"),
        output_cost_per_token=raw.get("output_cost_per_token"),
        cache_read_input_token_cost=raw.get("cache_read_input_token_cost"),
        cache_creation_input_token_cost=raw.get("cache_creation_input_token_cost"),
        source=source,
        batch_discount=raw.get("batch_discount"),
        tier_derived=tier is None,
    )


def entries(document: Mapping[str, Any]) -> dict[str, ModelDefaults]:
    """The entries of a price document (``{"models": {...}}``) by lower-cased id, owners' prefixes dropped. An
    entry's ``source`` is its own or else the document's, followed by the document's ``read`` date when it has one."""
    default = document.get("source") or ""
    read = document.get("read")
    out: dict[str, ModelDefaults] = {}
    for key, raw in document["models"].items():
        filed = _filed_under(key.lower())
        source = raw.get("source") or default
        out[filed] = _entry(filed, raw, f"{source}, read {read}" if read else source)
    return out


def _filed_under(key: str) -> str:
    host, _, rest = key.partition("/")
    return rest if rest and host in OWNERS else key


class ModelTable:
    """Entries indexed for lookup: bare ids in one dict (the curated ones also in their own), each host's
    ``host/…`` ids in one dict per host."""

    def __init__(self, by_id: Mapping[str, ModelDefaults]) -> None:
        self._all = dict(by_id)
        self._bare: dict[str, ModelDefaults] = {}
        self._hosts: dict[str, dict[str, ModelDefaults]] = {}
        for key, entry in self._all.items():
            host, _, rest = key.partition("/")
            if rest:
                self._hosts.setdefault(host, {})[rest] = entry
            else:
                self._bare[key] = entry
        self._curated = {key: entry for key, entry in self._bare.items() if not entry.tier_derived}

    def overlaid(self, layers: Iterable[Mapping[str, ModelDefaults]]) -> ModelTable:
        """A table with each layer's entries over this one's (later layers win, id by id). An entry that names no
        tier of its own keeps the curated tier and strengths of the entry it replaces: they describe the model."""
        merged = dict(self._all)
        for layer in layers:
            for key, entry in layer.items():
                below = merged.get(key)
                merged[key] = _described_by(entry, below)
        return ModelTable(merged)

    def all(self) -> dict[str, ModelDefaults]:
        return self._all

    def lookup(self, model: str) -> ModelDefaults | None:
        """Defaults for a LiteLLM model string (``gpt-4o``, ``groq/llama-3.1-8b-instant``, ``azure/gpt-4o``), or
        None when the model is not known.

        A host's own entry comes first, then the bare id's (its maker's price); within each, the exact id, then the
        longest known id the name starts with that is followed by a version suffix, so a dated snapshot
        (``claude-sonnet-4-5-20250929``) the table does not list shares the entry of its alias. A generated entry
        takes its tier and strengths from the model's curated entry: they describe the model, not its host or
        snapshot.
        """
        name = model.strip().lower()
        host, _, rest = name.partition("/")
        host = _HOST_ALIASES.get(host, host)
        model_id = rest or name
        last = model_id.rsplit("/", 1)[-1]
        found = _find(self._hosts[host], rest) if rest and host in self._hosts else None
        found = found or _find(self._bare, model_id) or _find(self._bare, last)
        if found is None or not found.tier_derived:
            return found
        return _described_by(found, _find(self._curated, last))


def _described_by(entry: ModelDefaults, curated: ModelDefaults | None) -> ModelDefaults:
    """``entry`` with the tier and strengths of the model's curated entry, when it names no tier of its own."""
    if not entry.tier_derived or curated is None or curated.tier_derived:
        return entry
    return replace(entry, tier=curated.tier, strengths=curated.strengths, tier_derived=False)


def _find(table: Mapping[str, ModelDefaults], name: str) -> ModelDefaults | None:
    if name in table:
        return table[name]
    for match in reversed(list(_VERSION_SUFFIX.finditer(name))):
        known = table.get(name[:match.start()])
        if known is not None:
            return known
    return None


def _package_json(name: str) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(resources.files("mmproxy").joinpath(f"data/{name}").read_bytes())
    return document


@cache
def shipped() -> ModelTable:
    """The shipped table: generated entries with the curated ones over them; parsed on first use and cached."""
    generated = entries(_package_json("prices.json"))
    return ModelTable(generated).overlaid([entries(_package_json("models.json"))])


def all_defaults() -> dict[str, ModelDefaults]:
    """Every shipped entry by id (``host/model`` for a host's own price)."""
    return shipped().all()


def defaults_for(model: str) -> ModelDefaults | None:
    """Shipped defaults for the LiteLLM model string ``model``, or None when the model is not known."""
    return shipped().lookup(model)
