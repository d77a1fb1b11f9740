"""Redis client benchmark: redis-py's asyncio client against mmproxy's own (mmproxy.redis_client), in one run.

Why: the gateway talks to Redis on the request path (the rpm/tpm reservation before a limited call, the
shared response cache), and its whole CPU budget per request is ~85 µs. What matters is the gateway's CPU
per command, so each figure is this process's CPU time (and wall time) per awaited call, from one asyncio
task on uvloop pinned to one core, against a throwaway ``redis-server`` on the other core over loopback.
Rounds interleave the two clients; figures are the median of the rounds' means. The concurrent row runs
64 tasks at once (redis-py then uses a pool of connections; mmproxy's client pipelines them on one).

    python benches/bench_redis.py           # full run, prints the section
    python benches/bench_redis.py --quick   # a few seconds, prints the section
    python benches/bench_redis.py --write   # full run, and rewrites the "## Redis client" section of RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shlex
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis
import uvloop
from redis import asyncio as aioredis
from redis.utils import HIREDIS_AVAILABLE

from mmproxy.redis_client import RedisClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cache import PIN_CORE, start_redis
from run import RESULTS_MD, machine, write_results_section

SECTION = "## Redis client"
VALUE = os.urandom(512).hex().encode()  # a 1 KB cached answer
CONCURRENCY = 64

Call = Callable[[], Awaitable[object]]


def redis_py_calls(client: aioredis.Redis) -> dict[str, Call]:
    """The calls shared.py and cache/store.py made through redis-py before the switch."""

    async def reserve() -> object:
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr("b:rpm").expire("b:rpm", 120).incrby("b:tpm", 350).expire("b:tpm", 120)
            return await pipe.execute()

    return {
        "GET (1 KB hit)": lambda: client.get("b:hit"),
        "GET (miss)": lambda: client.get("b:miss"),
        "SET 1 KB PX": lambda: client.set("b:set", VALUE, px=3_600_000),
        "reservation (MULTI, INCR, EXPIRE, INCRBY, EXPIRE, EXEC)": reserve,
    }


def lean_calls(client: RedisClient) -> dict[str, Call]:
    """The same calls as shared.py and cache/store.py make them now."""
    reservation = (("INCR", "b:rpm"), ("EXPIRE", "b:rpm", 120), ("INCRBY", "b:tpm", 350), ("EXPIRE", "b:tpm", 120))
    return {
        "GET (1 KB hit)": lambda: client.execute("GET", "b:hit"),
        "GET (miss)": lambda: client.execute("GET", "b:miss"),
        "SET 1 KB PX": lambda: client.execute("SET", "b:set", VALUE, "PX", 3_600_000),
        "reservation (MULTI, INCR, EXPIRE, INCRBY, EXPIRE, EXEC)": lambda: client.pipeline(reservation,
                                                                                           transaction=True),
    }


async def one_round(fn: Call, calls: int, tasks: int) -> tuple[float, float]:
    """Mean wall and CPU seconds per call over ``calls`` calls made by ``tasks`` concurrent tasks."""

    async def worker(n: int) -> None:
        for _ in range(n):
            await fn()

    wall, cpu = time.perf_counter(), time.process_time()
    if tasks == 1:
        await worker(calls)
    else:
        await asyncio.gather(*(worker(calls // tasks) for _ in range(tasks)))
    return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


class _Bare(asyncio.Protocol):
    """The floor: a pre-encoded GET written and its reply awaited, no parsing, no timeouts, no bookkeeping."""

    def __init__(self) -> None:
        self.waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.waiter.set_result(data)  # one small reply arrives in one read


async def floor(url: str, rounds: int, calls: int) -> float:
    """CPU seconds per round trip of the bare protocol: syscalls and the event loop, what no client can avoid."""
    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    loop = asyncio.get_running_loop()
    transport, bare = await loop.create_connection(_Bare, host, int(port))
    command = b"*2\r\n$3\r\nGET\r\n$6\r\nb:miss\r\n"

    async def call() -> object:
        bare.waiter = loop.create_future()
        transport.write(command)
        return await bare.waiter

    await one_round(call, 300, 1)
    cpu = statistics.median([(await one_round(call, calls, 1))[1] for _ in range(rounds)])
    transport.close()
    return cpu


async def measure(url: str, rounds: int, calls: int) -> list[tuple[str, tuple[float, float], tuple[float, float]]]:
    old = aioredis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
    new = RedisClient(url, timeout=0.25)
    await new.execute("SET", "b:hit", VALUE)
    sides = {"redis-py": redis_py_calls(old), "mmproxy": lean_calls(new)}
    cases = [(name, 1) for name in sides["mmproxy"]] + [("GET (1 KB hit)", CONCURRENCY)]
    rows = []
    for name, tasks in cases:
        for side in sides.values():  # warm up: connections open, code paths hot
            await one_round(side[name], 300, tasks)
        samples: dict[str, list[tuple[float, float]]] = {label: [] for label in sides}
        for _ in range(rounds):
            for label, side in sides.items():
                samples[label].append(await one_round(side[name], calls, tasks))
        medians = {label: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
                   for label, s in samples.items()}
        label = name if tasks == 1 else f"{name}, {tasks} concurrent tasks"
        rows.append((label, medians["redis-py"], medians["mmproxy"]))
        print(f"{label}: redis-py {medians['redis-py'][1] * 1e6:.1f} µs CPU, "
              f"mmproxy {medians['mmproxy'][1] * 1e6:.1f} µs CPU", file=sys.stderr, flush=True)
    await old.aclose()
    await new.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short rounds")
    parser.add_argument("--write", action="store_true", help="rewrite the section of RESULTS.md")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    rounds, calls = (3, 1_000) if args.quick else (args.rounds, 5_000)
    host = machine()  # before pinning, so nproc reports the machine rather than the affinity mask
    if hasattr(os, "sched_setaffinity") and PIN_CORE in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {PIN_CORE})
    proc, url = start_redis()
    try:
        rows = uvloop.run(measure(url, rounds, calls))
        floor_cpu = uvloop.run(floor(url, rounds, calls))
    finally:
        proc.terminate()
        proc.wait(10)

    table = [
        "| per call | redis-py: wall (µs) | CPU (µs) | mmproxy `RedisClient`: wall (µs) | CPU (µs) | CPU saved |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *(f"| {label} | {old[0] * 1e6:.1f} | {old[1] * 1e6:.1f} | {new[0] * 1e6:.1f} | {new[1] * 1e6:.1f} "
          f"| {old[1] / new[1]:.1f}x |" for label, old, new in rows),
    ]
    command = "python benches/bench_redis.py" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = "\n".join([
        f"Command: `{command}`",
        "",
        f"Date: {now}. Machine: {host}.",
        "",
        f"One asyncio task on uvloop pinned to core {PIN_CORE}; `redis-server` on the other core over loopback; "
        f"median of {rounds} rounds of the mean over {calls:,} awaited calls; rounds alternate the clients. CPU is "
        f"this process's CPU time per call: what the gateway pays. redis-py {redis.__version__} "
        f"({'with' if HIREDIS_AVAILABLE else 'without'} hiredis), `redis.asyncio.from_url` with 0.25 s timeouts, "
        "called as shared.py and cache/store.py called it; mmproxy's `RedisClient` as they call it now. In the "
        f"concurrent row, {CONCURRENCY} tasks call at once: redis-py spreads them over its connection pool, "
        "`RedisClient` pipelines them on its one connection and sends each loop iteration's commands in one write.",
        "",
        *table,
        "",
        f"Floor, same run: a bare `asyncio.Protocol` writing a pre-encoded GET and awaiting the reply (no parsing, "
        f"no timeouts) costs {floor_cpu * 1e6:.1f} µs of CPU per round trip: the syscalls and the event loop, "
        "which no client avoids.",
    ])
    print(section)
    if args.write:
        write_results_section(section, section=SECTION)
        print(f"updated {SECTION} in {RESULTS_MD}", file=sys.stderr)


if __name__ == "__main__":
    main()
