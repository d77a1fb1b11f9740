"""What accounting adds per request, end to end: the spend ledger and the metrics on vs off.

Gateways on the same simulator, measured in one run: "off" (master key only, ledger and metrics
disabled), "ledger (SQLite) + metrics" (the default: one SQLite row and one metrics observation per
request, cost computed from the usage), "virtual key with a budget" (the same, authenticated with a
virtual key that has a budget, so every request also hashes the key, reserves its estimated cost and
settles it), with ``--postgres-url`` the ledger on PostgreSQL, and with ``--redis-url`` the virtual key's
limits and budget counted in Redis (``router_settings.redis_url``: one pipelined round trip to admit, one to
settle). Non-streaming requests at concurrency 64; gateway CPU per request is the median over interleaved rounds.

    python benches/bench_accounting.py [--requests 20000] [--rounds 3] [--postgres-url URL] [--redis-url URL]
                                       [--no-update-results]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import CLIENT_CORE, GATEWAY_CORE, MASTER_KEY, gateway_cpu_by_config, machine, write_results_section

OFF, ON, KEYED = "accounting off", "ledger (SQLite) + metrics", "virtual key with a budget (SQLite)"
PG = "ledger (PostgreSQL) + metrics"
KEYED_REDIS = "virtual key with a budget, counted in Redis (SQLite)"


def _config(sim_port: int, accounting: bool, database_url: str | None = None,
            redis_url: str | None = None) -> dict[str, Any]:
    deployment = {"model_name": "g", "litellm_params": {"model": "openai/bench", "api_base":
                                                        f"http://127.0.0.1:{sim_port}/v1"},
                  "model_info": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}}
    general: dict[str, Any] = {"master_key": MASTER_KEY}
    if not accounting:
        general |= {"disable_spend_logs": True, "disable_metrics": True}
    if database_url:
        general["database_url"] = database_url
    config = {"model_list": [deployment], "general_settings": general}
    if redis_url:
        config["router_settings"] = {"redis_url": redis_url}
    return config


def _prepare(label: str, url: str) -> str:
    if label not in (KEYED, KEYED_REDIS):
        return MASTER_KEY
    request = urllib.request.Request(
        f"{url}/key/generate", data=json.dumps({"max_budget": 1e9, "key_alias": "bench"}).encode(),
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["key"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres-url", help="also measure the ledger on this PostgreSQL database")
    parser.add_argument("--redis-url", help="also measure a virtual key whose budget is counted in this Redis")
    parser.add_argument("--update-results", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    configs = {OFF: lambda port: _config(port, False), ON: lambda port: _config(port, True),
               KEYED: lambda port: _config(port, True)}
    if args.postgres_url:
        configs[PG] = lambda port: _config(port, True, args.postgres_url)
    if args.redis_url:
        configs[KEYED_REDIS] = lambda port: _config(port, True, redis_url=args.redis_url)
    results = gateway_cpu_by_config(configs, requests=args.requests, rounds=args.rounds, prepare=_prepare)
    off = results[OFF]
    rows = [f"| {label} | {cpu * 1e6:.1f} µs | {(cpu - off) * 1e6:+.1f} µs |" for label, cpu in results.items()]
    body = "\n".join([
        f"Command: `python benches/bench_accounting.py --requests {args.requests} --rounds {args.rounds}"
        + (" --postgres-url postgresql://…" if args.postgres_url else "")
        + (" --redis-url redis://…" if args.redis_url else "") + "`"
        + (" (a local PostgreSQL 15 and Redis, default settings)" if args.postgres_url or args.redis_url else ""),
        "",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. {machine()}. Gateway on core {GATEWAY_CORE}, "
        f"simulator and load generator on core {CLIENT_CORE}; non-streaming, concurrency 64; median of "
        f"{args.rounds} rounds, interleaved. The ledger is written in batches by a background task (SQLite: in a "
        "worker thread of the gateway process, so its CPU counts here; PostgreSQL: the client side only).",
        "",
        "| configuration | gateway CPU per request | added by accounting |",
        "|---|---|---|",
        *rows,
        "",
        "Target: accounting adds ≤ 20 µs per request.",
    ])
    print(body)
    if args.update_results:
        write_results_section(body, section="## Accounting overhead")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
