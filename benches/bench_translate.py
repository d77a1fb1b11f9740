"""Stream translation cost: gateway CPU per chunk for each provider wire format vs OpenAI pass-through.

Why end to end: what a user pays for translation is gateway CPU, socket callbacks and framing
included, not the translator function alone. The same OpenAI streaming request goes through the
gateway to the simulator in four wire formats (OpenAI pass-through, Anthropic, Gemini, Ollama)
with 20 and 100 chunks per stream; chunks arrive back to back, so the difference between the two
lengths, divided by 80, is the per-chunk cost without per-wake-up kernel cost. "Added" is that
minus the pass-through's per-chunk cost. Two more rows translate on the client side instead: the
Anthropic Messages API and OpenAI's Responses API asked of the same OpenAI upstream.

    python benches/bench_translate.py [--streams 3000] [--rounds 3] [--no-update-results]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import orjson
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

from mmproxy.bench.loadgen import Request

FORMATS = {  # label -> (model prefix, api_base suffix on the simulator's root)
    "OpenAI (pass-through)": ("openai", "/v1"),
    "Anthropic": ("anthropic", ""),
    "Gemini": ("gemini", "/v1beta"),
    "Ollama": ("ollama_chat", ""),
}
SHORT, LONG = 20, 100
# label -> (path, body without model, the event that ends a whole stream): client APIs the gateway translates to.
INBOUND = {
    "Anthropic Messages API in, OpenAI upstream": (
        "/v1/messages", {"max_tokens": 256, "messages": [{"role": "user", "content": "Say hello."}], "stream": True},
        b"message_stop"),
    "OpenAI Responses API in, OpenAI upstream": (
        "/v1/responses", {"input": "Say hello.", "max_output_tokens": 256, "stream": True}, b"response.completed"),
}


def _inbound(path: str, body: dict, marker: bytes, model: str) -> Request:
    return Request(orjson.dumps({"model": model, **body}), stream=True, path=path, end_marker=marker,
                   headers=(("Authorization", f"Bearer {MASTER_KEY}"),))


def _config(sim_port: int) -> dict:
    root = f"http://127.0.0.1:{sim_port}"
    model_list = []
    for prefix, suffix in FORMATS.values():
        for chunks in (SHORT, LONG):
            model_list.append({
                "model_name": f"{prefix}-{chunks}",
                "litellm_params": {"model": f"{prefix}/sim-{chunks}", "api_base": root + suffix, "api_key": "sk-sim"},
            })
    return {"model_list": model_list, "general_settings": {"master_key": MASTER_KEY}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=3000, help="streams per measured window")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians")
    parser.add_argument("--update-results", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    pin = pinning_available()
    logdir = Path(tempfile.mkdtemp(prefix="mmproxy-translate-"))
    sim_port, gw_port = free_port(), free_port()
    knobs = {f"sim-{n}": {"chunks": n, "tokens": n} for n in (SHORT, LONG)}
    sim = Service("simulator", [sys.executable, "-m", "mmproxy.simulator", "--port", str(sim_port), "--record", "0",
                                "--model-knobs", orjson.dumps(knobs).decode()],
                  port=sim_port, core=CLIENT_CORE if pin else None, env=python_env(), logdir=logdir)
    config = logdir / "config.yaml"
    config.write_text(yaml.safe_dump(_config(sim_port)))
    gateway = Service("mmproxy", [sys.executable, "-m", "mmproxy", "serve", "--config", str(config),
                                  "--host", "127.0.0.1", "--port", str(gw_port)],
                      port=gw_port, core=GATEWAY_CORE if pin else None, env=python_env(), logdir=logdir)
    rows = []
    try:
        sim.wait_ready(f"http://127.0.0.1:{sim_port}/_sim/health", 20)
        gateway.wait_ready(f"http://127.0.0.1:{gw_port}/health/readiness", 30)
        for label, (prefix, _) in FORMATS.items():
            short, long = (
                statistics.median(
                    cpu_per_request(gateway, f"{prefix}-{n}", stream=True, count=args.streams, concurrency=16,
                                    warmup=0.5)
                    for _ in range(args.rounds)
                )
                for n in (SHORT, LONG)
            )
            rows.append((label, short, long, (long - short) / (LONG - SHORT)))
            print(f"{label}: {short * 1e6:.0f} µs / {SHORT}-chunk stream, {long * 1e6:.0f} µs / {LONG}-chunk stream, "
                  f"{rows[-1][3] * 1e6:.2f} µs per chunk", flush=True)
        for label, (path, body, marker) in INBOUND.items():
            short, long = (
                statistics.median(
                    cpu_per_request(gateway, f"openai-{n}", stream=True, count=args.streams, concurrency=16,
                                    warmup=0.5, request=_inbound(path, body, marker, f"openai-{n}"))
                    for _ in range(args.rounds)
                )
                for n in (SHORT, LONG)
            )
            rows.append((label, short, long, (long - short) / (LONG - SHORT)))
            print(f"{label}: {rows[-1][3] * 1e6:.2f} µs per chunk", flush=True)
    finally:
        gateway.stop()
        sim.stop()
    base = rows[0][3]
    lines = [
        f"Command: `python benches/bench_translate.py --streams {args.streams} --rounds {args.rounds}`",
        "",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {platform.processor() or 'x86_64'}, "
        f"Python {platform.python_version()}; gateway on core {GATEWAY_CORE}, simulator and load generator on core "
        f"{CLIENT_CORE}; concurrency 16; chunks back to back; median of {args.rounds} rounds.",
        "",
        f"| wire format (upstream, or client API) | CPU per {SHORT}-chunk stream | CPU per {LONG}-chunk stream "
        "| µs per chunk "
        "| added by translation, µs per chunk |",
        "|---|---|---|---|---|",
    ]
    for label, short, long, per_chunk in rows:
        added = "—" if per_chunk is base else f"{(per_chunk - base) * 1e6:+.2f}"
        lines.append(f"| {label} | {short * 1e6:.0f} µs | {long * 1e6:.0f} µs | {per_chunk * 1e6:.2f} | {added} |")
    body = "\n".join(lines)
    print(body)
    if args.update_results:
        write_results_section(body, section="## Stream translation")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
