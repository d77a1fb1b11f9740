"""Shipped defaults for well-known models: tier, strengths, context window and prices.

A deployment's ``model_info`` always wins; these defaults only fill what it leaves out, so a config that
names ``openai/gpt-4o-mini`` gets sensible routing tiers and cost figures without copying a price sheet.
The table lives in ``data/models.json`` inside the package and is read once; nothing is fetched at run time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from mmproxy.rules import TIERS

__all__ = ["MODES", "STRENGTHS", "TIERS", "ModelDefaults", "all_defaults", "defaults_for"]

MODES = ("chat", "embedding")
STRENGTHS = ("code", "math", "reasoning", "long-context", "vision", "extraction", "fast")
"""Closed vocabulary, so a routing rule that asks for "long-context" cannot silently miss a "long_context" entry."""

_VERSION_SUFFIX = re.compile(r"(-\d|-latest$|@|:)")
"""What may follow a known id for a prefix match: a date or version (``-2024-08-06``, ``-20250929``, ``-001``),
``-latest``, a Vertex ``@`` snapshot or an Ollama ``:tag``. A named variant such as ``o3-pro``, ``gpt-5-pro`` or
``gpt-4o-audio-preview`` is priced differently from its base, so it gets no defaults rather than wrong ones."""


@dataclass(frozen=True)
class ModelDefaults:
    """One model's shipped metadata. Prices are USD per token; None means unknown, never free."""

    model: str
    tier: str
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


def _entry(model: str, raw: dict[str, Any]) -> ModelDefaults:
    return ModelDefaults(
        model=model,
        tier=raw["tier"],
        strengths=tuple(raw.get("strengths", ())),
        mode=raw.get("mode", "chat"),
        max_input_tokens=raw.get("max_input_tokens"),
        max_output_tokens=raw.get("max_output_tokens"),
        input_cost_per_token=raw.get("input_cost_per_token"),
        output_cost_per_token=raw.get("output_cost_per_token"),
        cache_read_input_token_cost=raw.get("cache_read_input_token_cost"),
        cache_creation_input_token_cost=raw.get("cache_creation_input_token_cost"),
        source=raw.get("source", ""),
        batch_discount=raw.get("batch_discount"),
    )


@cache
def all_defaults() -> dict[str, ModelDefaults]:
    """Every shipped entry by model id; parsed on first use and cached, since the file never changes."""
    text = resources.files("mmproxy").joinpath("data/models.json").read_text(encoding="utf-8")
    models: dict[str, dict[str, Any]] = json.loads(text)["models"]
    return {name: _entry(name, raw) for name, raw in models.items()}


@cache
def _by_length() -> tuple[str, ...]:
    """Known ids, longest first, so the first prefix hit is the most specific (gpt-4o-mini before gpt-4o)."""
    return tuple(sorted(all_defaults(), key=len, reverse=True))


def defaults_for(model: str) -> ModelDefaults | None:
    """Shipped defaults for ``model`` (``provider/`` prefix allowed), or None when the model is not known.

    Exact id first; otherwise the longest known id that the name starts with and that is followed by a
    version suffix, so dated snapshots (``gpt-4o-2024-08-06``, ``claude-sonnet-4-5-20250929``) share the
    entry of their alias.
    """
    name = model.rsplit("/", 1)[-1].strip().lower()
    table = all_defaults()
    if name in table:
        return table[name]
    for known in _by_length():
        if name.startswith(known) and _VERSION_SUFFIX.match(name, len(known)):
            return table[known]
    return None
