"""Spend-ledger benchmark: the cost of ``Ledger.record`` on the request path and the write throughput behind it.

Why: every client request hands one record to the ledger, so ``record`` must cost next to nothing, and the
writer must keep up with the gateway's request rate with room to spare (a slower writer only grows the queue
until it drops rows). Three figures per backend:

- ``record``: µs per call, timeit over a queue that never fills; with the crash spool, in an event loop where 1
  or 64 requests finish per turn (the rows of a turn share one ``write``); and the drop path when the queue is
  full;
- ``write_requests``: rows/s of the storage layer alone, in the ledger's batches of 500 rows over 10 keys;
- ``ledger``: rows/s from the first ``record`` to the last row committed, with the background flusher, and the
  gateway process's CPU time per row (the database server's own CPU is not counted).

    python benches/bench_ledger.py                                      # SQLite only
    python benches/bench_ledger.py --postgres-url postgresql://postgres@127.0.0.1:5432/bench
    python benches/bench_ledger.py --rows 20000                         # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
import timeit
from pathlib import Path

from mmproxy.db import Database, open_database
from mmproxy.db.sqlite import SQLiteDatabase
from mmproxy.spend.ledger import Ledger
from mmproxy.spend.record import RequestRecord
from mmproxy.spend.spool import Spool

BATCH = 500
KEYS = [f"{i:064x}" for i in range(10)]


def make_records(count: int, prefix: str) -> list[RequestRecord]:
    records = []
    now = time.time()
    for i in range(count):
        rec = RequestRecord(f"{prefix}-{i}", "chat")
        rec.started = now + i * 1e-4
        rec.key_hash = KEYS[i % len(KEYS)]
        rec.key_alias = f"key-{i % len(KEYS)}"
        rec.team_id = "team-a"
        rec.requested_model = rec.model_group = "gpt-4o"
        rec.deployment, rec.provider, rec.tier = "frontier-1", "openai", "frontier"
        rec.prompt_tokens, rec.completion_tokens, rec.cached_tokens = 1200, 300, 1000
        rec.cost_usd, rec.saved_usd = 0.0042, 0.0011
        rec.cache = "miss"
        rec.latency_ms, rec.overhead_ms = 812.5, 0.4
        records.append(rec)
    return records


def bench_record(calls: int, repeat: int = 5) -> dict[str, float]:
    rec = make_records(1, "timeit")[0]
    idle = SQLiteDatabase(":memory:")  # never started: record() does no I/O
    queued = []
    for _ in range(repeat):  # a fresh ledger each round, so no round meets a full queue
        ledger = Ledger(idle, max_queue=calls + 1, batch_size=calls + 1)
        queued.append(timeit.timeit(lambda: ledger.record(rec), number=calls) / calls)  # noqa: B023
    spooled: dict[int, list[float]] = {1: [], 64: []}

    async def spooling(ledger: Ledger, per_turn: int) -> float:
        """``record`` with the spool inside an event loop, ``per_turn`` requests finishing per turn of the loop
        (their rows share one write at its end): seconds per call, the writes included."""
        began = time.perf_counter()
        for _ in range(calls // per_turn):
            for _ in range(per_turn):
                ledger.record(rec)
            await asyncio.sleep(0)
        return (time.perf_counter() - began) / (calls // per_turn * per_turn)

    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(repeat):
            for per_turn, times in spooled.items():
                spool = Spool(Path(tmp), f"bench-{round_}-{per_turn}")
                spool.recover()
                ledger = Ledger(idle, spool, max_queue=calls + 1, batch_size=calls + 1)
                times.append(asyncio.run(spooling(ledger, per_turn)))
                spool.close()
    full = Ledger(idle, max_queue=1, batch_size=2)
    full.record(rec)
    logging.getLogger("mmproxy.spend").disabled = True  # the drop path's rate-limited error line
    dropped = min(timeit.repeat(lambda: full.record(rec), number=calls, repeat=repeat)) / calls
    logging.getLogger("mmproxy.spend").disabled = False
    return {"record_us": min(queued) * 1e6, "record_spooled_1_per_turn_us": min(spooled[1]) * 1e6,
            "record_spooled_64_per_turn_us": min(spooled[64]) * 1e6, "record_when_full_us": dropped * 1e6}


async def bench_writes(db: Database, rows: int) -> float:
    batches = []
    for b, start in enumerate(range(0, rows, BATCH)):
        records = make_records(min(BATCH, rows - start), f"direct-{b}")
        spend: dict[str, float] = {}
        for rec in records:
            spend[rec.key_hash] = spend.get(rec.key_hash, 0.0) + rec.cost_usd  # type: ignore[index]
        batches.append(([rec.row() for rec in records], spend))
    began = time.perf_counter()
    for batch_rows, spend in batches:
        await db.write_requests(batch_rows, spend)
    return rows / (time.perf_counter() - began)


async def bench_ledger(db: Database, rows: int) -> tuple[float, float]:
    records = make_records(rows, "ledger")
    ledger = Ledger(db, max_queue=rows + 1, batch_size=BATCH)
    await ledger.start()
    began, cpu = time.perf_counter(), time.process_time()
    for start in range(0, rows, BATCH):  # arrive in slices so the flusher runs alongside, as under load
        for rec in records[start:start + BATCH]:
            ledger.record(rec)
        await asyncio.sleep(0)
    await ledger.close()
    elapsed, cpu_used = time.perf_counter() - began, time.process_time() - cpu
    assert ledger.written == rows, (ledger.written, rows)
    return rows / elapsed, cpu_used / rows * 1e6


async def bench_backend(url: str, rows: int) -> dict[str, float]:
    db = open_database(url, Path("unused.db"))
    await db.start()
    try:
        direct = await bench_writes(db, rows)
        through_ledger, cpu_us = await bench_ledger(db, rows)
    finally:
        await db.close()
    return {"write_requests_rows_s": direct, "ledger_rows_s": through_ledger, "ledger_cpu_us_per_row": cpu_us}


async def reset_postgres(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TABLE IF EXISTS mmproxy_spend_logs, mmproxy_feedback, mmproxy_keys, "
                           "mmproxy_schema_version")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=1_000_000, help="timeit calls of Ledger.record")
    parser.add_argument("--postgres-url", help="an empty database to use (its mmproxy tables are dropped first)")
    args = parser.parse_args()

    print(f"Ledger.record: {bench_record(args.calls)}")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"sqlite ({args.rows} rows): {asyncio.run(bench_backend(f'sqlite://{tmp}/bench.db', args.rows))}")
    if args.postgres_url:
        asyncio.run(reset_postgres(args.postgres_url))
        print(f"postgres ({args.rows} rows): {asyncio.run(bench_backend(args.postgres_url, args.rows))}")


if __name__ == "__main__":
    main()
