"""The ``mmproxy`` command: ``serve``, ``check``, ``demo``, ``simulate``, ``bench``, ``router train|eval``,
``cascade fit``, ``verify eval`` and ``prices import``."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

from mmproxy import __version__
from mmproxy.config import Config, ConfigError, load_config

DEMO_MASTER_KEY = "sk-mmproxy-demo"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mmproxy", description="High-performance multi-model LLM gateway")
    parser.add_argument("--version", action="version", version=f"mmproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway on a LiteLLM-format config.yaml")
    serve.add_argument("--config", required=True, help="path to config.yaml")
    _add_listen_args(serve, default_port=4000, default_host="0.0.0.0")

    check = commands.add_parser("check", help="check a config.yaml as serve would, without serving: exit 0 when "
                                "it would start, 2 with the errors otherwise")
    check.add_argument("--config", required=True, help="path to config.yaml")

    demo = commands.add_parser("demo", help="run the gateway on the bundled demo config with a simulated provider")
    _add_listen_args(demo, default_port=4000, default_host="127.0.0.1")  # its master key is published
    demo.add_argument("--sim-port", type=int, default=8800, help="port of the provider simulator")

    from mmproxy.simulator import build_parser

    commands.add_parser(
        "simulate", help="run the provider simulator", parents=[build_parser(add_help=False)], add_help=True
    )

    from mmproxy.bench.cli import add_commands as add_bench

    add_bench(commands)

    from mmproxy.smart.cli import add_commands

    add_commands(commands)

    from mmproxy.prices.cli import add_commands as add_price_commands

    add_price_commands(commands)

    args = parser.parse_args(argv)
    offline = args.command in ("router", "cascade", "verify", "prices", "bench")  # their output is the table
    level = getattr(args, "log_level", None)
    logging.basicConfig(level=logging.WARNING if offline else getattr(logging, (level or "info").upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        _serve(_load(args.config), args)
    elif args.command == "check":
        config = _load(args.config)
        models = {d.model_name for d in config.deployments}
        print(f"mmproxy: {args.config} is valid: {len(config.deployments)} deployments, {len(models)} models, "
              f"{len(config.wildcards)} wildcards, {len(config.warnings)} warnings")
    elif args.command == "demo":
        _demo(args)
    elif args.command == "prices":
        from mmproxy.prices.cli import run as run_prices

        run_prices(args)
    elif args.command == "bench":
        from mmproxy.bench.cli import run as run_bench

        raise SystemExit(run_bench(args))
    elif offline:
        from mmproxy.smart.cli import run as run_smart

        run_smart(args)
    else:
        from mmproxy.simulator import run

        run(args)


def _add_listen_args(parser: argparse.ArgumentParser, default_port: int, default_host: str) -> None:
    parser.add_argument("--host", default=default_host, help=f"address to listen on (default {default_host})")
    parser.add_argument("--port", type=int, default=default_port, help=f"port (default {default_port})")
    parser.add_argument("--workers", type=int, default=1, help="worker processes sharing the port (default 1)")
    parser.add_argument("--grace-period", type=float, default=30.0,
                        help="seconds a SIGTERM leaves in-flight requests and streams to finish; streams still "
                             "open then end with an error event (default 30)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info",
                        help="the gateway's log lines shown on stderr (default info)")
    parser.add_argument("--access-log", nargs="?", const="text", choices=("text", "json"), default=None,
                        help="one line per API request on stdout, as key=value text (default) or JSON")


def _load(path: str) -> Config:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"mmproxy: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for warning in config.warnings:
        print(f"mmproxy: warning: {warning}", file=sys.stderr)
    if not config.deployments and not config.wildcards:
        print("mmproxy: warning: model_list has no usable deployment; every model request will fail",
              file=sys.stderr)
    if config.master_key is None:
        print("mmproxy: warning: no general_settings.master_key: anyone who can reach the port may use every model "
              "and the admin endpoints", file=sys.stderr)
    return config


def _serve(config: Config, args: argparse.Namespace) -> None:
    from mmproxy.server.app import serve

    if args.workers < 1:
        print("mmproxy: --workers must be at least 1", file=sys.stderr)
        raise SystemExit(2)
    if not args.grace_period >= 0:
        print("mmproxy: --grace-period must be a number of seconds, 0 or more", file=sys.stderr)
        raise SystemExit(2)
    config.access_log = args.access_log
    config.grace_period = args.grace_period
    serve(config, args.host, args.port, args.workers)


def _demo(args: argparse.Namespace) -> None:
    """Start the simulator as a child process, then the gateway on the bundled demo config."""
    simulator = subprocess.Popen(
        [sys.executable, "-m", "mmproxy.simulator", "--host", "127.0.0.1", "--port", str(args.sim_port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert simulator.stdout is not None
        line = simulator.stdout.readline()
        if "listening" not in line:
            print("mmproxy: the provider simulator did not start", file=sys.stderr)
            raise SystemExit(1)
        root = f"http://127.0.0.1:{args.sim_port}"
        os.environ.update(MMPROXY_DEMO_ROOT=root, MMPROXY_DEMO_OPENAI_BASE=f"{root}/v1",
                          MMPROXY_DEMO_GEMINI_BASE=f"{root}/v1beta")
        config_path = resources.files("mmproxy") / "demo" / "config.yaml"
        config = _load(str(config_path))
        host = "127.0.0.1" if args.host == "0.0.0.0" else args.host
        print(_demo_help(Path(str(config_path)), host, args.port), flush=True)
        _serve(config, args)
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)


def _demo_help(config_path: Path, host: str, port: int) -> str:
    base = f"http://{host}:{port}"
    return f"""
mmproxy demo: simulated provider behind the gateway, config {config_path}
Models: gpt-4o (frontier), gpt-4o-mini (workhorse, 2 deployments), llama-3.1-8b (economy),
        claude-sonnet (Anthropic), gemini-flash (Gemini), llama-local (Ollama),
        text-embedding-3-small (embeddings); "auto" picks one by the demo's routing rules;
        "smart" is the learned router (x-mmproxy-router-choice says which model it chose).
Master key: {DEMO_MASTER_KEY}

  curl {base}/v1/chat/completions -H 'Authorization: Bearer {DEMO_MASTER_KEY}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hello"}}]}}'

  curl {base}/v1/messages -H 'x-api-key: {DEMO_MASTER_KEY}' -H 'Content-Type: application/json' \\
       -d '{{"model": "gemini-flash", "max_tokens": 100, "messages": [{{"role": "user", "content": "Hi"}}]}}'

  from openai import OpenAI
  client = OpenAI(base_url="{base}/v1", api_key="{DEMO_MASTER_KEY}")
  reply = client.chat.completions.create(model="gpt-4o", messages=[{{"role": "user", "content": "Hi"}}])
  answer = client.responses.create(model="claude-sonnet", input="Hi")   # the Responses API, any model

  curl {base}/key/generate -H 'Authorization: Bearer {DEMO_MASTER_KEY}' -d '{{"max_budget": 1, "models": ["auto"]}}'
  curl '{base}/spend/report?group_by=model' -H 'Authorization: Bearer {DEMO_MASTER_KEY}'
  curl {base}/metrics
"""


if __name__ == "__main__":
    main()
