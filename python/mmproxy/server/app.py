"""Build the aiohttp application and run it in one or several worker processes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

import uvloop
from aiohttp import web

from mmproxy.config import Config
from mmproxy.inbound.anthropic import anthropic_error
from mmproxy.server.handlers import Gateway

log = logging.getLogger("mmproxy")

_GATEWAY = web.AppKey("gateway", Gateway)


def build_app(config: Config) -> web.Application:
    gateway = Gateway(config)
    app = web.Application(client_max_size=config.max_request_bytes)
    app[_GATEWAY] = gateway
    guarded = gateway.guarded
    chat = guarded(gateway.chat_completions)
    embeddings = guarded(gateway.embeddings)
    models = guarded(gateway.models)
    messages = guarded(gateway.messages, anthropic_error)
    routes = [
        ("POST", "/v1/chat/completions", chat),
        ("POST", "/chat/completions", chat),
        ("POST", "/v1/embeddings", embeddings),
        ("POST", "/embeddings", embeddings),
        ("POST", "/v1/messages", messages),
        ("GET", "/v1/models", models),
        ("GET", "/models", models),
        ("GET", "/health/liveliness", gateway.liveliness),
        ("GET", "/health/readiness", gateway.readiness),
    ]
    seen: set[str] = set()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    for _, path, _ in routes:
        if path not in seen:
            seen.add(path)
            app.router.add_route("*", path, gateway.method_not_allowed)
    app.router.add_route("*", "/{tail:.*}", gateway.not_found)

    async def on_startup(app: web.Application) -> None:
        await gateway.start()

    async def on_cleanup(app: web.Application) -> None:
        await gateway.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def serve(config: Config, host: str, port: int, workers: int) -> None:
    """Run the gateway until SIGINT/SIGTERM; ``workers`` > 1 forks processes sharing the port."""
    if workers <= 1:
        _run_worker(config, host, port, reuse_port=False, announce=True)
        return
    if port == 0:
        # Pick the port once so every worker binds the same one with SO_REUSEPORT.
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    children: list[int] = []
    for index in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                _run_worker(config, host, port, reuse_port=True, announce=index == 0)
            finally:
                os._exit(0)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    sys.exit(status)


def _run_worker(config: Config, host: str, port: int, *, reuse_port: bool, announce: bool) -> None:
    uvloop.run(_serve_forever(config, host, port, reuse_port, announce))


async def _serve_forever(config: Config, host: str, port: int, reuse_port: bool, announce: bool) -> None:
    app = build_app(config)
    # handler_cancellation: a client that disconnects cancels its handler, which aborts the upstream call.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if announce:
        server = site._server
        bound = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port
        gateway = app[_GATEWAY]
        print(
            f"mmproxy listening on http://{host}:{bound} "
            f"({len(config.deployments)} deployments, {len(gateway.router.groups)} models, pid {os.getpid()})",
            flush=True,
        )
    await stop.wait()
    await runner.cleanup()
