"""Talking HTTP to upstreams: the transport interface the gateway uses, and its one whole-exchange helper.

``http1.UpstreamPool`` is the real transport (a lean keep-alive HTTP/1.1 client); ``fake.FakeTransport``
answers in-process, so routing, failover, limits and rules can be tested without sockets. Providers
build complete request bytes (``framing``); a transport only carries them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from mmproxy.errors import ProxyError
from mmproxy.upstream.http1 import UpstreamDisconnected, UpstreamError, UpstreamTimeout

BodySink = Callable[[bytes], None]


class Exchange(Protocol):
    """One request/response on a transport. ``done`` resolves when the body is complete (or fails with an
    ``UpstreamError``); body bytes go to the sink once one is set, else they are buffered for ``body()``."""

    status: int
    complete: bool

    @property
    def done(self) -> asyncio.Future[None]: ...
    def body(self) -> bytes: ...
    def header(self, name: bytes) -> bytes | None: ...
    def set_sink(self, sink: BodySink) -> None: ...
    def set_deadline(self, timeout: float) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def release(self) -> None: ...
    def abort(self) -> None: ...


class Transport(Protocol):
    """Carries complete request bytes to one origin."""

    async def fetch(self, data: bytes, timeout: float) -> Exchange:
        """Send a request and wait for the whole response."""

    async def open(self, data: bytes, timeout: float) -> Exchange:
        """Send a request and wait for the response headers only (a stream)."""

    def close(self) -> None: ...


async def fetch_whole(transport: Transport, data: bytes, timeout: float, deployment_id: str
                      ) -> tuple[int, bytes, bytes | None]:
    """One whole exchange: (status, body, Retry-After), the connection back in its pool, a transport failure
    already the gateway's error."""
    try:
        exchange = await transport.fetch(data, timeout)
    except UpstreamError as exc:
        raise upstream_failure(deployment_id, exc) from None
    answer = exchange.status, exchange.body(), exchange.header(b"retry-after")
    exchange.release()
    return answer


def upstream_failure(deployment_id: str, exc: BaseException) -> ProxyError:
    """The gateway's error for a transport failure (the upstream never answered, or broke off)."""
    if isinstance(exc, UpstreamTimeout):
        return ProxyError(504, f"upstream {deployment_id}: {exc}", type="upstream_error", code="upstream_timeout",
                          kind="timeout")
    if isinstance(exc, UpstreamDisconnected):
        return ProxyError(502, f"upstream {deployment_id}: {exc}", type="upstream_error",
                          code="upstream_disconnected", kind="server")
    return ProxyError(502, f"upstream {deployment_id}: {exc}", type="upstream_error", code="upstream_unreachable",
                      kind="server")
