"""Build the aiohttp server and run it in one or several worker processes."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from mmproxy.batches.api import BatchAPI
from mmproxy.batches.messages_api import MessageBatchAPI
from mmproxy.config import Config
from mmproxy.inbound.anthropic import anthropic_error
from mmproxy.pipeline.apis.chat import ChatCompletions
from mmproxy.pipeline.apis.count_tokens import CountTokens
from mmproxy.pipeline.apis.embeddings import Embeddings
from mmproxy.pipeline.apis.messages import Messages
from mmproxy.pipeline.apis.responses import Responses
from mmproxy.pipeline.call import Call
from mmproxy.pipeline.pipeline import Handler
from mmproxy.server.admin import Admin
from mmproxy.server.gateway import Gateway, StartupError
from mmproxy.server.handlers import Handlers
from mmproxy.server.teams import Teams
from mmproxy.server.users import Users
from mmproxy.ui.routes import Dashboard

log = logging.getLogger("mmproxy")

def build_server(gateway: Gateway) -> web.Server:
    """aiohttp's low-level server with a dict lookup for routing.

    ``web.Application`` (router, match info, middleware chain, signals) costs about 35 µs of CPU
    per request at concurrency 1 on the benchmark machine; the gateway has ten fixed routes.
    """
    pipeline = gateway.pipeline
    guarded = pipeline.handler
    chat = pipeline.api_handler(ChatCompletions())
    embeddings = pipeline.api_handler(Embeddings())
    responses = pipeline.api_handler(Responses())
    count_tokens = CountTokens()

    async def count(request: web.BaseRequest, call: Call) -> web.StreamResponse:
        return await count_tokens.serve(pipeline, request, call)

    own = Handlers(gateway)
    models = guarded(own.models)
    model_info = guarded(own.model_info)
    routes: dict[tuple[str, str], Handler] = {
        ("POST", "/v1/chat/completions"): chat,
        ("POST", "/chat/completions"): chat,
        ("POST", "/v1/embeddings"): embeddings,
        ("POST", "/embeddings"): embeddings,
        ("POST", "/v1/messages"): pipeline.api_handler(Messages()),
        ("POST", "/v1/responses"): responses,
        ("POST", "/responses"): responses,
        ("POST", "/v1/messages/count_tokens"): guarded(count, count_tokens.render_error),
        ("GET", "/v1/models"): models,
        ("GET", "/models"): models,
        ("GET", "/model/info"): model_info,
        ("GET", "/v1/model/info"): model_info,
        ("GET", "/health/liveliness"): own.liveliness,
        ("GET", "/health/readiness"): own.readiness,
        ("GET", "/health"): guarded(own.health_report),
        ("GET", "/openapi.json"): own.openapi,
    }
    admin = Admin(gateway)
    routes.update({
        ("POST", "/key/generate"): guarded(admin.key_generate),
        ("GET", "/key/info"): guarded(admin.key_info),
        ("POST", "/key/update"): guarded(admin.key_update),
        ("POST", "/key/delete"): guarded(admin.key_delete),
        ("GET", "/key/list"): guarded(admin.key_list),
        ("GET", "/spend/logs"): guarded(admin.spend_logs),
        ("GET", "/spend/report"): guarded(admin.spend_report),
        ("POST", "/v1/feedback"): guarded(admin.feedback),
        ("POST", "/feedback"): guarded(admin.feedback),
        ("GET", "/metrics"): guarded(admin.metrics),
    })
    teams, users = Teams(gateway), Users(gateway)
    routes.update({
        ("POST", "/team/new"): guarded(teams.new),
        ("GET", "/team/info"): guarded(teams.info),
        ("POST", "/team/update"): guarded(teams.update),
        ("POST", "/team/delete"): guarded(teams.delete),
        ("GET", "/team/list"): guarded(teams.list),
        ("POST", "/user/new"): guarded(users.new),
        ("GET", "/user/info"): guarded(users.info),
        ("POST", "/user/update"): guarded(users.update),
        ("POST", "/user/delete"): guarded(users.delete),
        ("GET", "/user/list"): guarded(users.list),
    })
    batches = BatchAPI(pipeline)
    routes.update({
        ("POST", "/v1/files"): guarded(batches.upload_file),
        ("POST", "/v1/batches"): guarded(batches.create_batch),
        ("GET", "/v1/batches"): guarded(batches.list_batches),
    })
    batch_item = guarded(batches.item)  # /v1/files/{id}[/content], /v1/batches/{id}[/cancel]
    message_batches = MessageBatchAPI(batches)
    routes.update({
        ("POST", "/v1/messages/batches"): guarded(message_batches.create, anthropic_error),
        ("GET", "/v1/messages/batches"): guarded(message_batches.list, anthropic_error),
    })
    message_batch_item = guarded(message_batches.item, anthropic_error)  # …/{id}[/results|/cancel]
    ui = Dashboard(gateway, admin)
    routes.update({
        ("GET", "/ui"): ui.page,
        ("GET", "/ui/"): ui.page,
        ("POST", "/ui/login"): ui.login,
        ("POST", "/ui/logout"): ui.logout,
        ("GET", "/ui/api/report"): guarded(ui.report),
        ("GET", "/ui/api/decisions"): guarded(ui.decisions),
        ("GET", "/ui/api/live"): guarded(ui.live),
    })
    paths = {path for _, path in routes}

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        handler = routes.get((request.method, request.path))
        if handler is not None:
            return await handler(request)
        if request.path.startswith(("/v1/files/", "/v1/batches/")):
            return await batch_item(request)
        if request.path.startswith("/v1/messages/batches/"):
            return await message_batch_item(request)
        if request.path.startswith("/ui/static/") and request.method == "GET":
            return await ui.static(request)
        if request.method == "GET" and request.path.startswith(("/v1/models/", "/models/")):
            return await models(request)
        if request.path in paths:
            return await own.method_not_allowed(request)
        return await own.not_found(request)

    loop = asyncio.get_running_loop()
    limit = gateway.config.max_request_bytes

    def make_request(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        return web.BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=limit)

    # handler_cancellation: a client that disconnects cancels its handler, which aborts the upstream call.
    # keepalive_timeout also closes a connection that never completes its request line and headers.
    return web.Server(dispatch, request_factory=make_request, handler_cancellation=True, access_log=None,
                      keepalive_timeout=gateway.config.idle_timeout)


def serve(config: Config, host: str, port: int, workers: int) -> None:
    """Run the gateway until SIGINT/SIGTERM; ``workers`` > 1 forks processes that share one listening socket.

    The socket is bound here, once, before any worker starts: a busy port is one clear error for any worker
    count, and without SO_REUSEPORT a second instance cannot silently join the port. The parent is the one PID
    to signal; it restarts a worker that dies and forwards SIGTERM so every worker drains.
    """
    listener = _listen(host, port)
    pid = os.getpid()
    if workers <= 1:
        _run_worker(config, listener, index=0, shared_dir=None, announce_pid=pid)
        return
    # Workers share metrics snapshots here, so a scrape on any one of them sees the whole server.
    shared_dir = Path(tempfile.mkdtemp(prefix="mmproxy-metrics-"))
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def start(index: int) -> None:
        child = os.fork()
        if child == 0:
            code = 0
            try:
                _run_worker(config, listener, index=index, shared_dir=shared_dir, announce_pid=pid)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            finally:
                os._exit(code)
        children[child] = index

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in list(children):
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for index in range(workers):
        start(index)
    status = 0
    started: dict[int, float] = dict.fromkeys(range(workers), time.monotonic())
    while children:
        try:
            child, code = os.wait()
        except ChildProcessError:
            break
        index = children.pop(child, -1)
        exit_code = os.waitstatus_to_exitcode(code)
        if stopping or index < 0:
            status = status or exit_code
            continue
        # A worker that died on its own (killed, crashed): the port would go on at part capacity. Start another
        # in its place, after a pause when it died right after starting (a crash loop must not spin).
        how = f"signal {-exit_code}" if exit_code < 0 else f"exit code {exit_code}"
        quick = time.monotonic() - started[index] < _RESTART_PAUSE_S
        print(f"mmproxy: worker {index} (pid {child}) stopped with {how}; starting another"
              + (f" in {_RESTART_PAUSE_S:g} s" if quick else ""), file=sys.stderr, flush=True)
        if quick:
            time.sleep(_RESTART_PAUSE_S)
        if not stopping:
            started[index] = time.monotonic()
            start(index)
    listener.close()
    shutil.rmtree(shared_dir, ignore_errors=True)
    sys.exit(status)


_RESTART_PAUSE_S = 1.0
_BACKLOG = 1024


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, or a one-line error and exit 1 when the address is taken or cannot be used."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                               flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        print(f"mmproxy: error: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    listener = socket.socket(family, kind, proto)
    try:
        # SO_REUSEADDR only lets a restart bind over connections still in TIME_WAIT; unlike SO_REUSEPORT it does
        # not let another process listen on the same port.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("::", ""):
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(address)
        listener.listen(_BACKLOG)
    except OSError as exc:
        listener.close()
        reason = "the port is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        print(f"mmproxy: error: cannot listen on {host}:{port}: {reason}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    listener.setblocking(False)
    return listener


def _run_worker(config: Config, listener: socket.socket, *, index: int, shared_dir: Path | None,
                announce_pid: int) -> None:
    try:
        uvloop.run(_serve_forever(config, listener, index, shared_dir, announce_pid))
    except StartupError as exc:
        print(f"mmproxy: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


async def _serve_forever(config: Config, listener: socket.socket, index: int, shared_dir: Path | None,
                         announce_pid: int) -> None:
    gateway = Gateway(config, worker=index, shared_dir=shared_dir)
    await gateway.start()
    runner = web.ServerRunner(build_server(gateway))
    await runner.setup()
    site = web.SockSite(runner, listener, backlog=_BACKLOG)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if index == 0:
        host, port = listener.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(
            f"mmproxy listening on http://{shown}:{port} "
            f"({len(config.deployments)} deployments, {len(gateway.router.groups)} models, pid {announce_pid})",
            flush=True,
        )
    await stop.wait()
    await _drain(site, gateway, config.grace_period)
    await runner.cleanup()
    await gateway.stop()


async def _drain(site: web.BaseSite, gateway: Gateway, grace: float) -> None:
    """A graceful shutdown: stop accepting connections, let the requests in flight finish for up to ``grace``
    seconds, then cut the streams still relayed (their clients get an error event) and give their handlers a
    moment to write it. ``runner.cleanup`` then closes what is left."""
    await site.stop()
    gateway.live.close()
    pipeline = gateway.pipeline
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while pipeline.in_flight and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if pipeline.in_flight:
        log.warning("shutdown: %d requests still in flight after %g s; ending their streams",
                    pipeline.in_flight, grace)
        pipeline.forwarder.end_streams()
        deadline = loop.time() + _END_STREAMS_S
        while pipeline.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)


_END_STREAMS_S = 2.0  # after the grace period, for cut streams to send their error event
