"""What the dashboard's live request log costs a request: nothing watching, and one or three pages watching.

Per finished request the gateway calls ``LiveLog.publish``; with a page open it builds the access-log fields
once and appends them to each watcher's queue, and every quarter second the page's feed serialises what queued
up. This times both halves in process on realistic records (the same fields a gateway fills), per request:

    python benches/bench_live_log.py [--requests 200000]

At 1,000 requests per second the figure in µs is also the thousandths of one core the live log takes.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson

from mmproxy.pipeline.live_log import LiveLog, Watcher
from mmproxy.spend.record import RequestRecord


def _record(i: int) -> RequestRecord:
    record = RequestRecord(f"req-{i:012x}", "chat")
    record.status, record.requested_model, record.model_group = 200, "gpt-4o-mini", "gpt-4o-mini"
    record.deployment, record.latency_ms, record.ttft_ms, record.overhead_ms = "dep-46d2b901944f", 812.5, 211.0, 0.31
    record.prompt_tokens, record.completion_tokens, record.cost_usd, record.key_alias = 182, 96, 0.0000849, "svc-a"
    record.key_hash = "ab" * 32
    return record


def _per_request_us(watchers: int, records: list[RequestRecord]) -> tuple[float, float]:
    """(publish µs, feed serialisation µs) per request with ``watchers`` pages open."""
    live = LiveLog()
    pages = [Watcher(None) for _ in range(watchers)]
    live.watchers.update(pages)
    publish = feed = 0
    batch = 250  # a quarter second's requests at 1,000 per second
    for start in range(0, len(records), batch):
        began = time.perf_counter_ns()
        for record in records[start:start + batch]:
            live.publish(record)
        publish += time.perf_counter_ns() - began
        began = time.perf_counter_ns()
        for page in pages:
            lines, dropped = page.take()
            orjson.dumps({"lines": lines, "dropped": dropped})
        feed += time.perf_counter_ns() - began
    return publish / len(records) / 1000, feed / len(records) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args()
    records = [_record(i) for i in range(args.requests)]

    async def run() -> None:  # Watcher's event needs a running loop on Python 3.10
        print("| pages watching | publish, µs per request | feed, µs per request | total |")
        print("|---|---|---|---|")
        for watchers in (0, 1, 3):
            best = min((_per_request_us(watchers, records) for _ in range(3)), key=sum)
            print(f"| {watchers} | {best[0]:.2f} | {best[1]:.2f} | {sum(best):.2f} |")

    asyncio.run(run())


if __name__ == "__main__":
    main()
