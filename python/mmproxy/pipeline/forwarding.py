"""One attempt on one deployment: send the request, relay or return the answer, price it.

Non-streaming answers come back whole and are translated once; streams are relayed event by event from
the socket callback (``sse.SSERelay``). Either way the attempt's usage is priced into the request's record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiohttp import web

from mmproxy import cost, tokens
from mmproxy.config import Deployment
from mmproxy.errors import ProxyError
from mmproxy.pipeline.call import Call
from mmproxy.pipeline.sse import SSERelay, rewrite_usage_chunk
from mmproxy.pipeline.upstreams import Upstream
from mmproxy.providers.base import StreamTranslator
from mmproxy.router import Router
from mmproxy.spend.record import RequestRecord
from mmproxy.upstream import Exchange, upstream_failure
from mmproxy.upstream.http1 import UpstreamError, UpstreamTimeout

log = logging.getLogger("mmproxy")
_JSON = "application/json"
_NS_PER_MS = 1_000_000


class Forwarder:
    def __init__(self, router: Router, on_stream: Callable[[RequestRecord], None] | None = None) -> None:
        self._router = router
        self._on_stream = on_stream  # a stream's headers are leaving (the ledger's provisional row)
        self._usage = router.usage  # latencies go straight to it: once per request, on the hot path
        self._streams: set[Exchange] = set()  # upstream streams being relayed, for a shutdown to end
        self._ending = False

    def end_streams(self) -> None:
        """The shutdown's grace period is over: cut every stream still relayed; each client gets an error event
        saying the gateway is shutting down (its ledger row records what was relayed)."""
        self._ending = True
        for exchange in list(self._streams):
            exchange.abort()

    def count_completion(self, deployment_id: str, usage: dict[str, Any] | None) -> None:
        completion = usage.get("completion_tokens") if usage else None
        if isinstance(completion, int):
            self._router.add_completion_tokens(deployment_id, completion)

    async def forward(
        self,
        upstream: Upstream,
        data: bytes,
        translate: Callable[[bytes], tuple[bytes, dict[str, Any] | None]],
        call: Call,
        route: dict[str, str] | None = None,
    ) -> web.Response:
        deployment, provider = upstream.deployment, upstream.provider
        sent = time.perf_counter_ns()
        try:
            exchange = await upstream.transport.fetch(data, deployment.timeout)
        except UpstreamError as exc:
            raise upstream_failure(deployment.id, exc) from None
        received = time.perf_counter_ns()
        self._usage.observe_latency(deployment.id, (received - sent) / 1e9)
        status = exchange.status
        body = exchange.body()
        retry_after = exchange.header(b"retry-after") if status >= 400 else None
        exchange.release()
        if status >= 300:
            raise provider.error(status, body, retry_after)
        body, usage = translate(body)
        record = call.record
        headers = {
            "x-mmproxy-request-id": record.request_id,
            "x-mmproxy-deployment": deployment.id,
            **(route or {}),
        }
        self.count_completion(deployment.id, usage)
        if cost.charge(record, deployment, usage, lambda: (call.prompt_tokens(), _answer_tokens(body))) is not None:
            headers["x-mmproxy-cost-usd"] = cost.format_usd(record.cost_usd)
        overhead = _overhead_ns(call.started, sent, received)
        record.overhead_ms = overhead / _NS_PER_MS
        headers["x-mmproxy-overhead-ms"] = f"{record.overhead_ms:.3f}"
        return web.Response(body=body, content_type=_JSON, headers=headers)

    async def relay_stream(
        self,
        request: web.BaseRequest,
        call: Call,
        upstream: Upstream,
        data: bytes,
        translator: StreamTranslator | None,
        stream_error: Callable[[str, str], bytes],
        route: dict[str, str] | None = None,
        on_usage: Callable[[bytes], bytes] | None = None,
    ) -> web.StreamResponse:
        deployment, provider = upstream.deployment, upstream.provider
        record = call.record
        sent = time.perf_counter_ns()
        try:
            exchange = await upstream.transport.open(data, deployment.stream_timeout)
        except UpstreamError as exc:
            raise upstream_failure(deployment.id, exc) from None
        try:
            if exchange.status >= 300:
                retry_after = exchange.header(b"retry-after")
                try:
                    await exchange.done
                except UpstreamError as exc:
                    raise upstream_failure(deployment.id, exc) from None
                raise provider.error(exchange.status, exchange.body(), retry_after)
            if call.capture is not None:
                call.capture.clear()  # a retried stream starts over
            relay = SSERelay(exchange, asyncio.get_running_loop(), deployment.stream_timeout, translator, on_usage,
                             call.capture)
            self._streams.add(exchange)
            await relay.ready
            received = time.perf_counter_ns()  # the upstream's part ends with its first event, not its headers
            self._usage.observe_latency(deployment.id, (received - sent) / 1e9)  # to the first event
            if not relay.events_seen:
                # Nothing reached the client yet, so the failure can still be a plain error response.
                failure = exchange.done.exception() if exchange.done.done() else None
                if failure is not None:
                    raise upstream_failure(deployment.id, failure)
                raise ProxyError(502, f"upstream {deployment.id} ended the stream without any event",
                                 type="upstream_error", code="upstream_bad_response", kind="server")
            # A stream's headers leave first: its overhead counts up to them.
            record.overhead_ms = _overhead_ns(call.started, sent, received) / _NS_PER_MS
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "x-mmproxy-request-id": record.request_id,
                    "x-mmproxy-deployment": deployment.id,
                    **(route or {}),
                    "x-mmproxy-overhead-ms": f"{record.overhead_ms:.3f}",
                }
            )
            response.enable_chunked_encoding()
            if self._on_stream is not None:
                self._on_stream(record)  # its provisional row is on disk before the headers leave
            try:
                await response.prepare(request)
                record.ttft_ms = (time.perf_counter_ns() - call.started) / _NS_PER_MS
                transport = request.transport
                if transport is None:
                    exchange.abort()
                    return response
                await relay.pipe(response, transport)
            finally:
                # Priced even when the client left mid-stream: the upstream bills what it generated.
                usage = on_usage.usage if isinstance(on_usage, UsageChunk) and on_usage.usage else relay.usage()
                cost.charge(record, deployment, usage,
                            lambda: (call.prompt_tokens(), _stream_tokens(call.capture or ())))
                self.count_completion(deployment.id, usage)
            if not relay.saw_done:
                failure = exchange.done.exception() if exchange.done.done() else None
                if self._ending:
                    message, code = "the gateway is shutting down; the stream was cut", "shutting_down"
                elif isinstance(failure, UpstreamTimeout):
                    message, code = f"upstream {deployment.id} timed out mid-stream", "upstream_timeout"
                elif failure is not None or not exchange.complete:
                    message, code = f"upstream {deployment.id} cut the stream before it was complete", \
                        "stream_cut"
                else:
                    message, code = f"upstream {deployment.id} ended the stream without [DONE]", "stream_cut"
                log.warning("request %s: %s", record.request_id, message)
                record.error_code = code
                # A translator that already turned an upstream error into an error event has said it.
                if not transport.is_closing() and not (translator and translator.failed):
                    await response.write(stream_error(message, code))
            if not transport.is_closing():
                await response.write_eof()
            else:
                record.error_code = record.error_code or "client_disconnected"
            return response
        finally:
            self._streams.discard(exchange)
            exchange.release()


class UsageChunk:
    """Rewrites a stream's usage chunk: the request's cost so far added, or the chunk dropped when only the
    gateway asked for it (the client did not set ``stream_options.include_usage``). Keeps the usage it read,
    so the stream is not parsed twice."""

    __slots__ = ("_deployment", "_keep", "_record", "usage")

    def __init__(self, call: Call, deployment: Deployment, keep: bool) -> None:
        self._record = call.record
        self._deployment = deployment
        self._keep = keep
        self.usage: dict[str, Any] | None = None

    def __call__(self, events: bytes) -> bytes:
        return rewrite_usage_chunk(events, self._keep, self._annotate)

    def _annotate(self, chunk: dict[str, object]) -> None:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
            priced = cost.price(self._deployment, *cost.usage_tokens(usage))
            if priced is not None:
                chunk["x_mmproxy_cost_usd"] = self._record.cost_usd + priced[0]


def _answer_tokens(body: bytes) -> int:
    """Output tokens of an answer that came without usage (OpenAI's or Anthropic's shape), by our count."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 0
    texts: list[str] = []
    if isinstance(answer, dict):
        for choice in answer.get("choices") or ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict):
                texts.append(message.get("content") or "")
                texts += [str(c.get("function")) for c in message.get("tool_calls") or () if isinstance(c, dict)]
        texts += [b.get("text") or "" for b in answer.get("content") or () if isinstance(b, dict)]
    return tokens.count("".join(t for t in texts if isinstance(t, str)))


def _stream_tokens(chunks: Iterable[bytes]) -> int:
    """Output tokens of a relayed stream that ended without usage: its delta texts, by our count."""
    texts: list[str] = []
    for line in b"".join(chunks).split(b"\n"):
        if not line.startswith(b"data: {"):
            continue
        try:
            event = orjson.loads(line[6:])
        except orjson.JSONDecodeError:
            continue
        for choice in event.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                texts.append(delta["content"])
    return tokens.count("".join(texts))


def _overhead_ns(started: int, sent: int, received: int) -> int:
    """Time spent in the gateway itself: before the upstream call and after its answer."""
    return (sent - started) + (time.perf_counter_ns() - received)
