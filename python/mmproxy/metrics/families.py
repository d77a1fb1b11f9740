"""The series mmproxy exports and the two forms they travel in: Prometheus text (format 0.0.4) for a
scrape, and JSON snapshot entries between the workers of one server."""

from __future__ import annotations

from itertools import accumulate
from typing import NamedTuple

__all__ = ["CONTENT_TYPE", "FAMILIES", "LATENCY_MS", "OVERHEAD_MS", "TTFT_MS", "Series", "add", "exposition",
           "merge", "parse_snapshot"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Bucket bounds in milliseconds, the unit the record carries, so observing needs no division; the
# `le` labels are these divided by 1000, which prints as the same short decimal in seconds.
LATENCY_MS = (10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1e3, 2.5e3, 5e3, 10e3, 20e3, 30e3, 60e3, 120e3, 300e3)
TTFT_MS = (10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 750.0, 1e3, 1.5e3, 2e3, 3e3, 5e3, 10e3, 30e3)
OVERHEAD_MS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0)

Labels = tuple[str, ...]
Series = dict[Labels, float | list[float]]
"""One family's samples: label values -> a counter's value, or a histogram's per-bucket counts
(not cumulative, ``+Inf`` last) followed by its sum in milliseconds."""


class _Family(NamedTuple):
    name: str
    kind: str  # "counter" | "histogram"
    help: str
    labels: Labels
    bounds_ms: tuple[float, ...] = ()


_PAIR = ("model", "deployment")
FAMILIES: dict[str, _Family] = {
    f.name: f
    for f in (
        _Family("mmproxy_requests_total", "counter", "Client requests by requested model, answering deployment and "
                "HTTP status.", (*_PAIR, "status")),
        _Family("mmproxy_request_latency_seconds", "histogram", "Request received to last byte sent.", _PAIR,
                LATENCY_MS),
        _Family("mmproxy_time_to_first_token_seconds", "histogram", "Streams: request received to first event sent.",
                _PAIR, TTFT_MS),
        _Family("mmproxy_gateway_overhead_seconds", "histogram", "Time a request spent in the gateway itself.", (),
                OVERHEAD_MS),
        _Family("mmproxy_tokens_total", "counter", "Tokens by type; prompt includes cached and cache_write.",
                (*_PAIR, "type")),
        _Family("mmproxy_cost_usd_total", "counter", "Cost in USD of every attempt a request caused.",
                (*_PAIR, "tier")),
        _Family("mmproxy_saved_usd_total", "counter", "USD saved by gateway cache hits and provider cache reads.",
                ("cache",)),
        _Family("mmproxy_cache_requests_total", "counter", "Requests by gateway cache outcome.", ("cache",)),
        _Family("mmproxy_semantic_outcomes_total", "counter", "Verified semantic cache: explored requests by whether "
                "the cached answer would have been right; wrong / (right + wrong) is the observed error rate of "
                "reuse.", ("outcome",)),
        _Family("mmproxy_semantic_vetoes_total", "counter", "Verified semantic cache: cached prompts refused by the "
                "near-miss check (another number, unit, direction...) before any decision.", ()),
        _Family("mmproxy_retries_total", "counter", "Further attempts within a model group.", ("model",)),
        _Family("mmproxy_fallbacks_total", "counter", "Model groups tried after the requested one.", ("model",)),
        _Family("mmproxy_cooldowns_total", "counter", "Times a deployment entered cooldown.", ("deployment",)),
        # By team only: /metrics needs no key, so it names no key (nor its alias).
        _Family("mmproxy_budget_rejections_total", "counter", "Requests refused for an exhausted budget.",
                ("team",)),
        _Family("mmproxy_errors_total", "counter", "Requests that ended in an error, by error code.",
                ("model", "code")),
    )
}


def add(series: Series, labels: Labels, value: float | list[float]) -> None:
    """Sum ``value`` into ``series``; lists are replaced, never mutated, so no caller's list is aliased."""
    old = series.get(labels)
    if old is None:
        series[labels] = value
    elif isinstance(old, list):
        series[labels] = [a + b for a, b in zip(old, value, strict=True)]  # type: ignore[arg-type]
    else:
        series[labels] = old + value  # type: ignore[operator]


def merge(into: dict[str, Series], other: dict[str, Series]) -> None:
    for name, series in other.items():
        target = into[name]
        for labels, value in series.items():
            add(target, labels, value)


def parse_snapshot(raw: object) -> dict[str, Series]:
    """A peer's snapshot, checked entry by entry: raises ValueError/TypeError/KeyError rather than merge a
    partial or malformed file. The checks lean on C builtins; a scrape may parse several large files."""
    if not isinstance(raw, dict):
        raise TypeError("families is not an object")
    out: dict[str, Series] = {}
    for name, entries in raw.items():
        family = FAMILIES[name]
        width = len(family.labels)
        histogram_size = len(family.bounds_ms) + 2 if family.kind == "histogram" else 0
        series: Series = out.setdefault(name, {})
        for entry in entries:
            if type(entry) is not list or len(entry) != width + 1:
                raise ValueError(f"{name}: malformed entry")
            *labels, value = entry
            "".join(labels)  # TypeError unless every label is a string
            if histogram_size:
                if type(value) is not list or len(value) != histogram_size:
                    raise ValueError(f"{name}: malformed histogram")
                sum(value)  # TypeError unless every element is a number
            elif not isinstance(value, (int, float)):
                raise ValueError(f"{name}: malformed value")
            series[tuple(labels)] = value
    return out


def exposition(families: dict[str, Series]) -> bytes:
    """Every family, even an empty one, so a scrape always shows the full HELP/TYPE schema."""
    out: list[str] = []
    for name, family in FAMILIES.items():
        series = families[name]
        out.append(f"# HELP {name} {family.help}\n# TYPE {name} {family.kind}\n")
        les = [*(f'le="{b / 1000!r}"}} ' for b in family.bounds_ms), 'le="+Inf"} ']
        for labels in sorted(series):
            value = series[labels]
            pairs = ",".join([f'{key}="{_escape(v)}"' for key, v in zip(family.labels, labels, strict=True)])
            braces = f"{{{pairs}}}" if pairs else ""
            if not isinstance(value, list):
                out.append(f"{name}{braces} {value}\n")
                continue
            bucket = f"{name}_bucket{{{pairs}," if pairs else f"{name}_bucket{{"
            counts = list(accumulate(value[:-1]))
            out += [f"{bucket}{le}{n}\n" for le, n in zip(les, counts, strict=True)]
            out.append(f"{name}_sum{braces} {value[-1] / 1000!r}\n{name}_count{braces} {counts[-1]}\n")
    return "".join(out).encode()


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value
