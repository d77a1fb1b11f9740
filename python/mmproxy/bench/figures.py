"""The figures of one measured load: throughput, error counts by class and percentile summaries.

Kept apart from the report so the JSON output, the tables and the plots all read the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmproxy.bench.loadgen import Result, percentile

QUANTILES = (50, 90, 99)
# name in the figures -> label in the tables; ms unless the label says otherwise
DISTRIBUTIONS = {
    "latency_ms": "latency ms",
    "ttft_ms": "TTFT ms",
    "itl_ms": "ITL ms",
    "tokens_per_s": "output tok/s per request",
    "overhead_ms": "mmproxy overhead ms",
    "upstream_ms": "upstream ms (latency - overhead)",
}


def distribution(values: list[float]) -> dict[str, float] | None:
    """p50/p90/p99/max/mean and the count of ``values`` (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    out = {f"p{q}": percentile(ordered, q) for q in QUANTILES}
    out |= {"max": ordered[-1], "mean": sum(ordered) / len(ordered), "n": len(ordered)}
    return out


@dataclass(frozen=True)
class Load:
    """What one step asked for: a fixed concurrency, or a request rate (``concurrency`` is then the in-flight cap)."""

    concurrency: int
    rate: float | None = None

    @property
    def label(self) -> str:
        return f"c={self.concurrency}" if self.rate is None else f"{self.rate:g} req/s"

    def as_dict(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency} if self.rate is None else {"rate": self.rate,
                                                                              "max_in_flight": self.concurrency}


def figures(result: Result) -> dict[str, Any]:
    """Everything measured in ``result``'s window, in plain JSON types (its ``summary()`` plus the details)."""
    summary = result.summary()
    elapsed = result.elapsed_s
    return {
        "requests": summary["requests"],
        "errors": summary["errors"],
        "errors_by_class": dict(sorted(summary["error_kinds"].items())),
        "warmup_errors": summary["warmup_errors"],
        "error_sample": summary.get("error_sample"),
        "sent_total": result.sent,
        "dropped": result.dropped,
        "unfinished": result.unfinished,
        "elapsed_s": elapsed,
        "req_s": summary["req_s"],
        "output_tokens": result.output_tokens,
        "output_tokens_per_s": result.output_tokens / elapsed if elapsed > 0 else 0.0,
        # The generator's own CPU: when it nears a whole core, the client, not the target, is the limit.
        "client_cpu_us_per_req": summary["loadgen_cpu_us_per_req"],
        "latency_ms": distribution([t * 1e3 for t in result.latencies]),
        "ttft_ms": distribution([t * 1e3 for t in result.ttfts]),
        "itl_ms": distribution([t * 1e3 for t in result.itls]),
        "tokens_per_s": distribution(result.token_rates),
        "overhead_ms": distribution(result.overheads_ms),
        "upstream_ms": distribution(result.upstream_ms),
    }
