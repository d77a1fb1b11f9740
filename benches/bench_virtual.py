"""Gateway CPU a virtual model adds per sub-call: the aiohttp handler called directly in one process (as in
``bench_request_path.py``), its upstream the simulator in another process on another core, for an ordinary
request and for virtual models that make two sub-calls each — a consensus of two members and a verified answer
(generator + verifier). Added per sub-call = (virtual - 2 * ordinary) / 2: the orchestration (sub-call records,
agreement or verdict parsing, the answer rebuilt in the client's shape), on top of two ordinary calls. The
ordinary call compared with is measured with as many upstream calls in flight: a consensus asks its members at
once, so at client concurrency c it has 2c calls in flight, a verified answer asks one after the other (c).

    python benches/bench_virtual.py [--requests 6400] [--rounds 5] [--no-update-results]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_request_path import MASTER_KEY, _request
from run import Service, free_port, python_env, write_results_section

from mmproxy.config import parse_config
from mmproxy.server.app import Gateway, build_server

# (label, model, client requests in flight as a multiple of --concurrency)
RUNS = (("ordinary", "sim-fast", 1), ("ordinary, twice as many in flight", "sim-fast", 2),
        ("consensus of two", "agreed", 1), ("verified (generator + verifier)", "checked", 1))
ACCEPT = '{"verdict": "accept", "reasons": [], "severity": "none"}'


async def measure(sim_port: int, requests: int, rounds: int, concurrency: int) -> dict[str, list[float]]:
    base = f"http://127.0.0.1:{sim_port}/v1"

    def deployment(name: str) -> dict:
        return {"model_name": name, "litellm_params": {"model": f"openai/{name}", "api_base": base,
                                                        "api_key": "sk-upstream"}}

    config = parse_config({
        "model_list": [deployment("sim-fast"), deployment("sim-other"), deployment("sim-verifier"),
                       {"model_name": "agreed", "consensus": {"members": ["sim-fast", "sim-other"]}},
                       {"model_name": "checked", "verify": {"generator": "sim-fast", "verifier": "sim-verifier"}}],
        "general_settings": {"master_key": MASTER_KEY, "disable_spend_logs": True, "disable_metrics": True},
    })
    gateway = Gateway(config)
    await gateway.start()
    handler = build_server(gateway).request_handler
    loop = asyncio.get_running_loop()
    out: dict[str, list[float]] = {label: [] for label, _, _ in RUNS}
    question = [{"role": "user", "content": "How many legs do 3 cats have?"}]
    bodies = {model: orjson.dumps({"model": model, "messages": question, "max_tokens": 16}) for _, model, _ in RUNS}
    try:
        for body in bodies.values():  # warm-up: connections, caches
            for _ in range(10):
                await asyncio.gather(*(handler(_request(body, loop)) for _ in range(2 * concurrency)))
        for _ in range(rounds):
            for label, model, factor in RUNS:  # interleaved, so drift hits all alike
                width = concurrency * factor
                waves = [[_request(bodies[model], loop) for _ in range(width)] for _ in range(requests // width)]
                gc.collect()
                gc.freeze()  # the prebuilt requests (mock objects) would make every garbage collection slow
                start = time.process_time()
                for wave in waves:
                    for response in await asyncio.gather(*(handler(request) for request in wave)):
                        assert response.status == 200, response.status
                out[label].append((time.process_time() - start) / (len(waves) * width) * 1e6)
                gc.unfreeze()
    finally:
        await gateway.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=6400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-update-results", action="store_true")
    args = parser.parse_args()
    sim_port = free_port()
    logdir = Path(tempfile.mkdtemp(prefix="mmproxy-virtual-"))
    knobs = orjson.dumps({"sim-verifier": {"content": ACCEPT}}).decode()
    sim = Service("simulator", [sys.executable, "-m", "mmproxy.simulator", "--port", str(sim_port), "--record", "0",
                                "--content", "3 cats have 12 legs. #### 12", "--model-knobs", knobs],
                  port=sim_port, core=1, env=python_env(), logdir=logdir)
    try:
        sim.wait_ready(f"http://127.0.0.1:{sim_port}/v1/models", 30)
        os.sched_setaffinity(0, {0})
        figures = uvloop.run(measure(sim_port, args.requests, args.rounds, args.concurrency))
    finally:
        sim.stop()
    median = {label: statistics.median(values) for label, values in figures.items()}
    lines = [f"`python benches/bench_virtual.py --requests {args.requests} --rounds {args.rounds} --concurrency "
             f"{args.concurrency}` ({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; gateway CPU per client "
             f"request, median of {args.rounds} interleaved rounds)", "",
             "| model | client requests in flight | CPU per request | added per sub-call |", "|---|---|---|---|"]
    baseline = {"consensus of two": "ordinary, twice as many in flight",
                "verified (generator + verifier)": "ordinary"}
    for label, _, factor in RUNS:
        added = "—"
        if label in baseline:
            added = f"{(median[label] - 2 * median[baseline[label]]) / 2:.1f} µs (vs {baseline[label]})"
        lines.append(f"| {label} | {args.concurrency * factor} | {median[label]:.1f} µs | {added} |")
    body = "\n".join(lines)
    print(body)
    if not args.no_update_results:
        write_results_section(body, section="## Virtual models: gateway CPU per sub-call")


if __name__ == "__main__":
    main()
