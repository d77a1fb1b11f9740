"""The floor of any user-space relay, measured beside mmproxy in one run.

Why: the per-event relay figure (``run.py``'s relay scenario) includes the kernel's cost of waking
up, reading and writing once per event on loopback. A "proxy" that copies bytes blindly between
paired sockets — one upstream connection per client connection, no HTTP parsing, no auth, no
routing — run through the same scenario shows how much of that figure no asyncio gateway can
avoid. The floor relay is a measuring stick, not a product.

    python benches/relay_floor.py [--streams 1000] [--rounds 3] [--no-update-results]
    python benches/relay_floor.py serve --listen PORT --upstream HOST:PORT   # the relay alone
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import uvloop
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (
    CLIENT_CORE,
    GATEWAY_CORE,
    MASTER_KEY,
    Service,
    cpu_per_request,
    free_port,
    pinning_available,
    python_env,
    write_results_section,
)

DELAY_MS = 2.0
SHORT, LONG = 20, 100


class _Half(asyncio.Protocol):
    """One side of a pair: whatever arrives is written to the peer."""

    def __init__(self) -> None:
        self.peer: _Half | None = None
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def relay(listen: int, upstream: str) -> None:
    host, port = upstream.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    pairing: set[asyncio.Task[None]] = set()

    def accept() -> _Half:
        client = _Half()

        async def pair() -> None:
            _, up = await loop.create_connection(_Half, host, int(port))
            up.peer, client.peer = client, up
            for data in client.pending:
                up.transport.write(data)  # type: ignore[union-attr]
            client.pending.clear()

        task = loop.create_task(pair())
        pairing.add(task)
        task.add_done_callback(pairing.discard)
        return client

    server = await loop.create_server(accept, "127.0.0.1", listen)
    print(f"relay floor listening on http://127.0.0.1:{listen}", flush=True)
    await server.serve_forever()


def measure(args: argparse.Namespace) -> int:
    pin = pinning_available()
    logdir = Path(tempfile.mkdtemp(prefix="mmproxy-floor-"))
    services: list[Service] = []
    gw_core, sim_core = (GATEWAY_CORE, CLIENT_CORE) if pin else (None, None)
    try:
        sims = {}
        for chunks in (SHORT, LONG):
            port = free_port()
            sims[chunks] = Service(f"sim-{chunks}", [
                sys.executable, "-m", "mmproxy.simulator", "--port", str(port), "--record", "0",
                "--chunks", str(chunks), "--tokens", str(chunks), "--chunk-delay-ms", str(DELAY_MS),
            ], port=port, core=sim_core, env=python_env(), logdir=logdir)
            services.append(sims[chunks])
        floors = {}
        for chunks, sim in sims.items():
            port = free_port()
            floors[chunks] = Service(f"floor-{chunks}", [
                sys.executable, __file__, "serve", "--listen", str(port), "--upstream", f"127.0.0.1:{sim.port}",
            ], port=port, core=gw_core, env=python_env(), logdir=logdir)
            services.append(floors[chunks])
        config = logdir / "config.yaml"
        config.write_text(yaml.safe_dump({
            "model_list": [
                {"model_name": f"relay-{chunks}", "litellm_params": {
                    "model": f"openai/relay-{chunks}", "api_base": f"http://127.0.0.1:{sim.port}/v1"}}
                for chunks, sim in sims.items()
            ],
            "general_settings": {"master_key": MASTER_KEY},
        }))
        gw_port = free_port()
        gateway = Service("mmproxy", [sys.executable, "-m", "mmproxy", "serve", "--config", str(config),
                                      "--host", "127.0.0.1", "--port", str(gw_port)],
                          port=gw_port, core=gw_core, env=python_env(), logdir=logdir)
        services.append(gateway)
        for chunks, sim in sims.items():
            sim.wait_ready(f"http://127.0.0.1:{sim.port}/_sim/health", 20)
            floors[chunks].wait_ready(f"http://127.0.0.1:{floors[chunks].port}/_sim/health", 20)
        gateway.wait_ready(f"http://127.0.0.1:{gw_port}/health/readiness", 30)

        def per_event(run_one: dict[int, tuple[Service, str, str]]) -> tuple[float, float, float]:
            cost = {
                chunks: statistics.median(
                    cpu_per_request(svc, model, stream=True, count=args.streams, concurrency=32, api_key=key)
                    for _ in range(args.rounds)
                )
                for chunks, (svc, model, key) in run_one.items()
            }
            return cost[SHORT], cost[LONG], (cost[LONG] - cost[SHORT]) / (LONG - SHORT)

        rows = {
            "floor (blind byte relay)": per_event({c: (floors[c], f"relay-{c}", "sk-x") for c in sims}),
            "mmproxy": per_event({c: (gateway, f"relay-{c}", MASTER_KEY) for c in sims}),
        }
    finally:
        for svc in services:
            svc.stop()
    lines = [
        f"Command: `python benches/relay_floor.py --streams {args.streams} --rounds {args.rounds}`",
        "",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Python {platform.python_version()}; "
        f"relay on core {GATEWAY_CORE}, simulator and load generator on core {CLIENT_CORE}; {DELAY_MS:g} ms between "
        f"SSE events, so every event is its own wake-up, read and write; concurrency 32; median of {args.rounds}.",
        "",
        f"| relay | CPU per {SHORT}-event stream | CPU per {LONG}-event stream | µs per event |",
        "|---|---|---|---|",
    ]
    for name, (short, long, event) in rows.items():
        lines.append(f"| {name} | {short * 1e6:.0f} µs | {long * 1e6:.0f} µs | {event * 1e6:.2f} |")
    body = "\n".join(lines)
    print(body)
    if args.update_results:
        write_results_section(body, section="## Relay floor")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the floor relay alone")
    serve.add_argument("--listen", type=int, required=True)
    serve.add_argument("--upstream", required=True, help="host:port")
    parser.add_argument("--streams", type=int, default=1000, help="streams per measured window")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--update-results", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    if args.command == "serve":
        uvloop.run(relay(args.listen, args.upstream))
        return 0
    return measure(args)


if __name__ == "__main__":
    raise SystemExit(main())
