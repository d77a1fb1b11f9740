"""``mmproxy bench URL``: load-test any OpenAI-compatible or Anthropic endpoint, optionally against a second one.

The command plans the loads (a fixed concurrency, a list of request rates, or a sweep whose rates are
fractions of the throughput a concurrency probe found), runs each load on every target in alternating
rounds so drift of a shared machine hits both alike, and hands the merged results to the report.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from mmproxy import __version__
from mmproxy.bench.figures import Load, figures
from mmproxy.bench.loadgen import LoadGen, Request, Result
from mmproxy.bench.report import Run, compare_pairs, require_plotting, tables, write_report
from mmproxy.bench.workload import (
    DIALECTS,
    Endpoint,
    WorkloadError,
    build_requests,
    endpoint,
    generated_prompts,
    load_prompts,
)

API_KEY_ENV = "MMPROXY_BENCH_API_KEY"
PROGRESS_EVERY_S = 0.25
DEFAULT_DURATION_S = 10.0
PROBE_MAX_S = 5.0  # a sweep's concurrency probe only has to find the peak throughput


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = commands.add_parser(
        "bench", help="load-test an OpenAI-compatible or Anthropic endpoint (mmproxy, LiteLLM, a provider, ...)",
        description="Load-test an OpenAI-compatible chat completions or Anthropic Messages endpoint.")
    bench.add_argument("url", help="server, API root or endpoint URL, e.g. http://127.0.0.1:4000")
    bench.add_argument("--api", choices=sorted(DIALECTS), default="openai",
                       help="openai: /v1/chat/completions; anthropic: /v1/messages (default openai)")
    bench.add_argument("--model", required=True, help="model name sent in every request")
    bench.add_argument("--api-key", help=f"the target's key (default: ${API_KEY_ENV}); never printed")
    load = bench.add_argument_group("load")
    load.add_argument("-c", "--concurrency", type=int, default=16,
                      help="requests in flight (closed loop; a sweep's probe) (default 16)")
    size = load.add_mutually_exclusive_group()
    size.add_argument("-d", "--duration", type=float,
                      help=f"seconds measured per target and load (default {DEFAULT_DURATION_S:g})")
    size.add_argument("-n", "--requests", type=int, help="requests measured per target and load")
    rate = load.add_mutually_exclusive_group()
    rate.add_argument("--rate", help="open loop: comma-separated request rates (req/s), one step each")
    rate.add_argument("--rate-sweep", type=int, nargs="?", const=5, metavar="STEPS",
                      help="probe the maximum throughput at -c (for -d, at most 5 s), then STEPS rates up to it "
                           "(default 5)")
    load.add_argument("--arrivals", choices=("poisson", "constant"), default="poisson",
                      help="open-loop arrival times (default poisson)")
    load.add_argument("--max-in-flight", type=int, default=1000,
                      help="open loop: arrivals beyond this many requests in flight are dropped, and counted "
                           "(default 1000)")
    load.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds before each window (default 1)")
    load.add_argument("--timeout", type=float, default=60.0,
                      help="seconds before a request counts as timed out, and an unreachable target as failed "
                           "(default 60)")
    load.add_argument("--rounds", type=int, help="windows per target and load, alternating targets "
                      "(default 1; 3 with --compare); -d/-n is split between them")
    prompts = bench.add_argument_group("prompts")
    prompts.add_argument("--prompts", type=Path, metavar="FILE",
                         help="JSONL: chat message lists, {'messages': ...}, or text lines")
    prompts.add_argument("--input-tokens", type=int, default=128, help="generated prompts' input tokens (128)")
    prompts.add_argument("--output-tokens", type=int, default=128, help="max_tokens of every request (128)")
    prompts.add_argument("--stream", action="store_true", help="stream replies: TTFT, ITL, tokens/s")
    prompts.add_argument("--simulator", action="store_true",
                         help="the upstream is `mmproxy simulate`: ask it for exactly --output-tokens tokens")
    compare = bench.add_argument_group("compare")
    compare.add_argument("--compare", metavar="URL2", help="a second target (B), run interleaved with URL (A)")
    compare.add_argument("--compare-api-key", help="B's key (default: the same as A's)")
    compare.add_argument("--compare-model", help="B's model (default: --model)")
    out = bench.add_argument_group("output")
    out.add_argument("--json", type=Path, metavar="FILE", help="write every figure as JSON")
    out.add_argument("--report", type=Path, metavar="FILE", help="write a report: .png plots or .html page")
    out.add_argument("--quiet", action="store_true", help="no progress line")


class Unreachable(Exception):
    """A target that refused every connection for ``--timeout`` seconds."""


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    endpoint: Endpoint
    model: str
    requests: list[Request]


def run(args: argparse.Namespace) -> int:
    """Exit status: 0, 1 when a run had no successful request, 2 for unusable settings."""
    try:
        targets, loads = _plan(args)
        if args.report is not None:
            require_plotting(args.report)
    except (WorkloadError, ValueError) as exc:
        print(f"mmproxy bench: {exc}", file=sys.stderr)
        return 2
    import uvloop

    progress = sys.stderr if sys.stderr.isatty() and not args.quiet else None
    try:
        results, probe_loads = uvloop.run(_execute(args, targets, loads, progress))
    except KeyboardInterrupt:
        print("\nmmproxy bench: interrupted", file=sys.stderr)
        return 130
    except Unreachable as exc:
        print(f"mmproxy bench: {exc}", file=sys.stderr)
        return 1
    runs = [Run(name, load, figures(result), [t * 1e3 for t in result.latencies], probe=load in probe_loads)
            for (name, load), result in results.items()]
    pairs = compare_pairs(runs)
    all_tables = tables(runs, pairs, {t.name: t.url for t in targets})
    status = 1 if any(run.figures["requests"] == 0 for run in runs) else 0
    try:  # the files first: a closed stdout (| head) must not lose them
        if args.json is not None:
            args.json.write_bytes(orjson.dumps(_document(args, targets, runs, pairs), option=orjson.OPT_INDENT_2))
        if args.report is not None:
            write_report(args.report, runs, all_tables, f"mmproxy bench {' vs '.join(t.url for t in targets)}")
    except OSError as exc:
        print(f"mmproxy bench: cannot write the output: {exc}", file=sys.stderr)
        status = 1
    for table in all_tables:
        print(table.text() + "\n")
    return status


def _plan(args: argparse.Namespace) -> tuple[list[Target], list[Load]]:
    """The targets with their encoded requests, and the loads (a sweep's are known only after its probe)."""
    counts = {"-c": args.concurrency, "--input-tokens": args.input_tokens, "--output-tokens": args.output_tokens,
              "-n": args.requests, "--max-in-flight": args.max_in_flight, "--rounds": args.rounds,
              "--rate-sweep": args.rate_sweep}
    too_small = [flag for flag, value in counts.items() if value is not None and value < 1]
    if too_small:
        raise WorkloadError(f"{', '.join(too_small)} must be at least 1")
    if args.duration is not None and not 0 < args.duration < math.inf:
        raise WorkloadError("-d must be a number of seconds above 0")
    api_key = args.api_key or os.environ.get(API_KEY_ENV)
    prompts = load_prompts(args.prompts) if args.prompts else generated_prompts(args.input_tokens, args.model)
    specs = [("A", args.url, args.model, api_key)]
    if args.compare:
        specs.append(("B", args.compare, args.compare_model or args.model, args.compare_api_key or api_key))
    targets = []
    for name, url, model, key in specs:
        where = endpoint(url, args.api)
        requests = build_requests(args.api, where, model, key, prompts, stream=args.stream,
                                  output_tokens=args.output_tokens, simulator=args.simulator)
        targets.append(Target(name, url, where, model, requests))
    if args.rate:
        try:
            rates = [float(r) for r in args.rate.split(",") if r.strip()]
        except ValueError:
            raise WorkloadError(f"--rate takes comma-separated numbers, not {args.rate!r}") from None
        if not rates or not all(0 < r < math.inf for r in rates):
            raise WorkloadError("--rate values must be positive numbers")
        return targets, [Load(args.max_in_flight, r) for r in rates]
    return targets, [Load(args.concurrency)]


async def _execute(args: argparse.Namespace, targets: list[Target], loads: list[Load],
                   progress: TextIO | None) -> tuple[dict[tuple[str, Load], Result], set[Load]]:
    """Every load on every target, rounds alternating targets; a sweep's rates follow from its probe."""
    results: dict[tuple[str, Load], Result] = {}
    probes: set[Load] = set()
    if args.rate_sweep is not None:
        probe = loads[0]
        probes.add(probe)
        await _measure(args, targets, probe, results, progress, longest=PROBE_MAX_S)
        peak = results[(targets[0].name, probe)].summary()["req_s"]
        if peak <= 0:
            return results, probes
        steps = args.rate_sweep
        loads = [Load(args.max_in_flight, round(peak * k / steps, 2)) for k in range(1, steps + 1)]
    for load in loads:
        await _measure(args, targets, load, results, progress)
    return results, probes


async def _measure(args: argparse.Namespace, targets: list[Target], load: Load,
                   results: dict[tuple[str, Load], Result], progress: TextIO | None, longest: float = math.inf
                   ) -> None:
    """``load`` on every target for -d (at most ``longest`` s) or -n, split into rounds; results merged by target."""
    rounds = args.rounds or (3 if len(targets) > 1 else 1)
    duration = count = None
    if args.requests is not None:
        count = max(1, args.requests // rounds)
    else:
        duration = min(args.duration or DEFAULT_DURATION_S, longest) / rounds
    for round_index in range(rounds):
        order = targets if round_index % 2 == 0 else targets[::-1]
        for target in order:
            where = target.endpoint
            gen = LoadGen(where.host, where.port, target.requests, concurrency=load.concurrency, duration=duration,
                          count=count, warmup=args.warmup, timeout=args.timeout, rate=load.rate,
                          poisson=args.arrivals == "poisson", detail=True, tls=where.tls)
            label = f"{target.name} {load.label}" + (f" round {round_index + 1}/{rounds}" if rounds > 1 else "")
            ticker = asyncio.ensure_future(_show_progress(gen, label, progress)) if progress else None
            try:
                result = await gen.run()
            except OSError as exc:
                raise Unreachable(f"cannot reach {target.url} for {args.timeout:g} s: {exc}") from None
            finally:
                if ticker is not None:
                    ticker.cancel()
                    progress.write("\r\033[K")  # type: ignore[union-attr]
            key = (target.name, load)
            if key in results:
                results[key].merge(result)
            else:
                results[key] = result


async def _show_progress(gen: LoadGen, label: str, out: TextIO) -> None:
    """The live line: requests done, req/s, errors and elapsed time of the window (warm-up until it starts)."""
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        res = gen.result
        if not gen.started:
            line = f"{label}: warming up, {res.sent:,} sent"
        else:
            elapsed = time.perf_counter() - gen.started
            errors = sum(res.errors.values())
            line = (f"{label}: {res.ok + errors:,} done  {res.ok / elapsed if elapsed else 0:,.1f} req/s  "
                    f"{errors:,} errors  {elapsed:.1f} s")
        out.write("\r\033[K" + line)
        out.flush()


def _document(args: argparse.Namespace, targets: list[Target], runs: list[Run],
              pairs: list[tuple[Run, Run, dict[str, float | None]]]) -> dict[str, Any]:
    """The --json document: settings (never the keys), targets, every run's figures, compare ratios."""
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("api_key", "compare_api_key", "command", "url", "compare")}
    return {
        "mmproxy_version": __version__,
        "settings": settings,
        "targets": [{"name": t.name, "url": t.url, "endpoint": t.endpoint.url, "model": t.model} for t in targets],
        "runs": [{"target": r.target, "load": r.load.as_dict(), "probe": r.probe, **r.figures} for r in runs],
        "compare": [{"load": a.load.as_dict(), "ratios_b_over_a": values} for a, _, values in pairs],
    }
