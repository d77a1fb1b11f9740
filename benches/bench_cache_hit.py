"""An exact cache hit served end to end, against the same request proxied to the upstream.

Two gateways on the same simulator, measured in one run: "proxied" (no cache: every request goes
upstream) and "exact cache hit" (``litellm_settings.cache: true``; the load generator repeats one
request, so after the first every request is answered from the in-process cache). Gateway CPU per
request at concurrency 64 and latency at concurrency 1; medians over rounds.

    python benches/bench_cache_hit.py [--requests 20000] [--rounds 3] [--no-update-results]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import CLIENT_CORE, GATEWAY_CORE, MASTER_KEY, gateway_cpu_by_config, machine, write_results_section

PROXIED, HIT = "proxied (no cache)", "exact cache hit"


def _config(sim_port: int, cache: bool) -> dict[str, Any]:
    config: dict[str, Any] = {
        "model_list": [{"model_name": "g", "litellm_params": {"model": "openai/bench",
                                                               "api_base": f"http://127.0.0.1:{sim_port}/v1"}}],
        "general_settings": {"master_key": MASTER_KEY},
    }
    if cache:
        config["litellm_settings"] = {"cache": True, "cache_params": {"type": "local"}}
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--update-results", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    configs = {PROXIED: lambda port: _config(port, False), HIT: lambda port: _config(port, True)}
    cpu = gateway_cpu_by_config(configs, requests=args.requests, rounds=args.rounds)
    summaries: dict[str, list[dict[str, Any]]] = {}
    gateway_cpu_by_config(configs, requests=max(args.requests // 10, 1000), rounds=args.rounds, concurrency=1,
                          summaries=summaries)
    p50 = {label: statistics.median(s["p50_ms"] for s in runs) for label, runs in summaries.items()}
    body = "\n".join([
        f"Command: `python benches/bench_cache_hit.py --requests {args.requests} --rounds {args.rounds}`",
        "",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. {machine()}. Gateway on core {GATEWAY_CORE}, "
        f"simulator and load generator on core {CLIENT_CORE}; non-streaming; CPU at concurrency 64, latency at "
        f"concurrency 1; median of {args.rounds} rounds. Ledger and metrics on (the defaults).",
        "",
        "| configuration | gateway CPU per request (c=64) | p50 latency (c=1) |",
        "|---|---|---|",
        *(f"| {label} | {cpu[label] * 1e6:.1f} µs | {p50[label]:.3f} ms |" for label in configs),
        "",
        "Target: an exact hit costs less gateway CPU than a proxied request, and ≤ 100 µs.",
    ])
    print(body)
    if args.update_results:
        write_results_section(body, section="## Cache hit through the gateway")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
