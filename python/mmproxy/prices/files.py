"""Price files: mmproxy's own, and LiteLLM's ``model_prices_and_context_window.json`` checked and converted into it.

mmproxy's file is ``{"format": "mmproxy-prices/1", "source": ..., "read": "YYYY-MM-DD", "models": {id: entry}}``.
An entry keeps only what the gateway uses: ``mode``, ``max_input_tokens``, ``max_output_tokens``, the four
per-token prices under LiteLLM's names, ``batch_discount``, ``strengths``, ``tier`` and ``source`` (where the
figure was read when it is not the file's ``source``). Ids are LiteLLM's: bare for OpenAI and Anthropic models,
``provider/model`` otherwise. A field that is absent is unknown, never zero.

LiteLLM's file is read leniently where its own data is loose (a window of 0 means unknown) and strictly where a
wrong type would price requests wrongly; every problem is named with its entry and field, all at once.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmproxy.registry import MODES, STRENGTHS, TIERS

FORMAT = "mmproxy-prices/1"
PRICES = ("input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost",
          "cache_creation_input_token_cost")
WINDOWS = ("max_input_tokens", "max_output_tokens")
_ENTRY_KEYS = frozenset({"mode", "tier", "strengths", "source", "batch_discount", *PRICES, *WINDOWS})
_BATCH_PRICES = (("input_cost_per_token", "input_cost_per_token_batches"),
                 ("output_cost_per_token", "output_cost_per_token_batches"))
_STRENGTH_FLAGS = (("supports_vision", "vision"), ("supports_reasoning", "reasoning"))
_PER_MILLION_SUSPECT = 1e-3  # $1000 per million tokens: above it a per-token figure is likely a per-1M one
_SHOWN = 8  # problems a one-line message names before counting the rest


class PriceFileError(ValueError):
    """A price file that cannot be used; ``problems`` names each entry and field at fault."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        super().__init__("; ".join(problems[:_SHOWN]) + more)


@dataclass
class PriceDocument:
    """A checked price file in mmproxy's shape, with what reading it noticed."""

    models: dict[str, dict[str, Any]]
    source: str
    read: str | None = None
    skipped: Counter[str] = field(default_factory=Counter)  # LiteLLM entries left out, by mode
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "source": self.source, "read": self.read, "models": self.models}


@dataclass
class _Reader:
    """Field checks shared by both shapes; each problem is kept with its entry and field."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def fail(self, name: str, key: str, message: str) -> None:
        self.problems.append(f"entry {name!r}: {key}: {message}")

    def price(self, name: str, raw: Mapping[str, Any], key: str) -> float | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            self.fail(name, key, f"must be a number of USD per token, 0 or more (got {value!r})")
            return None
        if value >= _PER_MILLION_SUSPECT:
            self.warnings.append(f"entry {name!r}: {key}: {value} is ${value * 1e6:,.0f} per million tokens; "
                                 "prices are USD per token (a per-1M price / 1e6)")
        return float(value)

    def window(self, name: str, raw: Mapping[str, Any], key: str) -> int | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(name, key, f"must be a whole number of tokens (got {value!r})")
            return None
        return value or None  # LiteLLM writes 0 for a window it does not know

    def text(self, name: str, raw: Mapping[str, Any], key: str) -> str | None:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            self.fail(name, key, f"must be a string (got {value!r})")
            return None
        return value

    def flag(self, name: str, raw: Mapping[str, Any], key: str) -> bool:
        value = raw.get(key, False)
        if not isinstance(value, bool):
            self.fail(name, key, f"must be true or false (got {value!r})")
            return False
        return value

    def common(self, name: str, raw: Mapping[str, Any], mode: str) -> dict[str, Any]:
        """The fields both shapes spell alike, checked, without the unknown ones."""
        entry: dict[str, Any] = {"mode": mode}
        for key in WINDOWS:
            entry[key] = self.window(name, raw, key)
        for key in PRICES:
            entry[key] = self.price(name, raw, key)
        entry["source"] = self.text(name, raw, "source")
        return entry

    def done(self) -> None:
        if self.problems:
            raise PriceFileError(self.problems)


def _compact(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if value is not None and value != []}


def from_litellm(raw: Any, source: str, read: str | None = None,
                 keep: Callable[[str, Mapping[str, Any]], bool] | None = None) -> PriceDocument:
    """LiteLLM's price mapping as an mmproxy price document; only chat and embedding entries (what the gateway
    serves) that ``keep`` accepts, and only those that say a price or a window. Raises PriceFileError."""
    if not isinstance(raw, dict):
        raise PriceFileError(["the top level must be an object of model ids to entries"])
    reader = _Reader()
    document = PriceDocument({}, source, read, warnings=reader.warnings)
    for name, spec in raw.items():
        if name == "sample_spec":  # LiteLLM's field documentation, not a model
            continue
        if not isinstance(spec, dict):
            reader.fail(name, "(entry)", "must be an object of fields")
            continue
        mode = reader.text(name, spec, "mode") or "chat"
        if mode not in MODES:
            document.skipped[mode] += 1
            continue
        if keep is not None and not keep(name, spec):
            continue
        entry = reader.common(name, spec, mode)
        entry["batch_discount"] = _batch_discount(reader, name, spec, entry)
        entry["strengths"] = [tag for flag, tag in _STRENGTH_FLAGS if reader.flag(name, spec, flag)]
        if any(entry[key] is not None for key in (*PRICES, *WINDOWS)):
            document.models[name] = _compact(entry)
    reader.done()
    return document


def _batch_discount(reader: _Reader, name: str, spec: Mapping[str, Any], entry: dict[str, Any]) -> float | None:
    """The fraction taken off for batch requests, when LiteLLM's batch prices give one: the same for input and
    output (a discount the gateway can apply to both), below the standard prices."""
    fractions = set()
    for standard_key, batch_key in _BATCH_PRICES:
        batch, standard = reader.price(name, spec, batch_key), entry[standard_key]
        if batch is None or not standard:
            return None
        fractions.add(round(1 - batch / standard, 4))
    if len(fractions) != 1:
        return None
    fraction = fractions.pop()
    return fraction if 0 < fraction < 1 else None


def from_mmproxy(raw: Mapping[str, Any], source: str) -> PriceDocument:
    """An mmproxy price document, checked field by field (it may have been edited by hand)."""
    models = raw.get("models")
    if not isinstance(models, dict):
        raise PriceFileError(["models: must be an object of model ids to entries"])
    reader = _Reader()
    document = PriceDocument({}, str(raw.get("source") or source), raw.get("read"), warnings=reader.warnings)
    for name, spec in models.items():
        if not isinstance(spec, dict):
            reader.fail(name, "(entry)", "must be an object of fields")
            continue
        for key in sorted(set(spec) - _ENTRY_KEYS):
            reader.fail(name, key, f"unknown field; known: {', '.join(sorted(_ENTRY_KEYS))}")
        mode = reader.text(name, spec, "mode") or "chat"
        if mode not in MODES:
            reader.fail(name, "mode", f"must be one of {', '.join(MODES)}")
        entry = reader.common(name, spec, mode)
        tier = spec.get("tier")
        if tier is not None and tier not in TIERS:
            reader.fail(name, "tier", f"must be one of {', '.join(TIERS)}")
        strengths = spec.get("strengths", [])
        if not isinstance(strengths, list) or not set(strengths) <= set(STRENGTHS):
            reader.fail(name, "strengths", f"must be a list of {', '.join(STRENGTHS)}")
        discount = spec.get("batch_discount")
        if discount is not None and (isinstance(discount, bool) or not isinstance(discount, (int, float))
                                     or not 0 < discount < 1):
            reader.fail(name, "batch_discount", "must be the fraction taken off the price, between 0 and 1")
        document.models[name] = _compact({**entry, "tier": tier, "strengths": strengths, "batch_discount": discount})
    reader.done()
    return document


def read(path: str | Path) -> PriceDocument:
    """A price file in either shape (mmproxy's carries ``"format"``), checked. Raises PriceFileError, or OSError
    when the file cannot be read."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PriceFileError([f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]) from None
    if isinstance(raw, dict) and "format" in raw:
        if raw["format"] != FORMAT:
            raise PriceFileError([f"format: {raw['format']!r} is not {FORMAT!r}"])
        return from_mmproxy(raw, Path(path).name)
    return from_litellm(raw, Path(path).name)


def dumps(document: PriceDocument) -> str:
    """The file's text: compact, one model a line, in id order, so a regenerated file diffs by model."""
    header = json.dumps({key: value for key, value in document.as_json().items() if key != "models"})[:-1]
    lines = [f"{json.dumps(name)}:{json.dumps(entry, separators=(',', ':'))}"
             for name, entry in sorted(document.models.items())]
    return header + ',"models":{\n' + ",\n".join(lines) + "\n}}\n"
