"""A lean keep-alive HTTP/1.1 client for upstream calls.

aiohttp's client spends more CPU per request than everything else the gateway does,
so the forwarding path uses this instead: one ``asyncio.Protocol`` per connection,
``httptools`` (llhttp) for response parsing, no per-request task, and body bytes
delivered to a sink callback straight from ``data_received`` so a relayed stream
event costs a callback, not a coroutine round trip.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable

import httptools

from mmproxy.upstream.framing import origin


class UpstreamError(Exception):
    """The upstream could not be reached or broke the exchange."""


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamDisconnected(UpstreamError):
    pass


BodySink = Callable[[bytes], None]


class Exchange(asyncio.Protocol):
    """One connection; at most one request in flight on it at a time.

    ``headers_done`` resolves when the status line and headers are in, ``done``
    when the body is complete. Body bytes go to ``sink`` when one is set,
    otherwise they are buffered in ``body_parts``.
    """

    __slots__ = (
        "_loop",
        "_parser",
        "_pool",
        "_reused",
        "_timer",
        "body_parts",
        "complete",
        "done",
        "got_bytes",
        "headers",
        "headers_done",
        "idle_since",
        "keep_alive",
        "sink",
        "status",
        "transport",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self._parser = httptools.HttpResponseParser(self)
        self._timer: asyncio.TimerHandle | None = None
        self._reused = False
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body_parts: list[bytes] = []
        self.sink: BodySink | None = None
        self.headers_done: asyncio.Future[None] = self._loop.create_future()
        self.done: asyncio.Future[None] = self._loop.create_future()
        self.keep_alive = False
        self.complete = False
        self.got_bytes = False
        self.idle_since = 0.0

    # -- driving an exchange -------------------------------------------------------
    def _send(self, data: bytes, timeout: float) -> None:
        if self._reused:
            self._parser = httptools.HttpResponseParser(self)
            self.status = 0
            self.headers = []
            self.body_parts = []
            self.sink = None
            self.headers_done = self._loop.create_future()
            self.done = self._loop.create_future()
            self.keep_alive = False
            self.complete = False
            self.got_bytes = False
        self._timer = self._loop.call_later(timeout, self._on_timeout)
        assert self.transport is not None
        self.transport.write(data)

    def set_deadline(self, timeout: float) -> None:
        """Replace the running deadline (e.g. time-to-first-byte → total)."""
        if self._timer is not None:
            self._timer.cancel()
        if not self.complete:
            self._timer = self._loop.call_later(timeout, self._on_timeout)

    def set_sink(self, sink: BodySink) -> None:
        """Deliver body bytes to ``sink`` from now on, after those already buffered."""
        self.sink = sink
        if self.body_parts:
            parts, self.body_parts = self.body_parts, []
            for part in parts:
                sink(part)

    def body(self) -> bytes:
        parts = self.body_parts
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def header(self, name: bytes) -> bytes | None:
        """First response header called ``name`` (lower-case)."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def release(self) -> None:
        """Give the connection back to the pool, or close it if it cannot be reused."""
        self.sink = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pool = self._pool
        if (self.complete and self.keep_alive and self.transport is not None and not self.transport.is_closing()
                and len(pool._idle) < pool.max_idle):
            self._reused = True
            self.idle_since = self._loop.time()
            pool._idle.append(self)
            if pool._sweeper is None:
                pool._sweeper = self._loop.call_later(pool.idle_timeout, pool._sweep)
        else:
            self.abort()

    def abort(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.abort()

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # -- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed HTTP response from upstream: {exc}"))
            self.abort()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            self._pool._idle.remove(self)
        except ValueError:
            pass
        if not self.complete:
            self._fail(UpstreamDisconnected("upstream closed the connection before the response was complete"))

    # -- httptools callbacks -------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()
        if not self.headers_done.done():
            self.headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink(body)
        else:
            self.body_parts.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.done.done():
            self.done.set_result(None)

    # -- failure -------------------------------------------------------------------
    def _on_timeout(self) -> None:
        self._timer = None
        self._fail(UpstreamTimeout("upstream did not answer in time"))
        self.abort()

    def _fail(self, exc: UpstreamError) -> None:
        for fut in (self.headers_done, self.done):
            if not fut.done():
                fut.set_exception(exc)
                # Mark retrieved: a caller waiting on one future must not trigger
                # "exception never retrieved" noise for the other.
                fut.exception()


class UpstreamPool:
    """Idle keep-alive connections to one origin (scheme, host, port): at most ``max_idle`` of them (a burst of
    streams leaves no more open than that), each closed after ``idle_timeout`` seconds unused (nginx's upstream
    keepalive_timeout is 60 s; providers close idle connections after a minute or two, and a connection closed
    by the far side while idle costs a failed first write)."""

    def __init__(self, base_url: str, *, connect_timeout: float = 10.0, max_idle: int = 256,
                 idle_timeout: float = 30.0) -> None:
        where = origin(base_url)
        self.host = where.host
        self.port = where.port
        self.host_header = where.host_header
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if where.tls else None
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._sweeper: asyncio.TimerHandle | None = None  # one timer per pool, not one per idle connection
        self.loop = asyncio.get_running_loop()
        self._idle: deque[Exchange] = deque()

    async def fetch(self, data: bytes, timeout: float) -> Exchange:
        """Send a complete request and wait for the whole response."""
        return await self._exchange(data, timeout, whole=True)

    async def open(self, data: bytes, timeout: float) -> Exchange:
        """Send a complete request and wait for the response headers only."""
        return await self._exchange(data, timeout, whole=False)

    async def _exchange(self, data: bytes, timeout: float, *, whole: bool) -> Exchange:
        # A keep-alive connection the server closed while idle fails before any
        # response byte arrives; only then is the request sent again, on a new one.
        while self._idle:
            exchange = self._idle.pop()
            if exchange.transport is None or exchange.transport.is_closing():
                continue
            exchange._send(data, timeout)
            try:
                await (exchange.done if whole else exchange.headers_done)
                return exchange
            except UpstreamDisconnected:
                if exchange.got_bytes:
                    raise
            except BaseException:
                exchange.abort()
                raise
        exchange = await self._connect()
        exchange._send(data, timeout)
        try:
            await (exchange.done if whole else exchange.headers_done)
        except BaseException:
            exchange.abort()
            raise
        return exchange

    async def _connect(self) -> Exchange:
        try:
            _, exchange = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: Exchange(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                ),
                self.connect_timeout,
            )
        except asyncio.TimeoutError:
            raise UpstreamTimeout(f"connecting to {self.host_header} timed out") from None
        except OSError as exc:
            raise UpstreamError(f"cannot connect to {self.host_header}: {exc.strerror or exc}") from None
        return exchange

    def _sweep(self) -> None:
        """Close the connections idle for ``idle_timeout`` (the oldest are at the left: the pool reuses the
        newest), then wait for the next one to come due."""
        self._sweeper = None
        idle = self._idle
        now = self.loop.time()
        while idle and idle[0].idle_since + self.idle_timeout <= now:
            idle.popleft().abort()
        if idle:
            self._sweeper = self.loop.call_later(idle[0].idle_since + self.idle_timeout - now, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self._idle:
            self._idle.pop().abort()
