"""Soak under faults: a million requests through two workers while faults are injected on a schedule.

Why: the fault matrix test (tests/reliability/test_fault_matrix.py) shows each fault is survived once; a soak shows
that surviving them again and again leaks neither memory nor ledger rows. The mix is the test's: plain and streamed
chats, with a virtual key (its limits counted in Redis) and the master key, the ledger on PostgreSQL, plus clients
that hang up mid-stream. Every ``--fault-every`` seconds the next fault of the cycle is injected: an upstream burst
(429, 500, 502, 503, a cut stream, broken JSON, a timeout, a stalled connection; ``--burst`` requests each), Redis
killed and started again, PostgreSQL stopped and started again, a worker killed with SIGKILL. It reports the
workers' RSS over time (a table and ``benches/soak_rss.png``), errors by class, throughput, the faults injected,
and the ledger rows expected (every answer that carried a request id) against those found.

    python benches/bench_soak.py                     # 1,000,000 requests; writes RESULTS.md and soak_rss.png
    python benches/bench_soak.py --quick             # 20,000 requests, a fault every 3 s, writes nothing
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvloop
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' PostgreSQL cluster and Redis server
from run import (
    BENCHES,
    MASTER_KEY,
    Service,
    current_code,
    free_port,
    machine,
    memory_mb,
    mmproxy_env,
    python_env,
    write_results_section,
)

from mmproxy.bench.loadgen import DRAIN, LoadGen, chat_request
from tests.conftest import PostgresCluster
from tests.test_redis_client import Server as RedisServer

PNG = BENCHES / "soak_rss.png"
MODEL = "soak"
UPSTREAM_TIMEOUT_S = 2.0
# The cycle of faults; "upstream:KIND" is a burst of the simulator's fault KIND on the next --burst requests.
CYCLE = ("upstream:429", "upstream:500", "redis", "upstream:502", "upstream:503", "postgres", "upstream:cut",
         "upstream:bad_json", "worker", "upstream:timeout:3000", "upstream:hang")
OUTAGE_S = 3.0  # how long Redis and PostgreSQL stay down


@dataclass
class Soak:
    """What the soak saw, besides the load generator's own result."""

    samples: list[tuple[float, int, dict[int, float]]] = field(default_factory=list)  # (s, requests done, RSS)
    faults: Counter[str] = field(default_factory=Counter)
    fault_times: list[tuple[float, str]] = field(default_factory=list)
    hangup_ids: list[bytes] = field(default_factory=list)
    hangup_errors: int = 0


def _post(url: str, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.load(response)
        return result


def _workers(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def _config(sim_port: int, database_url: str, redis_url: str, spool: Path) -> dict[str, Any]:
    return {
        "model_list": [{"model_name": MODEL, "litellm_params": {
            "model": "openai/sim-soak", "api_base": f"http://127.0.0.1:{sim_port}/v1", "api_key": "sk-simulator",
            "timeout": UPSTREAM_TIMEOUT_S, "stream_timeout": UPSTREAM_TIMEOUT_S / 2},
            "model_info": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}}],
        "general_settings": {"master_key": MASTER_KEY, "database_url": database_url, "spool_dir": str(spool)},
        # Each fault's errors are its own: no cooldown makes healthy requests wait for a faulted deployment.
        "router_settings": {"redis_url": redis_url, "cooldown_time": 0},
    }


async def _inject(kind: str, sim_url: str, gateway: Service, redis: RedisServer, postgres: PostgresCluster,
                  burst: int) -> None:
    if kind.startswith("upstream:"):
        fault = kind.removeprefix("upstream:")
        count = burst // 10 if fault in ("timeout:3000", "hang") else burst  # each holds a client for 2 s
        await asyncio.to_thread(_post, f"{sim_url}/_sim/faults", {"model": "*", "fault": fault, "count": count})
    elif kind == "redis":
        assert redis.proc is not None
        redis.proc.kill()
        await asyncio.sleep(OUTAGE_S)
        await asyncio.to_thread(redis.start)
    elif kind == "postgres":
        await asyncio.to_thread(postgres.stop)
        await asyncio.sleep(OUTAGE_S)
        await asyncio.to_thread(postgres.start)
    elif kind == "worker":
        workers = _workers(gateway.pid)
        if workers:
            os.kill(workers[0], signal.SIGKILL)


async def _faults(gen: LoadGen, soak: Soak, every: float, started: float, **parts: Any) -> None:
    for index in range(10**9):
        await asyncio.sleep(every)
        if gen.phase == DRAIN:
            return
        kind = CYCLE[index % len(CYCLE)]
        soak.fault_times.append((time.monotonic() - started, kind))
        await _inject(kind, **parts)
        soak.faults[kind] += 1


async def _sample(gen: LoadGen, soak: Soak, gateway_pid: int, started: float) -> None:
    while gen.phase != DRAIN:
        done = gen.result.ok + sum(gen.result.errors.values())
        rss = {pid: memory_mb([pid])[0] for pid in _workers(gateway_pid)}
        soak.samples.append((time.monotonic() - started, done, rss))
        await asyncio.sleep(2.0)


async def _hang_ups(gen: LoadGen, soak: Soak, port: int, key: str) -> None:
    """Clients that leave a stream after its first event, five a second."""
    body = orjson.dumps({"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "bye"}],
                         "sim": {"chunks": 10, "chunk_delay_ms": 50}})
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(head + body)
            headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            for line in headers.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.lower() == b"x-mmproxy-request-id":
                    soak.hangup_ids.append(value.strip())
            await asyncio.wait_for(reader.readuntil(b"data: "), 10)
        finally:
            writer.transport.abort()  # gone, mid-stream

    while gen.phase != DRAIN:
        try:
            await one()
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            soak.hangup_errors += 1
        await asyncio.sleep(0.2)


async def _ledger_ids(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return [row[0] for row in await conn.fetch("SELECT request_id FROM mmproxy_spend_logs")]
    finally:
        await conn.close()


def _ledger(database_url: str, expected: set[str], within: float) -> dict[str, int]:
    """Rows expected vs found, waiting up to ``within`` seconds for rows still on their way."""
    deadline = time.monotonic() + within
    while True:
        ids = asyncio.run(_ledger_ids(database_url))
        found = set(ids)
        if expected <= found or time.monotonic() > deadline:
            break
        time.sleep(2.0)
    return {"expected": len(expected), "found": len(expected & found), "lost": len(expected - found),
            "doubled": len(ids) - len(found), "rows_without_an_answer": len(found - expected),
            "lost_sample": sorted(expected - found)[:10]}


def _plot(report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    series: dict[int, list[tuple[float, float]]] = {}
    for seconds, _, rss in report["samples"]:
        for pid, mb in rss.items():
            series.setdefault(int(pid), []).append((seconds, mb))
    for pid, points in series.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], label=f"worker pid {pid}")
    for seconds, kind in report["fault_times"]:
        ax.axvline(seconds, color="red" if kind == "worker" else "grey", alpha=0.25, linewidth=0.8)
    ax.set_xlabel("seconds (grey lines: faults injected; red: a worker SIGKILLed)")
    ax.set_ylabel("RSS (MB)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"mmproxy RSS per worker over {report['requests']:,} requests under faults")
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    fig.savefig(PNG, dpi=110)


def _markdown(report: dict[str, Any], command: str) -> str:
    summary, ledger = report["summary"], report["ledger"]
    lines = [
        f"`{command}` — {report['date']}, {report['machine']}.",
        "",
        f"{report['requests']:,} requests (plain and streamed chats, virtual key counted in Redis and master key; "
        f"ledger on PostgreSQL) at concurrency {summary['concurrency']} through `--workers {report['workers']}`, "
        f"the simulator answering at once. The machine is shared and noisy: the throughput is low and says "
        f"nothing about the gateway's speed; flat memory and no lost row are the point.",
        "",
        f"- throughput: {summary['req_s']:,.0f} requests/s over {summary['elapsed_s']:.0f} s",
        f"- faults injected (one every {report['fault_every']:g} s): "
        + ", ".join(f"{kind} x{n}" for kind, n in sorted(report["faults"].items())),
        f"- answers: {summary['requests']:,} complete, errors by class: "
        + (", ".join(f"{kind} {n:,}" for kind, n in sorted(summary["error_kinds"].items())) or "none")
        + f"; {report['hangups']:,} clients hung up mid-stream. The classes: `http_NNN` an error status (the "
        "upstream bursts: 429 passed on, 500/502/bad JSON as 502, 503, timeouts and stalls as 504; no 500), "
        "`stream_without_done` a stream ended by an error event (cut or stalled upstream), `conn_lost`/`cut`/"
        "`connect` connections of a killed worker",
        f"- ledger rows: expected {ledger['expected']:,} (every answer with a request id, hang-ups included), "
        f"found {ledger['found']:,}, **lost {ledger['lost']}**, **doubled {ledger['doubled']}**; "
        f"{ledger['rows_without_an_answer']} rows of requests whose answer never reached the client "
        f"(in flight on a killed worker)",
        "",
        f"RSS per worker (MB), {PNG.name}:",
        "",
        "| s | requests done | RSS of each live worker (MB) |",
        "|---:|---:|---|",
    ]
    samples = report["samples"]
    step = max(1, len(samples) // 12)
    for seconds, done, rss in [*samples[::step], samples[-1]] if samples else []:
        lines.append(f"| {seconds:.0f} | {done:,} | " + ", ".join(f"{mb:.1f}" for _, mb in sorted(rss.items()))
                     + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="20,000 requests and a fault every 3 s; writes nothing")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fault-every", type=float, default=10.0, help="seconds between faults")
    parser.add_argument("--burst", type=int, default=200, help="requests each upstream fault burst hits")
    parser.add_argument("--no-update-results", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.fault_every, args.no_update_results = 20_000, 3.0, True
    command = "python benches/bench_soak.py" + ("" if args.requests == 1_000_000 else f" --requests {args.requests}")
    logdir = Path(tempfile.mkdtemp(prefix="mmproxy-soak-"))
    postgres, redis = PostgresCluster(), RedisServer()
    redis.start()
    sim_port = free_port()
    sim = Service("sim", [sys.executable, "-m", "mmproxy.simulator", "--host", "127.0.0.1", "--port", str(sim_port),
                          "--chunks", "5", "--tokens", "5", "--record", "0"],
                  port=sim_port, core=None, env=python_env(), logdir=logdir)
    gateway: Service | None = None
    try:
        sim.wait_ready(f"http://127.0.0.1:{sim_port}/v1/models", 30)
        config = logdir / "config.yaml"
        config.write_text(yaml.safe_dump(_config(sim_port, postgres.url, f"redis://127.0.0.1:{redis.port}/0",
                                                 logdir / "spool")))
        port = free_port()
        gateway = Service("mmproxy", [sys.executable, "-m", "mmproxy", "serve", "--config", str(config), "--host",
                                      "127.0.0.1", "--port", str(port), "--workers", str(args.workers)],
                          port=port, core=None, env=mmproxy_env("mmproxy", current_code(), logdir), logdir=logdir)
        gateway.wait_ready(f"http://127.0.0.1:{port}/health/readiness", 60)
        url = f"http://127.0.0.1:{port}"
        key = _post(f"{url}/key/generate", {"max_budget": 1e6, "rpm_limit": 10**8, "key_alias": "soak"},
                    MASTER_KEY)["key"]
        small = {"max_tokens": 5}
        requests = [chat_request(MODEL, stream=False, api_key=key, extra=small),
                    chat_request(MODEL, stream=True, api_key=key, extra=small),
                    chat_request(MODEL, stream=False, api_key=MASTER_KEY, extra=small),
                    chat_request(MODEL, stream=True, api_key=MASTER_KEY, extra=small)]
        gen = LoadGen("127.0.0.1", port, requests, concurrency=args.concurrency, count=args.requests, warmup=0,
                      timeout=30, record_ids=True)
        soak = Soak()
        started = time.monotonic()

        async def everything() -> None:
            parts = {"sim_url": f"http://127.0.0.1:{sim_port}", "gateway": gateway, "redis": redis,
                     "postgres": postgres, "burst": args.burst}
            side = [asyncio.ensure_future(job) for job in (
                _faults(gen, soak, args.fault_every, started, **parts), _sample(gen, soak, gateway.pid, started),
                _hang_ups(gen, soak, port, key))]
            await gen.run()
            await asyncio.gather(*side)  # each ends by itself once the load is over (an outage is ended first)

        print(f"soak: {args.requests:,} requests, logs in {logdir}", file=sys.stderr, flush=True)
        uvloop.run(everything())
        summary = gen.result.summary()
        expected = {i.decode() for i in (gen.request_ids or [])} | {i.decode() for i in soak.hangup_ids}
        ledger = _ledger(postgres.url, expected, within=120)
        soak.samples.append((time.monotonic() - started, args.requests,
                             {pid: memory_mb([pid])[0] for pid in _workers(gateway.pid)}))
    finally:
        if gateway is not None:
            gateway.stop()
        sim.stop()
        redis.stop()
        postgres.remove()
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "requests": args.requests,
              "workers": args.workers, "fault_every": args.fault_every, "summary": summary, "ledger": ledger,
              "faults": dict(soak.faults), "fault_times": soak.fault_times, "hangups": len(soak.hangup_ids),
              "hangup_errors": soak.hangup_errors, "samples": soak.samples}
    print(json.dumps({k: v for k, v in report.items() if k not in ("samples", "fault_times")}, indent=2))
    if not args.no_update_results:
        _plot(report)
        write_results_section(_markdown(report, command), section="## Soak under faults")
    print(f"logs: {logdir}", file=sys.stderr)
    return 0 if ledger["lost"] == 0 and ledger["doubled"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
