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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import CLIENT_CORE, GATEWAY_CORE, MASTER_KEY, gateway_cpu_by_config, write_results_section


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
    results = gateway_cpu_by_config(
        {"plain forwarding": lambda port: _config(port, False), "full routing": lambda port: _config(port, True)},
        requests=args.requests, rounds=args.rounds)
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
