"""An in-process transport for tests: answers from a function instead of a socket.

Routing, failover, limits and rules can then be exercised in one process, in microseconds, with the
upstream's behaviour scripted per request (a status, a body, a stream cut short, a connection refused).
The end-to-end tests keep using the real transport against the simulator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mmproxy.upstream import BodySink, Exchange
from mmproxy.upstream.http1 import UpstreamError


@dataclass
class FakeReply:
    """What the fake upstream answers: ``chunks`` are the body's pieces as they would arrive; a ``failure`` is
    raised instead of answering (nothing received), or after the chunks when ``complete`` is False."""

    status: int = 200
    chunks: Sequence[bytes] = (b"{}",)
    headers: dict[bytes, bytes] = field(default_factory=dict)
    failure: UpstreamError | None = None
    complete: bool = True


class FakeExchange:
    """One scripted exchange; body chunks reach a sink one loop iteration apart, as socket reads would."""

    def __init__(self, reply: FakeReply, loop: asyncio.AbstractEventLoop) -> None:
        self._reply = reply
        self._loop = loop
        self._buffered = list(reply.chunks)
        self._sink: BodySink | None = None
        self._paused = False
        self.status = reply.status
        self.complete = False
        self.released = False
        self.done: asyncio.Future[None] = loop.create_future()

    def body(self) -> bytes:
        return b"".join(self._reply.chunks)

    def header(self, name: bytes) -> bytes | None:
        return self._reply.headers.get(name)

    def set_sink(self, sink: BodySink) -> None:
        self._sink = sink
        self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        if self._paused or self.done.done() or self._sink is None:
            return
        if self._buffered:
            self._sink(self._buffered.pop(0))
            self._loop.call_soon(self._deliver)
        else:
            self._finish()

    def _finish(self) -> None:
        reply = self._reply
        if reply.complete:
            self.complete = True
            self.done.set_result(None)
        else:
            self.done.set_exception(reply.failure or UpstreamError("the fake upstream cut the response"))

    def set_deadline(self, timeout: float) -> None:
        """Deadlines are the real transport's concern; a scripted reply never hangs."""

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            self._loop.call_soon(self._deliver)

    def release(self) -> None:
        self.released = True

    def abort(self) -> None:
        self.released = True
        if not self.done.done():
            self.done.set_exception(UpstreamError("aborted"))
            self.done.exception()  # retrieved: an abort is not an error anybody waits for


class FakeTransport:
    """A transport whose upstream is ``answer``: it gets each request's bytes and returns the reply."""

    def __init__(self, answer: Callable[[bytes], FakeReply]) -> None:
        self._answer = answer
        self.requests: list[bytes] = []
        self.exchanges: list[FakeExchange] = []  # a test can check each went back (``released``): no leak

    async def fetch(self, data: bytes, timeout: float) -> Exchange:
        exchange = self._exchange(data)
        exchange.set_sink(lambda _: None)  # a whole response: drain it, the body stays readable
        await exchange.done
        return exchange

    async def open(self, data: bytes, timeout: float) -> Exchange:
        return self._exchange(data)

    def _exchange(self, data: bytes) -> FakeExchange:
        self.requests.append(data)
        reply = self._answer(data)
        if reply.failure is not None and reply.complete:
            raise reply.failure
        exchange = FakeExchange(reply, asyncio.get_running_loop())
        self.exchanges.append(exchange)
        return exchange

    def close(self) -> None:
        """Nothing to close: no connection was opened."""
