"""Command-line entry: ``python -m mmproxy.simulator`` and the hooks ``mmproxy.cli`` embeds."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson

from .behaviour import KNOB_HELP, KnobError, Knobs
from .server import make_config, serve

_DEFAULT_KNOBS = Knobs()


def _json_arg(value: str) -> dict[str, Any]:
    """``--model-knobs`` takes inline JSON or ``@path`` to a JSON file."""
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict) or not all(isinstance(v, dict) for v in obj.values()):
        raise argparse.ArgumentTypeError('expected {"model": {"knob": value, ...}, ...}')
    return obj


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to ``parser`` (e.g. an ``mmproxy simulator`` subcommand)."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8800, help="0 picks a free port (printed on start)")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on API routes")
    parser.add_argument("--models", default=",".join(make_config().models),
                        help="comma-separated ids listed by GET /v1/models (any model is served)")
    parser.add_argument("--model-knobs", type=_json_arg, default={},
                        help='per-model knob overrides: JSON or @file, e.g. {"gpt-slow": {"ttft_ms": 500}}')
    parser.add_argument("--record", dest="record_limit", type=int, default=1000,
                        help="requests kept for GET /_sim/requests (0 disables recording)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault-rate dice")
    parser.add_argument("--instance", default="sim", help="name shown in system_fingerprint and /_sim/health")
    parser.add_argument("--tls-cert", default=None, help="PEM certificate: serve HTTPS (needs --tls-key)")
    parser.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    parser.add_argument("--replay", default=None, metavar="FILE",
                        help="answer chat requests with the requested model's recorded answer to the prompt, from "
                             "a routing-records JSONL file (prompt, models: {name: {answer, ...}})")
    knobs = parser.add_argument_group("behaviour knobs (server defaults; overridable per model and per request)")
    for f in fields(Knobs):
        default = getattr(_DEFAULT_KNOBS, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            knobs.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=KNOB_HELP[f.name])
        else:
            kind = str if default is None else type(default)
            knobs.add_argument(flag, type=kind, default=default,
                               help=f"{KNOB_HELP[f.name]} (default: {default})")


def build_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The standalone parser; ``add_help=False`` lets it serve as a ``parents=[...]`` template."""
    parser = argparse.ArgumentParser(prog="python -m mmproxy.simulator", add_help=add_help,
                                     description="Fake LLM provider (OpenAI wire format) for tests and benchmarks.")
    add_arguments(parser)
    return parser


async def _serve_until_signal(options: dict[str, Any]) -> None:
    sim = await serve(make_config(**options))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Announce only once signals are handled, so a script may stop us as soon as it reads the line.
    print(f"mmproxy simulator listening on {sim.base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await sim.close()


def run(args: argparse.Namespace) -> None:
    """Run the simulator until SIGINT/SIGTERM (blocking; uses uvloop)."""
    import uvloop

    options = {k: v for k, v in vars(args).items() if k in _OPTION_NAMES}
    try:
        make_config(**options)  # validate before binding
    except (KnobError, TypeError) as exc:
        sys.exit(f"mmproxy simulator: {exc}")
    uvloop.run(_serve_until_signal(options))


_OPTION_NAMES = frozenset({"host", "port", "api_key", "models", "model_knobs", "record_limit", "seed", "instance",
                           "tls_cert", "tls_key", "replay"}
                          | {f.name for f in fields(Knobs)})


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))
