"""The floor of any user-space relay, measured beside mmproxy in one run.

Why: the per-event relay figure (``run.py``'s relay scenario) includes the kernel's cost of waking
up, reading and writing once per event on loopback. A "proxy" that copies bytes blindly between
paired sockets — one upstream connection per client connection, no HTTP parsing, no auth, no
routing — run through the same scenario shows how much of that figure no asyncio gateway can
avoid. The same relay in native code (``benches/native_relay``, a standalone Rust binary: two blocking
threads per pair, or one epoll thread) shows what is left with no Python per event at all, i.e. the
kernel's own wake-up, read and write on loopback: the floor for moving the SSE relay into the Rust
core. It is built with cargo on first use; without cargo those rows are skipped. The floor relays
are measuring sticks, not products.

Each row splits the relay's CPU into user and system time (from /proc, as the total; the split is
sampled at the kernel's tick, so it is rougher than the total).

    python benches/relay_floor.py [--streams 1000] [--rounds 3] [--no-update-results]
    python benches/relay_floor.py serve --listen PORT --upstream HOST:PORT   # the asyncio relay alone
    benches/native_relay/target/release/native-relay --listen PORT --upstream HOST:PORT [--mode epoll]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import uvloop
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (
    CLIENT_CORE,
    CLK_TCK,
    GATEWAY_CORE,
    MASTER_KEY,
    Service,
    _stat_fields,
    core_busy_seconds,
    free_port,
    log,
    pinning_available,
    process_tree,
    python_env,
    write_results_section,
)

from mmproxy.bench.loadgen import LoadGen, chat_request, run_sync

DELAY_MS = 2.0
SHORT, LONG = 20, 100
NATIVE_DIR = Path(__file__).resolve().parent / "native_relay"
NATIVE_BIN = NATIVE_DIR / "target" / "release" / "native-relay"
NATIVE_MODES = {"threads": "native relay (2 blocking threads per pair)", "epoll": "native relay (one epoll thread)"}


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


def native_relay() -> Path | None:
    """The native relay binary, (re)built with cargo when cargo is there; None (with why) if unavailable."""
    cargo = shutil.which("cargo")
    if cargo is None:
        if NATIVE_BIN.exists():
            return NATIVE_BIN
        log("relay_floor: cargo not found and no native relay binary; skipping the native relay rows")
        return None
    build = subprocess.run(
        [cargo, "build", "--release", "--quiet", "--manifest-path", str(NATIVE_DIR / "Cargo.toml")],
        capture_output=True, text=True,
    )
    if build.returncode != 0 or not NATIVE_BIN.exists():
        log(f"relay_floor: building the native relay failed; skipping its rows:\n{build.stderr[-2000:]}")
        return None
    return NATIVE_BIN


def _user_system_seconds(pids: list[int]) -> tuple[float, float]:
    """(utime, stime) summed over the processes, all their threads, in seconds."""
    user = system = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def cpu_split_per_request(svc: Service, model: str, *, count: int, api_key: str) -> tuple[float, float, float]:
    """(user, system, foreign) CPU seconds per streamed request over a window of ``count`` requests.

    user + system is what ``run.cpu_per_request`` measures (utime + stime of the process tree);
    foreign is the gateway core's busy time not explained by ``svc``: other load disturbing the figure.
    """
    pids = process_tree(svc.pid)
    marks: list[tuple[float, float, float]] = []

    def mark() -> None:
        marks.append((*_user_system_seconds(pids), core_busy_seconds().get(GATEWAY_CORE, 0.0)))

    gen = LoadGen(
        "127.0.0.1", svc.port, [chat_request(model, stream=True, api_key=api_key)],
        concurrency=32, count=count, warmup=1.0, on_measure_start=mark, on_measure_end=mark,
    )
    summary = run_sync(gen).summary()
    if summary["errors"]:
        raise RuntimeError(f"{svc.name} {model}: {summary['errors']} errors: {summary.get('error_sample')}")
    (u0, s0, b0), (u1, s1, b1) = marks
    n = summary["requests"]
    return (u1 - u0) / n, (s1 - s0) / n, max(0.0, (b1 - b0) - (u1 - u0) - (s1 - s0)) / n


def measure(args: argparse.Namespace) -> int:
    pin = pinning_available()
    if pin:
        os.sched_setaffinity(0, {CLIENT_CORE})  # the load generator shares core 1 with the simulator
    native = native_relay()
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
        natives: dict[str, dict[int, Service]] = {}
        for mode in NATIVE_MODES if native is not None else ():
            for chunks, sim in sims.items():
                port = free_port()
                natives.setdefault(mode, {})[chunks] = Service(f"native-{mode}-{chunks}", [
                    str(native), "--listen", str(port), "--upstream", f"127.0.0.1:{sim.port}", "--mode", mode,
                ], port=port, core=gw_core, env=python_env(), logdir=logdir)
                services.append(natives[mode][chunks])
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
            for relay_svc in [floors[chunks], *(by_len[chunks] for by_len in natives.values())]:
                relay_svc.wait_ready(f"http://127.0.0.1:{relay_svc.port}/_sim/health", 20)
        gateway.wait_ready(f"http://127.0.0.1:{gw_port}/health/readiness", 30)

        def per_event(run_one: dict[int, tuple[Service, str, str]]) -> list[float]:
            """[short, long, per event, user per event, system per event, foreign per event] in seconds."""
            cost = {}
            for chunks, (svc, model, key) in run_one.items():
                rounds = sorted(
                    (cpu_split_per_request(svc, model, count=args.streams, api_key=key) for _ in range(args.rounds)),
                    key=lambda r: r[0] + r[1],
                )
                cost[chunks] = rounds[len(rounds) // 2]  # the round with the median total, split kept whole
            (su, ss, sf), (lu, ls, lf) = cost[SHORT], cost[LONG]
            per = LONG - SHORT
            return [su + ss, lu + ls, (lu + ls - su - ss) / per, (lu - su) / per, (ls - ss) / per, (lf - sf) / per]

        rows = {
            "floor (blind asyncio byte relay)": per_event({c: (floors[c], f"relay-{c}", "sk-x") for c in sims}),
            **{
                NATIVE_MODES[mode]: per_event({c: (by_len[c], f"relay-{c}", "sk-x") for c in sims})
                for mode, by_len in natives.items()
            },
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
        f"| relay | CPU per {SHORT}-event stream | CPU per {LONG}-event stream | µs per event "
        "| of which user | of which system | other load on the relay core, µs per event |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (short, long, event, user, system, foreign) in rows.items():
        lines.append(
            f"| {name} | {short * 1e6:.0f} µs | {long * 1e6:.0f} µs | {event * 1e6:.2f} "
            f"| {user * 1e6:.2f} | {system * 1e6:.2f} | {foreign * 1e6:.2f} |"
        )
    if native is None:
        lines += ["", "Native relay rows skipped: cargo or the build was unavailable (see the log above)."]
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
