"""Metrics microbenchmark: what ``Metrics.observe`` adds to every request, and what a scrape costs.

Why: ``observe`` runs on the request path (target ≤ 3 µs); ``render`` runs once per scrape, and with
``--workers N`` it also reads and merges N-1 peer snapshot files; ``write_snapshot`` runs on each
worker's event loop once per sharing interval. Figures are the best of several timeit repeats
(single thread, pinned to one core when possible). Prints only.

    python benches/bench_metrics.py
"""

from __future__ import annotations

import os
import tempfile
import timeit
from pathlib import Path

from mmproxy.metrics import Metrics
from mmproxy.spend.record import RequestRecord

PIN_CORE = 1
DEPLOYMENTS = 50
GROUPS = 10
WORKERS = 4


def realistic(i: int, stream: bool) -> RequestRecord:
    """An answered request as the handler fills it. Deployment j serves group j // 5 (tier by group);
    every 7th request fell back from the next group, so a deployment sees up to two requested models."""
    group = i % GROUPS
    deployment = group * (DEPLOYMENTS // GROUPS) + (i // GROUPS) % (DEPLOYMENTS // GROUPS)
    fell_back = i % 7 == 0
    rec = RequestRecord(f"req-{i}", "chat")
    rec.requested_model = f"group-{(group + fell_back) % GROUPS}"
    rec.model_group = f"group-{group}"
    rec.deployment = f"deployment-{deployment}"
    rec.provider = "openai"
    rec.tier = ("frontier", "workhorse", "economy")[group % 3]
    rec.key_alias = "team-a-key"
    rec.team_id = "team-a"
    rec.stream = stream
    rec.prompt_tokens = 1200 + i % 300
    rec.completion_tokens = 180 + i % 50
    rec.cached_tokens = 1024 if i % 2 else 0
    rec.cost_usd = 0.00123
    rec.saved_usd = 0.0004 if i % 2 else 0.0
    rec.cache = "miss"
    rec.latency_ms = 850.0 + i % 700
    rec.ttft_ms = 210.0 + i % 90 if stream else None
    rec.overhead_ms = 0.12
    rec.fallbacks = int(fell_back)
    return rec


def per_call_us(fn: object, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6  # type: ignore[arg-type]


def populated(shared: Path | None = None, worker: int = 0) -> Metrics:
    """Every deployment seen with successes, 429s and 500s, streams, fallbacks and cooldowns."""
    metrics = Metrics(shared, worker)
    for i in range(DEPLOYMENTS * 40):
        rec = realistic(i, stream=i % 2 == 0)
        rec.status = (200, 200, 429, 200, 500, 200)[(i // GROUPS) % 6]
        rec.error_code = {429: "rate_limited", 500: "upstream_error"}.get(rec.status)
        rec.retries = int(rec.status != 200)
        metrics.observe(rec)
    for i in range(DEPLOYMENTS):
        metrics.cooldown(f"deployment-{i}")
    return metrics


def main() -> None:
    if hasattr(os, "sched_setaffinity") and PIN_CORE in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {PIN_CORE})

    metrics = populated()
    plain, stream = realistic(7, stream=False), realistic(8, stream=True)
    rejected = RequestRecord("req-x", "chat")
    rejected.requested_model, rejected.status, rejected.error_code = "no-such-model", 404, "model_not_found"
    metrics.observe(rejected)
    print(f"observe, non-streaming:            {per_call_us(lambda: metrics.observe(plain), 200_000):6.2f} µs")
    print(f"observe, streaming:                {per_call_us(lambda: metrics.observe(stream), 200_000):6.2f} µs")
    print(f"observe, rejected before routing:  {per_call_us(lambda: metrics.observe(rejected), 200_000):6.2f} µs")

    text = metrics.render()
    lines = text.count(b"\n")
    print(f"render, {DEPLOYMENTS} deployments, 1 worker:    {per_call_us(metrics.render, 50) / 1e3:6.2f} ms"
          f"  ({len(text) / 1024:.0f} KiB, {lines} lines)")
    with tempfile.TemporaryDirectory() as tmp:
        shared = Path(tmp)
        workers = [populated(shared, w) for w in range(WORKERS)]
        for w, peer in enumerate(workers):
            peer.write_snapshot(shared / f"worker-{w}.json")
        own = workers[0]
        print(f"render, {DEPLOYMENTS} deployments, {WORKERS} workers:   {per_call_us(own.render, 30) / 1e3:6.2f} ms"
              f"  (merges {WORKERS - 1} peer files)")
        target = shared / "worker-0.json"
        write_ms = per_call_us(lambda: own.write_snapshot(target), 200) / 1e3
        print(f"write_snapshot, {DEPLOYMENTS} deployments:     {write_ms:6.2f} ms"
              f"  ({target.stat().st_size / 1024:.0f} KiB, once per interval per worker)")


if __name__ == "__main__":
    main()
