"""What the default spend ledger adds to a single client's tail latency: ledger on vs off, in one run.

Why: issue 11 (item 7) saw the default ledger (master key set, SQLite ledger and metrics on -- what a LiteLLM
config gives) add to p99 at concurrency 1 while p50 stayed put, i.e. the ledger's writer stalled the event loop
now and then. The target is p99 with the ledger on within 1.3x of the ledger-off figure. Three targets on one
simulator, in interleaved rounds so a slow spell of the shared machine hits them all alike: the simulator
direct, a gateway with accounting off and one with the default ledger on (bench_accounting.py's two configs).
Latency percentiles are over every request of every round pooled (p99.9 needs them); "added" is a gateway's
percentile less the direct one. Per-round p99s, and how busy other processes kept the gateway core, show how
noisy the machine was. Non-streaming, concurrency 1; gateways on core 0, simulator and load generator on core 1.

``--during-writes`` measures where the stall comes from, with less noise than the end-to-end figures: in this
process, pinned to core 0, a request loop (150 µs of Python work standing in for the gateway's own, a ``Ledger``
record, one round trip to an echo process on core 1) runs against a real SQLite file, and the round trips that
overlapped a batch write are told apart from the rest. The database is subclassed only to time each batch.

    python benches/bench_ledger_latency.py [--requests 5000] [--rounds 5] [--section NAME] [--no-update-results]
    python benches/bench_ledger_latency.py --during-writes [--rounds 4] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_accounting import OFF, ON, _config
from bench_ledger import make_records
from run import (
    CLIENT_CORE,
    GATEWAY_CORE,
    MASTER_KEY,
    Service,
    core_busy_seconds,
    cpu_seconds,
    free_port,
    machine,
    pinning_available,
    process_tree,
    python_env,
    write_results_section,
)

from mmproxy.bench.loadgen import LoadGen, chat_request, percentile, run_sync
from mmproxy.db.sqlite import SQLiteDatabase
from mmproxy.spend.ledger import Ledger

DIRECT = "simulator direct"
QUANTILES = (50.0, 99.0, 99.9)


@dataclass
class Window:
    latencies_ms: list[float]
    cpu_per_request: float  # seconds, the target's process tree
    foreign_load: float  # share of the gateway core busy with processes other than the target's


def _window(svc: Service, api_key: str, count: int) -> Window:
    """One measured window at concurrency 1."""
    pids = process_tree(svc.pid)
    marks: list[tuple[float, float]] = []

    def mark() -> None:
        marks.append((cpu_seconds(pids), core_busy_seconds()[GATEWAY_CORE]))

    gen = LoadGen("127.0.0.1", svc.port, [chat_request("g", stream=False, api_key=api_key)], concurrency=1,
                  count=count, warmup=1.0, on_measure_start=mark, on_measure_end=mark)
    result = run_sync(gen)
    if result.errors:
        raise RuntimeError(f"{svc.name}: {dict(result.errors)} {result.error_sample}")
    (cpu0, busy0), (cpu1, busy1) = marks
    own = cpu1 - cpu0 if svc.name != DIRECT else 0.0  # the simulator runs on the other core
    return Window([latency * 1e3 for latency in result.latencies], (cpu1 - cpu0) / result.ok,
                  max(0.0, busy1 - busy0 - own) / result.elapsed_s)


def measure(requests: int, rounds: int) -> dict[str, list[Window]]:
    """Each target's windows, one a round."""
    pin = pinning_available()
    if pin:
        os.sched_setaffinity(0, {CLIENT_CORE})
    logdir = Path(tempfile.mkdtemp(prefix="mmproxy-ledger-latency-"))
    sim_port = free_port()
    services: dict[str, tuple[Service, str]] = {}
    try:
        sim = Service("simulator", [sys.executable, "-m", "mmproxy.simulator", "--port", str(sim_port), "--record",
                                    "0"], port=sim_port, core=CLIENT_CORE if pin else None, env=python_env(),
                      logdir=logdir)
        services[DIRECT] = (sim, "sk-sim")
        sim.wait_ready(f"http://127.0.0.1:{sim_port}/_sim/health", 20)
        for index, (label, accounting) in enumerate(((OFF, False), (ON, True))):
            config = logdir / f"config-{index}.yaml"
            config.write_text(yaml.safe_dump(_config(sim_port, accounting)))
            workdir = logdir / f"gw-{index}"  # its own directory, so its SQLite ledger starts empty
            workdir.mkdir()
            port = free_port()
            gateway = Service(label, [sys.executable, "-m", "mmproxy", "serve", "--config", str(config), "--host",
                                      "127.0.0.1", "--port", str(port)], port=port,
                              core=GATEWAY_CORE if pin else None, env=python_env(), logdir=logdir, cwd=workdir)
            services[label] = (gateway, MASTER_KEY)
            gateway.wait_ready(f"http://127.0.0.1:{port}/health/readiness", 30)
        windows: dict[str, list[Window]] = {label: [] for label in services}
        for number in range(rounds):
            for label, (svc, api_key) in services.items():
                window = _window(svc, api_key, requests)
                windows[label].append(window)
                ordered = sorted(window.latencies_ms)
                print(f"round {number + 1} {label:26} p50 {percentile(ordered, 50):6.3f} ms  p99 "
                      f"{percentile(ordered, 99):6.3f} ms  p99.9 {percentile(ordered, 99.9):6.3f} ms  "
                      f"CPU {window.cpu_per_request * 1e6:5.0f} µs/req  other load on core {GATEWAY_CORE} "
                      f"{window.foreign_load:4.0%}", flush=True)
    finally:
        for svc, _ in services.values():
            svc.stop()
    return windows


def report(args: argparse.Namespace) -> str:
    windows = measure(args.requests, args.rounds)
    pooled = {label: sorted(x for window in runs for x in window.latencies_ms) for label, runs in windows.items()}
    direct = [percentile(pooled[DIRECT], q) for q in QUANTILES]
    added = {label: [percentile(pooled[label], q) - base for q, base in zip(QUANTILES, direct, strict=True)]
             for label in (OFF, ON)}
    per_round = {label: [percentile(sorted(window.latencies_ms), 99) - percentile(sorted(base.latencies_ms), 99)
                         for window, base in zip(windows[label], windows[DIRECT], strict=True)]
                 for label in (OFF, ON)}
    rows = []
    for label in (OFF, ON):
        spread = per_round[label]
        rows.append(f"| {label} | " + " | ".join(f"+{value:.2f} ms" for value in added[label])
                    + f" | {statistics.median(spread):+.2f} ms ({min(spread):+.2f} … {max(spread):+.2f}) | "
                    f"{statistics.median(window.cpu_per_request for window in windows[label]) * 1e6:.0f} µs |")
    foreign = [window.foreign_load for runs in windows.values() for window in runs]
    ratio = added[ON][1] / added[OFF][1]
    round_ratio = statistics.median(per_round[ON]) / statistics.median(per_round[OFF])
    return "\n".join([
        f"Command: `python benches/bench_ledger_latency.py --requests {args.requests} --rounds {args.rounds}`",
        "",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. {machine()}. Gateways on core {GATEWAY_CORE}, "
        f"simulator and load generator on core {CLIENT_CORE}; non-streaming, concurrency 1; {args.rounds} interleaved "
        f"rounds of {args.requests} requests per target, percentiles over all of them pooled, less the simulator's "
        f"own (direct: p50 {direct[0]:.2f} ms, p99 {direct[1]:.2f} ms, p99.9 {direct[2]:.2f} ms).",
        "",
        f"Other processes kept core {GATEWAY_CORE} busy {min(foreign):.0%} … {max(foreign):.0%} "
        f"(median {statistics.median(foreign):.0%}) during the windows.",
        "",
        "| gateway | added p50 | added p99 | added p99.9 | added p99, median of rounds (range) | "
        "CPU per request (median) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Added p99, ledger on / off: {ratio:.2f}x pooled, {round_ratio:.2f}x median of rounds (target ≤ 1.3x).",
    ])


_ECHO = """
import asyncio, sys
class Echo(asyncio.Protocol):
    def connection_made(self, transport): self.transport = transport
    def data_received(self, data): self.transport.write(data)
async def main():
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


class _TimedDatabase(SQLiteDatabase):
    """The SQLite database, noting when each batch write started and ended."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes: list[tuple[float, float]] = []

    async def write_requests(self, rows: list[tuple[object, ...]], key_spend: dict[str, float]) -> None:
        began = time.perf_counter()
        await super().write_requests(rows, key_spend)
        self.writes.append((began, time.perf_counter()))


class _Peer(asyncio.Protocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.set_result(None)


async def _requests_during_writes(port: int, seconds: float, workdir: Path) -> tuple[list[float], list[float]]:
    """Round-trip times in ms: (those that overlapped a batch write, the others)."""
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_connection(_Peer, "127.0.0.1", port)
    db = _TimedDatabase(workdir / f"probe-{time.monotonic_ns()}.db")
    await db.start()
    ledger = Ledger(db)
    await ledger.start()
    records = make_records(int(seconds * 20_000), "probe")
    trips: list[tuple[float, float]] = []
    end = time.perf_counter() + seconds
    for record in records:
        work_until = time.perf_counter() + 150e-6
        while time.perf_counter() < work_until:
            pass
        ledger.record(record)
        began = time.perf_counter()
        if began > end:
            break
        peer.reply = loop.create_future()
        peer.transport.write(b"x" * 100)
        await peer.reply
        trips.append((began, time.perf_counter()))
    await ledger.close()
    await db.close()
    peer.transport.close()
    during: list[float] = []
    outside: list[float] = []
    for began, ended in trips:
        overlaps = any(start < ended and began < stop for start, stop in db.writes)
        (during if overlaps else outside).append((ended - began) * 1e3)
    return sorted(during), sorted(outside)


def during_writes(rounds: int, seconds: float) -> None:
    pin = pinning_available()
    if pin:
        os.sched_setaffinity(0, {GATEWAY_CORE})
    workdir = Path(tempfile.mkdtemp(prefix="mmproxy-ledger-probe-"))
    port = free_port()
    echo = Service("echo", [sys.executable, "-c", _ECHO, str(port)], port=port, core=CLIENT_CORE if pin else None,
                   env=python_env(), logdir=workdir)
    try:
        while "ready" not in echo.log_tail():
            if echo.proc.poll() is not None:
                raise RuntimeError(f"the echo process exited:\n{echo.log_tail()}")
            time.sleep(0.05)
        for number in range(rounds):
            during, outside = uvloop.run(_requests_during_writes(port, seconds, workdir))
            print(f"round {number + 1}: during a batch write {len(during)} requests, p99 "
                  f"{percentile(during, 99):.2f} ms; outside {len(outside)}, p99 {percentile(outside, 99):.2f} ms",
                  flush=True)
    finally:
        echo.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per target per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--section", default="## Ledger latency at concurrency 1",
                        help="the RESULTS.md section to write")
    parser.add_argument("--update-results", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--during-writes", action="store_true",
                        help="only the in-process probe: round trips during a batch write vs the rest")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of a --during-writes round")
    args = parser.parse_args()
    if args.during_writes:
        during_writes(args.rounds, args.seconds)
        return 0
    body = report(args)
    print(body)
    if args.update_results:
        write_results_section(body, section=args.section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
