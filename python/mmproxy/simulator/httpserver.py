"""A minimal HTTP/1.1 server on ``asyncio.Protocol`` + httptools.

The simulator shares the benchmark machine with the gateway being measured, so it avoids a web
framework: requests are parsed by httptools, handlers are plain functions returning a ``Reply``,
and replies with nothing to wait for are written synchronously from ``data_received`` (no task).
Streams go out as one HTTP chunk per event, each written when due, so relay costs stay visible.
"""

from __future__ import annotations

import asyncio
import hmac
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol, cast

import httptools

if TYPE_CHECKING:
    from .behaviour import Fault

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_MAX_PIPELINE = 64  # queued requests per connection before we stop reading


def same_secret(got: bytes | None, expected: bytes) -> bool:
    """Whether a credential a client sent is ``expected`` (never an empty one), compared in constant time as a
    provider compares keys."""
    return got is not None and bool(expected) and hmac.compare_digest(got, expected)


class Request:
    """One parsed request; also the record kept by the control API (hence the result fields)."""

    __slots__ = ("body", "fault", "headers", "json", "keep_alive", "method", "model", "path", "query",
                 "status", "time")

    def __init__(self, method: str, path: str, query: str, headers: list[tuple[bytes, bytes]],
                 body: bytes, keep_alive: bool) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.time = time.time()
        self.json: object = None
        self.model: str | None = None
        self.status = 0
        self.fault: str | None = None

    def header(self, name: bytes) -> bytes | None:
        """First value of a header; ``name`` must be lower-case."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class StreamBody:
    """A pre-rendered event stream: fragments and their due times (s after the headers)."""

    __slots__ = ("bad_event", "content_type", "due", "events")

    def __init__(self, events: list[bytes], due: list[float], content_type: bytes = b"text/event-stream",
                 bad_event: bytes = b'data: {"choices": [\n\n') -> None:
        self.events = events
        self.due = due
        self.content_type = content_type
        self.bad_event = bad_event


class Reply:
    """What a handler wants sent; transport faults (delay, hang, cut) are fields, not code paths."""

    __slots__ = ("body", "content_type", "cut_after", "delay", "hang", "headers", "status", "stream")

    def __init__(self, status: int, body: bytes = b"", *, content_type: bytes = b"application/json",
                 headers: bytes = b"", stream: StreamBody | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers  # pre-rendered extra header lines, each ending in CRLF
        self.stream = stream
        self.delay = 0.0  # seconds before the status line
        self.hang = False  # never answer
        self.cut_after = -1  # >= 0: drop the connection after this many events (or half the body)

    def apply_fault(self, fault: Fault) -> Reply:
        """Turn a normal reply into a slow, hanging, cut or corrupt one."""
        kind = fault.kind
        if kind in ("timeout", "slow"):
            self.delay += fault.delay_ms / 1000.0
        elif kind == "hang":
            self.hang = True
        elif kind == "cut":
            self.cut_after = fault.cut_after
        elif kind == "bad_json":
            if self.stream is None:
                self.body = self.body[: len(self.body) // 2]  # a truncated object never parses
            else:
                events = self.stream.events
                events[min(1, len(events) - 1)] = self.stream.bad_event
        return self

    @property
    def instant(self) -> bool:
        """True when the reply can be written inline without a task."""
        if self.delay > 0 or self.hang or self.cut_after >= 0:
            return False
        return self.stream is None or not any(self.stream.due)


class App(Protocol):
    """What the protocol needs from the application."""

    def handle(self, req: Request) -> Reply: ...

    def internal_error(self) -> Reply: ...

    def abandoned(self) -> None: ...


class HttpProtocol(asyncio.Protocol):
    """One connection: parses with httptools, answers pipelined requests strictly in order."""

    def __init__(self, app: App, connections: set[HttpProtocol]) -> None:
        self.app = app
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.pending: deque[Request] = deque()
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.read_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.broken: bytes | None = None  # parse error, answered after the requests before it
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    # --- asyncio callbacks ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's class is not a subclass
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pending.clear()
        self.connections.discard(self)
        if self.task is not None:
            self.task.cancel()
            self.app.abandoned()
        self._wake_writer()

    def data_received(self, data: bytes) -> None:
        if self.broken is not None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.broken = b"upgrade not supported"
        except httptools.HttpParserError:
            # Also raised for bytes after a "Connection: close" request; that one is still answered
            # and closes the connection before the 400 would go out.
            self.broken = b"malformed request"
        self._process()

    def pause_writing(self) -> None:
        if self.drain_waiter is None:
            self.drain_waiter = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake_writer()

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.parser.should_upgrade() or self.task is not None or self.pending:
            return  # an interim 100 must not land inside an earlier response; the client will time out
        for name, value in self._headers:
            if name.lower() == b"expect" and value.lower() == b"100-continue":
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        raw, _, query = self._url.partition(b"?")
        self.pending.append(Request(
            self.parser.get_method().decode("latin-1"),
            raw.decode("latin-1"),
            query.decode("latin-1"),
            self._headers,
            b"".join(self._body),
            self.parser.should_keep_alive(),
        ))
        if len(self.pending) > _MAX_PIPELINE and not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    # --- request processing ---

    def _process(self) -> None:
        """Answer queued requests in order; a non-instant reply parks the queue until its task ends."""
        while self.pending and self.task is None and not self.closed:
            req = self.pending.popleft()
            try:
                reply = self.app.handle(req)
            except Exception:
                traceback.print_exc(file=sys.stderr)
                reply = self.app.internal_error()
            if reply.instant:
                self._write_reply(req, reply)
            else:
                self.task = asyncio.get_running_loop().create_task(self._run(req, reply))
        if self.broken is not None and not self.pending and self.task is None and not self.closed:
            self._fail(self.broken)
        if self.read_paused and len(self.pending) <= _MAX_PIPELINE // 2 and not self.closed:
            self.read_paused = False
            assert self.transport is not None
            self.transport.resume_reading()

    async def _run(self, req: Request, reply: Reply) -> None:
        try:
            if reply.delay > 0:
                await asyncio.sleep(reply.delay)
            if reply.hang:
                await asyncio.get_running_loop().create_future()  # until the client gives up
            if reply.stream is not None:
                await self._write_stream_paced(req, reply)
            else:
                self._write_reply(req, reply)
        except asyncio.CancelledError:
            return  # client went away (connection_lost) or server shutdown
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self._close()
            return
        self.task = None
        if not self.closed:
            self._process()

    def _head(self, req: Request, reply: Reply, framing: bytes) -> bytes:
        conn = b"" if req.keep_alive else b"connection: close\r\n"
        return b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\n%s%s%s\r\n" % (
            reply.status, _REASONS.get(reply.status, b"Unknown"), reply.content_type, framing,
            reply.headers, conn)

    def _write_reply(self, req: Request, reply: Reply) -> None:
        if self.closed:
            return
        assert self.transport is not None
        if reply.stream is not None:
            self._write_stream_instant(req, reply)
            return
        body = reply.body
        head = self._head(req, reply, b"content-length: %d\r\n" % len(body))
        if reply.cut_after >= 0:  # promise the whole body, deliver half, hang up
            self.transport.write(head + body[: len(body) // 2])
            self._close()
            return
        self.transport.write(head + body)
        if not req.keep_alive:
            self._close()

    def _stream_head(self, req: Request, reply: Reply) -> bytes:
        assert reply.stream is not None
        reply.content_type = reply.stream.content_type
        return self._head(req, reply, b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n")

    def _write_stream_instant(self, req: Request, reply: Reply) -> None:
        """All events due at once: still one HTTP chunk per event, but a single send, no task."""
        assert self.transport is not None and reply.stream is not None
        parts = [self._stream_head(req, reply)]
        for event in reply.stream.events:
            parts.append(b"%x\r\n%s\r\n" % (len(event), event))
        parts.append(b"0\r\n\r\n")
        self.transport.write(b"".join(parts))
        if not req.keep_alive:
            self._close()

    async def _write_stream_paced(self, req: Request, reply: Reply) -> None:
        """Write each event when due; on ``cut_after`` drop the connection without the last chunk."""
        assert self.transport is not None and reply.stream is not None
        loop = asyncio.get_running_loop()
        transport = self.transport
        transport.write(self._stream_head(req, reply))
        start = loop.time()
        for i, (event, due) in enumerate(zip(reply.stream.events, reply.stream.due, strict=True)):
            if i == reply.cut_after:
                self._close()
                return
            wait = start + due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.closed:
                return
            transport.write(b"%x\r\n%s\r\n" % (len(event), event))
            if self.drain_waiter is not None:
                await self.drain_waiter
        if reply.cut_after >= 0:  # fewer events than the cut point: still never terminate cleanly
            self._close()
            return
        transport.write(b"0\r\n\r\n")
        if not req.keep_alive:
            self._close()

    # --- helpers ---

    def _wake_writer(self) -> None:
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _close(self) -> None:
        self.closed = True
        self.pending.clear()
        if self.transport is not None:
            self.transport.close()

    def _fail(self, why: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(why), why))
        self._close()

    def abort(self) -> None:
        """Server shutdown: cancel work and drop the connection."""
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.transport.abort()


def protocol_factory(app: App, connections: set[HttpProtocol]) -> Callable[[], HttpProtocol]:
    """Bind the app and the shared connection registry (used for shutdown)."""
    return lambda: HttpProtocol(app, connections)
