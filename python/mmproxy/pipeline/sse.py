"""Relay an upstream SSE stream to the client as its events arrive.

Per-event work happens in the upstream connection's ``data_received`` callback:
find the last complete event (or let the provider's translator make OpenAI events),
note ``[DONE]`` and the usage chunk, write one HTTP chunk to the client socket. No
task switch, no JSON parsing per event on the OpenAI path. Only complete events are
forwarded, so a stream the upstream cuts never hands the client half an event, and
the client gets an error event instead of ``[DONE]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
from aiohttp import web

from mmproxy.providers.base import StreamTranslator
from mmproxy.upstream import Exchange

_USAGE_ONLY = b'"choices":[]'
_USAGE_ONLY_SPACED = b'"choices": []'
# Pause reading the upstream while this much is queued for a slow client.
_HIGH_WATER = 512 * 1024
_LOW_WATER = 64 * 1024


class SSERelay:
    __slots__ = (
        "_buffered",
        "_capture",
        "_exchange",
        "_fed",
        "_fed_at_check",
        "_idle_timeout",
        "_loop",
        "_on_usage",
        "_pending",
        "_translator",
        "_transport",
        "_watchdog",
        "events_seen",
        "finished",
        "paused",
        "ready",
        "saw_done",
        "usage_event",
    )

    def __init__(
        self,
        exchange: Exchange,
        loop: asyncio.AbstractEventLoop,
        idle_timeout: float,
        translator: StreamTranslator | None = None,
        on_usage: Callable[[bytes], bytes] | None = None,
        capture: list[bytes] | None = None,
    ) -> None:
        self._exchange = exchange
        self._capture = capture  # every byte sent to the client, for the response cache
        # Rewrites events that hold OpenAI's usage-only chunk (adds the cost, or drops a chunk the
        # gateway asked for on its own account); only consulted when such a chunk is in the data.
        self._on_usage = on_usage
        self._translator = translator
        # Once events flow, the stream may last as long as it keeps moving: no event from the upstream for
        # ``idle_timeout`` (while the client is reading) fails it. A watchdog looks once per ``idle_timeout`` and
        # pushes the exchange's deadline on when data came meanwhile, so each event costs one increment, not a
        # timer of its own.
        self._idle_timeout = idle_timeout
        self._loop = loop
        self._fed = self._fed_at_check = 0
        self._watchdog: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._pending = b""
        self._buffered: list[bytes] = []
        self.events_seen = False
        self.saw_done = False
        self.paused = False
        self.usage_event: bytes | None = None
        # ``ready``: the first complete event is in (or the upstream ended without one).
        self.ready: asyncio.Future[None] = loop.create_future()
        # ``finished``: the upstream is done, failed, or reading was paused for backpressure.
        self.finished: asyncio.Future[None] = loop.create_future()
        exchange.done.add_done_callback(self._upstream_done)
        exchange.set_sink(self.feed)

    def feed(self, data: bytes) -> None:
        self._fed += 1
        translator = self._translator
        if translator is not None:
            data = translator.feed(data)
            if translator.complete:
                self.saw_done = True
            if data:
                if self._on_usage is not None and _USAGE_ONLY in data:
                    data = self._on_usage(data)
                self._write(data)
            return
        if self._pending:
            data = self._pending + data
            self._pending = b""
        end = data.rfind(b"\n\n")
        if end >= 0:
            end += 2
        else:
            end = data.rfind(b"\r\n\r\n")
            if end < 0:
                self._pending = data
                return
            end += 4
        if end < len(data):
            self._pending = data[end:]
            data = data[:end]
        # One backwards scan: the usage object, when any, is in the last event that names usage.
        found = data.rfind(b'"usage":')
        if found >= 0 and data[found + 8:found + 10] in (b"{\"", b" {", b"{}"):
            self.usage_event = data
            if self._on_usage is not None and (_USAGE_ONLY in data or _USAGE_ONLY_SPACED in data):
                data = self._on_usage(data)
        if data.endswith((b"[DONE]\n\n", b"[DONE]\r\n\r\n")):
            self.saw_done = True
        if data:
            self._write(data)

    def _write(self, data: bytes) -> None:
        """Send complete events to the client, or hold them until the response has started."""
        if self._capture is not None:
            self._capture.append(data)
        transport = self._transport
        if transport is None:
            self._buffered.append(data)
            if not self.events_seen:
                self.events_seen = True
                self._exchange.set_deadline(2 * self._idle_timeout)
                self._watchdog = self._loop.call_later(self._idle_timeout, self._watch)
                if not self.ready.done():
                    self.ready.set_result(None)
            return
        if transport.is_closing():
            # The client went away: stop paying for a generation nobody reads.
            self._exchange.abort()
            return
        transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        if transport.get_write_buffer_size() > _HIGH_WATER:
            self._exchange.pause_reading()
            self.paused = True
            if not self.finished.done():
                self.finished.set_result(None)

    def _watch(self) -> None:
        """Push the deadline on when the upstream sent data since the last look, or the client is the slow one
        (reading is paused); otherwise let it fall due: a stall ends the stream within 1-2 ``idle_timeout``."""
        if self._fed != self._fed_at_check or self.paused:
            self._fed_at_check = self._fed
            self._exchange.set_deadline(2 * self._idle_timeout)
        self._watchdog = self._loop.call_later(self._idle_timeout, self._watch)

    def _upstream_done(self, fut: asyncio.Future[None]) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if not self.ready.done():
            self.ready.set_result(None)
        if not self.finished.done():
            self.finished.set_result(None)

    def take_buffered(self) -> bytes:
        data = b"".join(self._buffered)
        self._buffered.clear()
        return data

    async def pipe(self, response: web.StreamResponse, transport: asyncio.Transport) -> None:
        """Write buffered events, then let ``feed`` write straight to ``transport`` until the end."""
        loop = asyncio.get_running_loop()
        while self._buffered:
            await response.write(self.take_buffered())
        self._transport = transport
        while True:
            await self.finished
            if not self.paused:
                return
            while transport.get_write_buffer_size() > _LOW_WATER and not transport.is_closing():
                await asyncio.sleep(0.005)
            self.paused = False
            self.finished = loop.create_future()
            if self._exchange.done.done():
                return
            self._exchange.resume_reading()

    def usage(self) -> dict[str, object] | None:
        """The ``usage`` object of the last event that carried one, if any."""
        if self._translator is not None:
            return self._translator.usage
        event = self.usage_event
        if event is None:
            return None
        for line in event.splitlines():
            if line.startswith(b"data:") and (b'"usage":{' in line or b'"usage": {' in line):
                try:
                    chunk = orjson.loads(line[5:])
                except orjson.JSONDecodeError:
                    return None
                usage = chunk.get("usage") if isinstance(chunk, dict) else None
                if isinstance(usage, dict):
                    return usage
        return None


def error_event(message: str, code: str) -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "upstream_error", "param": None, "code": code}})
    return b"data: %b\n\n" % body


def rewrite_usage_chunk(events: bytes, keep: bool, annotate: Callable[[dict[str, object]], None]) -> bytes:
    """``events`` with OpenAI's usage-only chunk removed (``keep`` false) or passed through ``annotate``."""
    marker = events.find(_USAGE_ONLY)
    if marker < 0:
        marker = events.find(_USAGE_ONLY_SPACED)
        if marker < 0:
            return events
    start = events.rfind(b"data:", 0, marker)
    end = events.find(b"\n", marker)
    if start < 0 or end < 0:
        return events
    if not keep:
        # The event is this one line and its blank terminator line.
        after = end + 1
        if events.startswith(b"\r\n", after):
            after += 2
        elif events.startswith(b"\n", after):
            after += 1
        return events[:start] + events[after:]
    try:
        chunk = orjson.loads(events[start + 5:end])
    except orjson.JSONDecodeError:
        return events
    if not isinstance(chunk, dict):
        return events
    annotate(chunk)
    line_end = end - 1 if events[end - 1:end] == b"\r" else end
    return events[:start] + b"data: " + orjson.dumps(chunk) + events[line_end:]
