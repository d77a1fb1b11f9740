"""The simulator application: routing, the shared knob/fault pipeline, and ways to run it.

``start_simulator`` runs it inside the caller's event loop, ``run_in_thread`` gives synchronous tests
a private loop, and ``cli.run`` is the blocking process entry point.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable
from dataclasses import fields
from typing import Any, Protocol

from . import anthropic, anthropic_batches, batches, control, gemini, gemini_batches, ollama, openai
from .behaviour import Fault, KnobError, Knobs
from .control import SimConfig, SimState
from .httpserver import HttpProtocol, Reply, Request, protocol_factory
from .replay import Replay

Handler = Callable[["SimApp", Request], Reply]
AuthCheck = Callable[["SimApp", Request], "Reply | None"]
Builder = Callable[["SimApp", dict[str, Any], str, Knobs], Reply]


class WireErrors(Protocol):
    """Error renderers a wire format supplies to ``SimApp.serve_model``."""

    def knob_error(self, exc: KnobError) -> Reply: ...

    def fault_error(self, fault: Fault, model: str) -> Reply: ...


class SimApp:
    """Routes requests to wire-format handlers and applies knobs/faults uniformly."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.state = SimState(config)
        self.connections: set[HttpProtocol] = set()
        self.bearer = b"Bearer " + config.api_key.encode() if config.api_key else b""
        self.replay = Replay.load(config.replay) if config.replay else None
        self.routes: dict[tuple[str, str], tuple[Handler, AuthCheck | None]] = {}
        self.prefix_routes: list[tuple[str, str, Handler, AuthCheck | None]] = []
        openai.register(self)
        anthropic.register(self)
        ollama.register(self)
        gemini.register(self)
        batches.register(self)
        anthropic_batches.register(self)
        gemini_batches.register(self)
        control.register(self)

    def route(self, method: str, path: str, handler: Handler, auth: AuthCheck | None) -> None:
        """``auth`` (if any) runs only when the simulator has an API key."""
        self.routes[(method, path)] = (handler, auth)

    def prefix_route(self, method: str, prefix: str, handler: Handler, auth: AuthCheck | None) -> None:
        self.prefix_routes.append((method, prefix, handler, auth))

    def _lookup(self, method: str, path: str) -> tuple[Handler, AuthCheck | None] | None:
        found = self.routes.get((method, path))
        if found is None:
            for m, prefix, handler, auth in self.prefix_routes:
                if m == method and path.startswith(prefix) and len(path) > len(prefix):
                    return handler, auth
        return found

    def handle(self, req: Request) -> Reply:
        path = req.path
        if len(path) > 1 and path.endswith("/"):
            path = req.path = path.rstrip("/") or "/"
        found = self._lookup(req.method, path)
        if found is None:
            reply = openai.not_found(self, req)
        else:
            handler, auth = found
            denied = auth(self, req) if auth is not None and self.bearer else None
            reply = denied if denied is not None else handler(self, req)
        if not path.startswith("/_sim/"):
            self.state.observe(req, reply)
        return reply

    def abandoned(self) -> None:
        """A client went away while its reply was still being produced (e.g. mid-stream)."""
        self.state.disconnects += 1

    def internal_error(self) -> Reply:
        return openai.error_reply(500, "The simulator failed on this request (see its stderr).", "server_error")

    def serve_model(self, req: Request, body: dict[str, Any], model: str, build: Builder,
                    wire: WireErrors) -> Reply:
        """Knobs -> build the normal reply -> maybe swap in a fault; shared by every wire format.

        Validation errors from ``build`` win over faults so a scripted fault is never spent on a
        request the real provider would have rejected anyway.
        """
        sim = body.get("sim")
        try:
            knobs = self.state.knobs(model, sim)
        except KnobError as exc:
            return wire.knob_error(exc)
        reply = build(self, body, model, knobs)
        if reply.status >= 400:
            return reply
        if reply.stream is None:
            reply.delay = knobs.latency_ms / 1000.0
        fault = self.state.pick_fault(req, model, sim, knobs)
        if fault is None:
            return reply
        if fault.status:
            return wire.fault_error(fault, model)
        return reply.apply_fault(fault)


class Simulator:
    """A running simulator inside the current event loop."""

    def __init__(self, app: SimApp, server: asyncio.Server) -> None:
        self.app = app
        self.server = server
        sockname = server.sockets[0].getsockname()
        self.host: str = sockname[0]
        self.port: int = sockname[1]

    @property
    def state(self) -> SimState:
        """Direct access to faults/records/stats for in-process tests."""
        return self.app.state

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.app.config.tls_cert else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def url(self) -> str:
        """OpenAI-style base URL (with ``/v1``)."""
        return self.base_url + "/v1"

    async def close(self) -> None:
        """Stop listening and drop open connections (streams and hangs are cancelled)."""
        self.server.close()
        for conn in list(self.app.connections):
            conn.abort()
        await self.server.wait_closed()

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


_CONFIG_FIELDS = frozenset(f.name for f in fields(SimConfig)) - {"knobs"}
_KNOB_FIELDS = frozenset(f.name for f in fields(Knobs))


def make_config(host: str = "127.0.0.1", port: int = 0, **options: Any) -> SimConfig:
    """SimConfig from keyword options: SimConfig fields plus any ``Knobs`` field as a server default."""
    unknown = set(options) - _CONFIG_FIELDS - _KNOB_FIELDS
    if unknown:
        raise TypeError(f"unknown simulator option(s): {', '.join(sorted(unknown))}")
    knobs = Knobs().merged({k: v for k, v in options.items() if k in _KNOB_FIELDS}, "knobs")
    return SimConfig(host=host, port=port, knobs=knobs, **{k: v for k, v in options.items() if k in _CONFIG_FIELDS})


async def serve(config: SimConfig) -> Simulator:
    """Bind and start serving ``config`` in the running loop."""
    app = SimApp(config)
    loop = asyncio.get_running_loop()
    tls = None
    if config.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(config.tls_cert, config.tls_key)
    server = await loop.create_server(protocol_factory(app, app.connections), config.host, config.port,
                                      backlog=1024, ssl=tls)
    return Simulator(app, server)


async def start_simulator(host: str = "127.0.0.1", port: int = 0, **options: Any) -> Simulator:
    """Start an in-process simulator; ``options`` are SimConfig fields and Knobs fields (defaults)."""
    return await serve(make_config(host, port, **options))


class ThreadedSimulator:
    """A simulator on its own thread and uvloop loop, for synchronous callers (e.g. the sync SDK)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        import uvloop

        config = make_config(host, port, **options)
        self._loop = uvloop.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        async def boot() -> None:
            try:
                self.sim = await serve(config)
            except BaseException as exc:  # surfaced in the caller's thread below
                failure.append(exc)
            finally:
                ready.set()

        def main() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.create_task(boot())
            self._loop.run_forever()

        self._thread = threading.Thread(target=main, name="mmproxy-simulator", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._stop_loop()
            raise failure[0]

    @property
    def port(self) -> int:
        return self.sim.port

    @property
    def url(self) -> str:
        return self.sim.url

    @property
    def base_url(self) -> str:
        return self.sim.base_url

    @property
    def state(self) -> SimState:
        """Shared with the simulator thread: mutate only while no request is in flight."""
        return self.sim.state

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.close(), self._loop).result(timeout=5)
        self._stop_loop()

    def __enter__(self) -> ThreadedSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_in_thread(host: str = "127.0.0.1", port: int = 0, **options: Any) -> ThreadedSimulator:
    """Start a simulator on a background thread; call ``.close()`` when done."""
    return ThreadedSimulator(host, port, **options)
