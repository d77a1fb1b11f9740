"""The semantic cache's Redis feed: what sharing an entry costs, and how fast a new instance rebuilds its index.

Why: with a Redis cache every instance indexes what the others add (mmproxy.cache.semantic_feed). Publishing is one
XADD per new entry, off the request path (the cache keeps answers after the client has its own); a new instance
reads the whole stream and indexes it in a worker thread before its semantic layer is warm. Entries are
384-dimensional (the local embedder's size), spread over 8 scopes.

    python benches/bench_semantic_feed.py [--entries 20000] [--no-update-results]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cache import DIM, start_redis
from run import machine, write_results_section

from mmproxy.cache.semantic import SemanticEntry, SemanticIndexes
from mmproxy.cache.semantic_feed import SemanticFeed

SECTION = "## Semantic cache feed"
SCOPES = 8
PIN_CORE = 1


async def measure(url: str, n: int) -> tuple[float, float, float, int]:
    """(publish CPU µs per entry, publish wall µs per entry, rebuild seconds, entries indexed)."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    expires = time.time() + 3600
    writer = SemanticFeed(url, "bench", capacity=n * 2)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(n):
        entry = SemanticEntry(f"question number {i} about something", os.urandom(16), os.urandom(16), expires)
        await writer.publish(f"gpt-4o\0scope-{i % SCOPES}", vectors[i], entry)
    cpu, wall = (time.process_time() - cpu0) / n * 1e6, (time.perf_counter() - wall0) / n * 1e6
    await writer.close()

    indexes = SemanticIndexes(DIM, n)
    indexed = 0
    done = asyncio.Event()

    async def add(entries: list[tuple[str, np.ndarray, SemanticEntry]]) -> None:
        nonlocal indexed
        by_scope: dict[str, list[tuple[np.ndarray, SemanticEntry]]] = {}
        for scope, vector, entry in entries:
            by_scope.setdefault(scope, []).append((vector, entry))
        for scope, items in by_scope.items():  # as ResponseCache does: a worker thread per read
            index = indexes.get(scope)
            await asyncio.to_thread(lambda index=index, items=items: [index.add(v, e) for v, e in items])
        indexed += len(entries)
        if indexed >= n:
            done.set()

    reader = SemanticFeed(url, "bench", capacity=n * 2)
    t0 = time.perf_counter()
    task = asyncio.ensure_future(reader.follow(add, interval=0.01))
    await asyncio.wait_for(done.wait(), timeout=600)
    rebuild = time.perf_counter() - t0
    task.cancel()
    await reader.close()
    return cpu, wall, rebuild, indexed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--update-results", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    host = machine()
    if hasattr(os, "sched_setaffinity") and PIN_CORE in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {PIN_CORE})
    proc, url = start_redis()
    try:
        cpu, wall, rebuild, indexed = uvloop.run(measure(url, args.entries))
    finally:
        proc.terminate()
        proc.wait(10)
    command = "python benches/bench_semantic_feed.py" + (f" --entries {args.entries}" if args.entries != 20_000 else "")
    body = "\n".join([
        f"Command: `{command}`",
        "",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {host}. This process on core "
        f"{PIN_CORE}, Redis on the other core, loopback; {args.entries:,} entries of dim {DIM} over {SCOPES} scopes.",
        "",
        "| figure | measured |",
        "| --- | ---: |",
        f"| publish one entry (XADD with its float32 vector), CPU / wall per entry | {cpu:.1f} µs / {wall:.1f} µs |",
        f"| a new instance reads the whole stream and indexes it | {rebuild:.2f} s for {indexed:,} entries "
        f"({indexed / rebuild:,.0f} entries/s) |",
    ])
    print(body)
    if args.update_results:
        write_results_section(body, section=SECTION)


if __name__ == "__main__":
    main()
