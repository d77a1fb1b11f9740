"""The floor of the gateway's own design at concurrency 1: aiohttp's low-level server and mmproxy's upstream
client forwarding a chat request, with nothing else, measured beside mmproxy in one run.

Why: issue 2 asks ≤ 200 µs of gateway CPU and ≤ +0.25 ms p50 per request at concurrency 1. The floor proxy here
keeps the design's parts (uvloop, aiohttp's ``web.Server``, the lean ``UpstreamPool``) and drops everything the
gateway adds (auth, validation, routing, pricing, headers): what it costs is what no gateway on this design can
go below on this machine. Non-streaming requests; gateway and floor pinned to core 0, the simulator and load
generator to core 1; medians of rounds.

    python benches/server_floor.py [--requests 3000] [--rounds 3] [--no-update-results]
    python benches/server_floor.py serve --listen PORT --upstream http://HOST:PORT/v1   # the floor proxy alone
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvloop
import yaml
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (
    CLIENT_CORE,
    GATEWAY_CORE,
    MASTER_KEY,
    Service,
    cpu_per_request,
    free_port,
    machine,
    pinning_available,
    python_env,
    write_results_section,
)

from mmproxy.bench.loadgen import chat_request
from mmproxy.upstream.http1 import UpstreamPool

SECTION = "## Server floor at concurrency 1"


async def serve(listen: int, upstream: str) -> None:
    """Forward every request body to ``upstream``/chat/completions and answer with the upstream's body."""
    pool = UpstreamPool(upstream)
    path = upstream.split("/", 3)[3] if upstream.count("/") >= 3 else ""
    head = (f"POST /{path}/chat/completions HTTP/1.1\r\nHost: {pool.host_header}\r\n"
            "Authorization: Bearer sk-sim\r\nContent-Type: application/json\r\nContent-Length: ").encode()

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET":  # readiness
            return web.Response(text="ok")
        body = await request.read()
        exchange = await pool.fetch(head + b"%d\r\n\r\n" % len(body) + body, 30.0)
        answer = exchange.body()
        exchange.release()
        return web.Response(body=answer, content_type="application/json")

    server = web.Server(handler, access_log=None)
    runner = web.ServerRunner(server, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", listen).start()
    print(f"server floor listening on http://127.0.0.1:{listen}", flush=True)
    await asyncio.Event().wait()


def _measure(svc: Service, model: str, concurrency: int, count: int, api_key: str | None
             ) -> tuple[float, float]:
    """(CPU seconds per request of ``svc``'s process tree, p50 latency in ms)."""
    summaries: list[dict[str, Any]] = []
    cpu = cpu_per_request(svc, model, stream=False, count=count, concurrency=concurrency, summaries=summaries,
                          request=chat_request(model, stream=False, api_key=api_key))
    return cpu, summaries[-1]["p50_ms"]


def measure(args: argparse.Namespace) -> int:
    pin = pinning_available()
    if pin:
        os.sched_setaffinity(0, {CLIENT_CORE})
    gw_core, sim_core = (GATEWAY_CORE, CLIENT_CORE) if pin else (None, None)
    logdir = Path(tempfile.mkdtemp(prefix="mmproxy-server-floor-"))
    services: list[Service] = []
    try:
        sim_port = free_port()
        sim = Service("simulator", [sys.executable, "-m", "mmproxy.simulator", "--port", str(sim_port), "--record",
                                    "0"], port=sim_port, core=sim_core, env=python_env(), logdir=logdir)
        services.append(sim)
        sim.wait_ready(f"http://127.0.0.1:{sim_port}/_sim/health", 20)
        floor_port = free_port()
        floor = Service("floor", [sys.executable, __file__, "serve", "--listen", str(floor_port), "--upstream",
                                  f"http://127.0.0.1:{sim_port}/v1"], port=floor_port, core=gw_core,
                        env=python_env(), logdir=logdir)
        services.append(floor)
        config = logdir / "config.yaml"
        config.write_text(yaml.safe_dump({
            "model_list": [{"model_name": "g", "litellm_params": {
                "model": "openai/g", "api_base": f"http://127.0.0.1:{sim_port}/v1", "api_key": "sk-sim"}}],
            "general_settings": {"master_key": MASTER_KEY, "disable_spend_logs": True, "disable_metrics": True},
        }))
        gw_port = free_port()
        gateway = Service("mmproxy", [sys.executable, "-m", "mmproxy", "serve", "--config", str(config), "--host",
                                      "127.0.0.1", "--port", str(gw_port)], port=gw_port, core=gw_core,
                          env=python_env(), logdir=logdir)
        services.append(gateway)
        floor.wait_ready(f"http://127.0.0.1:{floor_port}/ready", 20)
        gateway.wait_ready(f"http://127.0.0.1:{gw_port}/health/readiness", 30)
        results: dict[str, dict[int, list[tuple[float, float]]]] = {"direct": {}, "floor": {}, "mmproxy": {}}
        for _ in range(args.rounds):  # interleaved, so a slow spell of the shared machine hits all alike
            for concurrency in (1, 64):
                for name, svc, key in (("direct", sim, "sk-sim"), ("floor", floor, None),
                                       ("mmproxy", gateway, MASTER_KEY)):
                    results[name].setdefault(concurrency, []).append(
                        _measure(svc, "g", concurrency, args.requests, key))
    finally:
        for svc in services:
            svc.stop()

    def med(name: str, concurrency: int, field: int) -> float:
        return statistics.median(r[field] for r in results[name][concurrency])

    rows = []
    for name in ("floor", "mmproxy"):
        cells: list[Any] = [name]
        for concurrency in (1, 64):
            cells += [f"{med(name, concurrency, 0) * 1e6:.0f} µs",
                      f"{med(name, concurrency, 1) - med('direct', concurrency, 1):+.2f} ms"]
        rows.append("| " + " | ".join(cells) + " |")
    body = "\n".join([
        f"Command: `python benches/server_floor.py --requests {args.requests} --rounds {args.rounds}`",
        "",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {machine()}. Proxy on core "
        f"{GATEWAY_CORE}, simulator and load generator on core {CLIENT_CORE}; non-streaming; median of {args.rounds} "
        "interleaved rounds. \"floor\": aiohttp's low-level server and mmproxy's upstream client forwarding the "
        "body, nothing else; \"mmproxy\": the gateway with a master key, no ledger or metrics (as in run.py).",
        "",
        "| proxy | CPU per request, c=1 | added p50, c=1 | CPU per request, c=64 | added p50, c=64 |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Issue 2's goals at c=1: ≤ 200 µs and ≤ +0.25 ms.",
    ])
    print(body)
    if args.update_results:
        write_results_section(body, section=SECTION)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve")
    serve_parser.add_argument("--listen", type=int, required=True)
    serve_parser.add_argument("--upstream", required=True)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--update-results", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    if args.command == "serve":
        uvloop.run(serve(args.listen, args.upstream))
        return 0
    return measure(args)


if __name__ == "__main__":
    raise SystemExit(main())
