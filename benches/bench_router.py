"""The router's added CPU per request, end to end: plain forwarding vs full routing on the same requests.

"full" turns on everything the router does per request: 200 routing rules of which only the last
(the default) matches, so every rule is evaluated; input-token counting for them and for tpm limits;
rpm/tpm limits on every deployment (high enough never to refuse); the least-busy strategy over a
three-deployment group. The difference in gateway CPU per non-streaming request is what routing costs.

    python benches/bench_router.py [--requests 20000] [--rounds 3] [--no-update-results]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import tempfile
from pathlib import Path

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


def _rules(n: int) -> list[dict]:
    """``n - 1`` rules that never match this benchmark's request, then a default."""
    kinds = [
        lambda i: {"keywords_any": [f"invoice-{i}", f"refund {i}"]},
        lambda i: {"regex": rf"(?i)\bticket-{i}\b"},
        lambda i: {"tags_any": [f"team-{i}"]},
        lambda i: {"has_tools": True, "min_tokens": 1000 + i},
        lambda i: {"keywords_all": [f"alpha{i}", "beta"], "in": "system"},
    ]
    rules = [{"name": f"r{i}", "when": kinds[i % len(kinds)](i), "route": {"model": "g"}} for i in range(n - 1)]
    return [*rules, {"name": "default", "route": {"model": "g"}}]


def _config(sim_port: int, full: bool) -> dict:
    base = f"http://127.0.0.1:{sim_port}/v1"
    limits = {"rpm": 10_000_000, "tpm": 10_000_000_000} if full else {}
    model_list = [
        {"model_name": "g", "litellm_params": {"model": f"openai/bench-{i}", "api_base": base, **limits}}
        for i in range(3 if full else 1)
    ]
    config: dict = {"model_list": model_list, "general_settings": {"master_key": MASTER_KEY}}
    if full:
        config["routing_rules"] = _rules(200)
        config["router_settings"] = {"routing_strategy": "least-busy"}
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--update-results", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    pin = pinning_available()
    logdir = Path(tempfile.mkdtemp(prefix="mmproxy-router-"))
    sim_port = free_port()
    sim = Service("simulator", [sys.executable, "-m", "mmproxy.simulator", "--port", str(sim_port), "--record", "0"],
                  port=sim_port, core=CLIENT_CORE if pin else None, env=python_env(), logdir=logdir)
    results: dict[str, float] = {}
    try:
        sim.wait_ready(f"http://127.0.0.1:{sim_port}/_sim/health", 20)
        for label, full in (("plain forwarding", False), ("full routing", True)):
            config = logdir / f"{'full' if full else 'plain'}.yaml"
            config.write_text(yaml.safe_dump(_config(sim_port, full)))
            port = free_port()
            gateway = Service(label, [sys.executable, "-m", "mmproxy", "serve", "--config", str(config),
                                      "--host", "127.0.0.1", "--port", str(port)],
                              port=port, core=GATEWAY_CORE if pin else None, env=python_env(), logdir=logdir)
            try:
                gateway.wait_ready(f"http://127.0.0.1:{port}/health/readiness", 30)
                results[label] = statistics.median(
                    cpu_per_request(gateway, "g", stream=False, count=args.requests, concurrency=64)
                    for _ in range(args.rounds)
                )
            finally:
                gateway.stop()
            print(f"{label}: {results[label] * 1e6:.1f} µs per request", flush=True)
    finally:
        sim.stop()
    plain, full = results["plain forwarding"], results["full routing"]
    body = "\n".join([
        f"Command: `python benches/bench_router.py --requests {args.requests} --rounds {args.rounds}`",
        "",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Python {platform.python_version()}; gateway "
        f"on core {GATEWAY_CORE}, simulator and load generator on core {CLIENT_CORE}; non-streaming, concurrency 64; "
        f"median of {args.rounds} rounds. \"Full routing\": 200 rules (only the last matches), token counting, "
        "rpm/tpm limits, least-busy over 3 deployments.",
        "",
        "| configuration | gateway CPU per request |",
        "|---|---|",
        f"| plain forwarding | {plain * 1e6:.1f} µs |",
        f"| full routing | {full * 1e6:.1f} µs |",
        f"| router's added CPU | {(full - plain) * 1e6:+.1f} µs |",
    ])
    print(body)
    if args.update_results:
        write_results_section(body, section="## Router overhead")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
