"""Request handlers: they orchestrate (auth, validate, route, forward) and hold no business rules."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from mmproxy import __version__, tokens
from mmproxy.config import Config
from mmproxy.cost import format_usd, usage_cost
from mmproxy.errors import ProxyError, auth_error, error_body
from mmproxy.health import Health
from mmproxy.inbound import anthropic as anthropic_inbound
from mmproxy.providers import Provider, provider_for
from mmproxy.providers.base import ChainedTranslator, StreamTranslator
from mmproxy.router import STRATEGIES, ModelGroup, Router
from mmproxy.server.sse import SSERelay, error_event
from mmproxy.shared import SharedState
from mmproxy.upstream.http1 import UpstreamDisconnected, UpstreamError, UpstreamPool, UpstreamTimeout
from mmproxy.usage import Usage
from mmproxy.validation import (
    parse_json_object,
    require_model,
    unknown_model,
    validate_chat,
    validate_embeddings,
)

log = logging.getLogger("mmproxy")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
_JSON = "application/json"
_NS_PER_MS = 1_000_000
# Failure kinds worth another attempt: the upstream's state, not the request, caused them.
_RETRYABLE = frozenset({"rate_limit", "overloaded", "server", "timeout"})
_BACKOFF_BASE_S = 0.25
# A model name that routes purely by ``routing_rules``.
AUTO_MODEL = "auto"
_MAX_RETRY_WAIT_S = 10.0


class Gateway:
    """Process-wide state shared by the handlers: config, upstream pools, router."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._master_key = config.master_key.encode() if config.master_key else None
        self._pools: dict[str, UpstreamPool] = {}
        self.router = Router([])
        self.health = Health(config.router.allowed_fails, config.router.cooldown_time)
        self.usage = Usage()
        self._strategy = STRATEGIES[config.router.routing_strategy]
        self.shared: SharedState | None = None
        self._background: set[asyncio.Task[None]] = set()
        # Input tokens are counted per request only when something reads them (tpm limits, rules).
        self._count_tokens = config.rules is not None or any(d.tpm for d in config.deployments)
        # Request ids: a random per-process prefix and a counter, unique across workers and instances.
        self._id_prefix = os.urandom(6).hex()
        self._ids = itertools.count(1)

    async def start(self) -> None:
        """Open pools and build providers; needs the running loop."""
        tokens.warm()
        providers: list[Provider] = []
        for deployment in self.config.deployments:
            origin = deployment.api_base.split("/", 3)[:3]
            key = "/".join(origin)
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = UpstreamPool(deployment.api_base)
            providers.append(provider_for(deployment.provider)(deployment, pool))
        self.router = Router(providers)
        if self.config.router.redis_url:
            self.shared = SharedState(self.config.router.redis_url, self.health, self.usage, self.config.deployments)
            await self.shared.start()

    async def stop(self) -> None:
        for pool in self._pools.values():
            pool.close()
        if self.shared is not None:
            await self.shared.stop()

    # -- plumbing ------------------------------------------------------------------
    def _request_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    def _authorize(self, request: web.BaseRequest) -> None:
        master = self._master_key
        if master is None:
            return
        headers = request.headers
        supplied = headers.get("Authorization")
        if supplied is not None:
            scheme, _, token = supplied.partition(" ")
            if scheme.lower() != "bearer":
                raise auth_error("Authorization header must be 'Bearer <key>'")
            supplied = token.strip()
        else:
            supplied = headers.get("x-api-key")
        if not supplied:
            raise auth_error("missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'")
        if not hmac.compare_digest(supplied.encode(), master):
            raise auth_error("invalid API key")

    async def _read_json(self, request: web.BaseRequest) -> tuple[bytes, dict[str, Any]]:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            limit_mb = self.config.max_request_bytes / (1024 * 1024)
            raise ProxyError(
                413, f"request body exceeds the {limit_mb:g} MB limit", code="request_too_large"
            ) from None
        return raw, parse_json_object(raw)

    def guarded(
        self,
        handler: Callable[[web.BaseRequest, str], Awaitable[web.StreamResponse]],
        render: Callable[[ProxyError], bytes] = ProxyError.body,
    ) -> Handler:
        """Wrap a handler so every failure leaves as an error in the API's own shape (``render``)."""

        def respond(exc: ProxyError, request_id: str) -> web.Response:
            headers = {"x-mmproxy-request-id": request_id, **exc.headers}
            return web.Response(status=exc.status, body=render(exc), content_type=_JSON, headers=headers)

        async def run(request: web.BaseRequest) -> web.StreamResponse:
            request_id = self._request_id()
            try:
                return await handler(request, request_id)
            except ProxyError as exc:
                return respond(exc, request_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("internal error handling %s %s (request %s)", request.method, request.path,
                              request_id)
                return respond(
                    ProxyError(500, "internal gateway error; see the gateway log", type="server_error",
                               code="internal_error"),
                    request_id,
                )

        return run

    # -- failover ------------------------------------------------------------------
    async def _failover(
        self, model: str, attempt: Callable[[Provider], Awaitable[web.StreamResponse]], tokens: int = 0
    ) -> web.StreamResponse:
        """Run ``attempt`` on deployments of ``model`` until one answers: retries, then fallbacks.

        Retries go to another healthy deployment of the group first and back off (honouring
        ``Retry-After``) only when none is left. Which failures are retried and which fallback list
        applies is decided by the error's kind, never by provider. An error without a kind is the
        request's own fault and ends the request at once. A stream counts as answered once its
        first byte reached the client, so it never falls back after that.
        """
        group = self.router.group(model)
        if group is None:
            raise unknown_model(model)
        settings = self.config.router
        health = self.health
        usage = self.usage
        chain = [group]
        tried: set[str] = set()
        error: ProxyError | None = None
        position = 0
        while position < len(chain):
            current = chain[position]
            position += 1
            for retry in range(settings.num_retries + 1):
                provider = await self._pick(current, tokens, tried)
                if provider is None:
                    break
                deployment_id = provider.deployment.id
                usage.start(deployment_id, tokens)
                try:
                    response = await attempt(provider)
                except ProxyError as exc:
                    if exc.kind is None:
                        raise
                    health.failed(deployment_id, exc.kind)
                    if self.shared is not None:
                        await self.shared.failed(deployment_id, exc.kind)
                    tried.add(deployment_id)
                    error = exc
                    if exc.kind not in _RETRYABLE or retry == settings.num_retries:
                        break
                    if not current.untried(health, tried) and not await self._backoff(retry, exc):
                        break
                    continue
                finally:
                    usage.finish(deployment_id)
                health.succeeded(deployment_id)
                return response
            if position == 1:  # the requested group is done for: its fallbacks, one level deep as in LiteLLM
                chain += [g for name in self._fallbacks(model, error) if (g := self.router.group(name)) is not None]
        if error is not None:
            raise error
        if not any(usage.has_room(m.deployment, tokens) for m in group.members):
            raise ProxyError(429, f"every deployment of {model!r} is at its rpm/tpm limit this minute",
                             type="rate_limit_error", code="rate_limit_exceeded",
                             headers={"Retry-After": str(usage.seconds_to_reset())}, kind="rate_limit")
        wait = min(health.cooling(m.deployment.id) for m in group.members)
        raise ProxyError(429, f"every deployment of {model!r} is cooling down after failures; retry shortly",
                         type="rate_limit_error", code="no_healthy_deployment",
                         headers={"Retry-After": str(max(1, math.ceil(wait)))}, kind="overloaded")

    async def _pick(self, group: ModelGroup, tokens: int, tried: set[str]) -> Provider | None:
        """The strategy's pick, with its rpm/tpm slot reserved across instances when Redis is configured."""
        while True:
            provider = group.pick(self.health, self.usage, self._strategy, tokens, tried)
            if provider is None or self.shared is None or await self.shared.reserve(provider.deployment, tokens):
                return provider
            self.usage.mark_full(provider.deployment)

    def _apply_rules(
        self, request: web.BaseRequest, body: bytes, model: str, input_tokens: int
    ) -> tuple[str, dict[str, str]]:
        """The group ``routing_rules`` send this request to (the requested model when none matches)."""
        rules = self.config.rules
        if rules is None:
            return model, {}
        decision = rules.evaluate(body, headers=request.headers, input_tokens=input_tokens)
        if decision is None:
            if model == AUTO_MODEL:
                raise ProxyError(400, f"no routing rule matched this request for model {AUTO_MODEL!r}; "
                                 "add a default rule (one without `when`)", param="model", code="no_route")
            return model, {}
        target = Router.target(decision)
        if self.router.group(target) is None:
            raise ProxyError(503, f"routing rule {decision.rule!r} chose {target!r}, which has no deployment",
                             type="upstream_error", code="no_deployment_for_route")
        log.debug("route: rule %r -> %s", decision.rule, target)
        return target, {"x-mmproxy-route-rule": decision.rule, "x-mmproxy-route-target": target}

    def _fallbacks(self, model: str, error: ProxyError | None) -> list[str]:
        settings = self.config.router
        kind = error.kind if error is not None else "overloaded"
        if kind == "context":
            return settings.context_window_fallbacks.get(model, [])
        if kind == "content_policy":
            return settings.content_policy_fallbacks.get(model, [])
        if kind in _RETRYABLE or kind in ("auth", "not_found"):
            return settings.fallbacks.get(model, [])
        return []

    async def _backoff(self, retry: int, error: ProxyError) -> bool:
        """Wait before retrying the same deployments; False when the upstream asks for too long a wait."""
        wait = max(self.config.router.retry_after, _BACKOFF_BASE_S * 2**retry)
        asked = error.headers.get("Retry-After")
        if asked is not None:
            try:
                seconds = float(asked)
            except ValueError:
                seconds = 0.0
            if seconds > _MAX_RETRY_WAIT_S:
                return False  # better served by a fallback than by waiting
            wait = max(wait, seconds)
        await asyncio.sleep(min(wait, _MAX_RETRY_WAIT_S))
        return True

    # -- endpoints -----------------------------------------------------------------
    async def chat_completions(self, request: web.BaseRequest, request_id: str) -> web.StreamResponse:
        started = time.perf_counter_ns()
        self._authorize(request)
        raw, payload = await self._read_json(request)
        model = require_model(payload)
        validate_chat(payload)
        stream = payload.get("stream") is True
        counted = tokens.count_chat(raw, model).count if self._count_tokens else 0
        target, route = self._apply_rules(request, raw, model, counted)

        async def attempt(provider: Provider) -> web.StreamResponse:
            body = dict(payload)  # adapters rewrite and drop fields; a retry starts from the client's request
            _check_chat_model(provider, model)
            if provider.deployment.max_input_tokens is not None:
                self._check_context(raw, provider)
            provider.check_params(body)
            if stream:
                translator = provider.chat_stream(body)
                data = provider.chat_request(body)
                return await self._relay_stream(request, request_id, provider, data, translator, started,
                                                error_event, route)
            data = provider.chat_request(body)
            return await self._forward(provider, data, provider.chat_response, request_id, started, route)

        return await self._failover(target, attempt, counted)

    async def messages(self, request: web.BaseRequest, request_id: str) -> web.StreamResponse:
        """Anthropic Messages API in front of any model: passed through to Anthropic, translated for others."""
        started = time.perf_counter_ns()
        self._authorize(request)
        _, body = await self._read_json(request)
        model = require_model(body)
        stream = body.get("stream") is True
        route: dict[str, str] = {}
        target, counted = model, 0
        if self._count_tokens:
            translated = orjson.dumps(anthropic_inbound.to_openai(body))
            counted = tokens.count_chat(translated, model).count
            target, route = self._apply_rules(request, translated, model, counted)

        async def attempt(provider: Provider) -> web.StreamResponse:
            _check_chat_model(provider, model)
            # Translating also validates: a malformed request is a 400 naming the field, never an upstream call.
            anthropic_upstream = provider.deployment.provider == "anthropic"
            payload = anthropic_inbound.to_openai(body, keep_cache_control=anthropic_upstream)
            validate_chat(payload)
            if provider.deployment.max_input_tokens is not None:
                self._check_context(orjson.dumps(payload), provider)
            passthrough = provider.messages_request(dict(body))
            if passthrough is not None:  # the upstream speaks Messages itself: no detour via OpenAI's shape
                if stream:
                    return await self._relay_stream(request, request_id, provider, passthrough,
                                                    provider.messages_stream(), started, _anthropic_stream_error,
                                                    route)
                return await self._forward(provider, passthrough, provider.messages_response, request_id, started,
                                           route)
            provider.check_params(payload)
            if stream:
                inner = provider.chat_stream(payload)
                outer = anthropic_inbound.OpenAIToAnthropicStream(model)
                translator: StreamTranslator = outer if inner is None else ChainedTranslator(inner, outer)
                data = provider.chat_request(payload)
                return await self._relay_stream(
                    request, request_id, provider, data, translator, started, _anthropic_stream_error, route
                )

            def translate(upstream: bytes) -> tuple[bytes, dict[str, Any] | None]:
                completion, usage = provider.chat_response(upstream)
                return anthropic_inbound.from_openai(completion, model), usage

            return await self._forward(provider, provider.chat_request(payload), translate, request_id, started,
                                       route)

        return await self._failover(target, attempt, counted)

    async def embeddings(self, request: web.BaseRequest, request_id: str) -> web.StreamResponse:
        started = time.perf_counter_ns()
        self._authorize(request)
        _, payload = await self._read_json(request)
        model = require_model(payload)
        validate_embeddings(payload)

        async def attempt(provider: Provider) -> web.StreamResponse:
            if provider.deployment.mode != "embedding" and "embed" not in provider.deployment.upstream_model:
                raise ProxyError(
                    400,
                    f"model {model!r} is not an embedding model (set model_info.mode: embedding)",
                    param="model",
                )
            data = provider.embeddings_request(dict(payload))

            def translate(body: bytes) -> tuple[bytes, dict[str, Any] | None]:
                return provider.embeddings_response(body, payload)

            return await self._forward(provider, data, translate, request_id, started)

        return await self._failover(model, attempt)

    async def health_report(self, request: web.BaseRequest, request_id: str) -> web.StreamResponse:
        """Per-deployment health as the router sees it (cooldowns, recent failures)."""
        self._authorize(request)
        deployments = [
            {"model_name": m.deployment.model_name, "id": m.deployment.id,
             "provider": m.deployment.provider, **self.health.report(m.deployment.id)}
            for group in self.router.groups.values() for m in group.members
        ]
        healthy = sum(1 for d in deployments if d["healthy"])
        body = {"healthy_count": healthy, "unhealthy_count": len(deployments) - healthy, "deployments": deployments}
        return web.Response(body=orjson.dumps(body), content_type=_JSON)

    async def models(self, request: web.BaseRequest, request_id: str) -> web.StreamResponse:
        self._authorize(request)
        names = [*self.router.groups, *([AUTO_MODEL] if self.config.rules is not None else [])]
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "mmproxy"} for name in names]
        return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type=_JSON)

    async def liveliness(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=b'"I\'m alive!"', content_type=_JSON)

    async def readiness(self, request: web.BaseRequest) -> web.StreamResponse:
        body = {"status": "healthy", "db": "Not connected", "cache": None, "mmproxy_version": __version__,
                "models": len(self.router.groups)}
        return web.Response(body=orjson.dumps(body), content_type=_JSON)

    async def not_found(self, request: web.BaseRequest) -> web.StreamResponse:
        body = error_body(f"no route for {request.method} {request.path}", "invalid_request_error",
                          "not_found")
        return web.Response(status=404, body=body, content_type=_JSON)

    async def method_not_allowed(self, request: web.BaseRequest) -> web.StreamResponse:
        body = error_body(f"method {request.method} is not allowed on {request.path}",
                          "invalid_request_error", "method_not_allowed")
        return web.Response(status=405, body=body, content_type=_JSON)

    # -- forwarding ----------------------------------------------------------------
    def _count_completion(self, deployment_id: str, usage: dict[str, Any] | None) -> None:
        completion = usage.get("completion_tokens") if usage else None
        if isinstance(completion, int):
            self.usage.add_tokens(deployment_id, completion)
            if self.shared is not None:  # after the answer: not worth a round trip on its latency
                task = asyncio.get_running_loop().create_task(self.shared.add_tokens(deployment_id, completion))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    def _check_context(self, raw: bytes, provider: Provider) -> None:
        limit = provider.deployment.max_input_tokens
        assert limit is not None
        try:
            counted = tokens.count_chat(raw, provider.deployment.upstream_model)
        except ValueError:
            return  # already validated as JSON; an uncountable shape is left to the upstream
        if counted.count > limit:
            kind = "" if counted.exact else " (estimated)"
            raise ProxyError(
                400,
                f"this request has {counted.count} input tokens{kind}, over the model's context window of {limit}",
                param="messages",
                code="context_length_exceeded",
                kind="context",
            )

    async def _forward(
        self,
        provider: Provider,
        data: bytes,
        translate: Callable[[bytes], tuple[bytes, dict[str, Any] | None]],
        request_id: str,
        started: int,
        route: dict[str, str] | None = None,
    ) -> web.Response:
        deployment = provider.deployment
        sent = time.perf_counter_ns()
        try:
            exchange = await provider.pool.fetch(data, deployment.timeout)
        except UpstreamError as exc:
            raise _upstream_failure(deployment.id, exc) from None
        received = time.perf_counter_ns()
        self.usage.observe_latency(deployment.id, (received - sent) / 1e9)
        status = exchange.status
        body = exchange.body()
        retry_after = exchange.header(b"retry-after") if status >= 400 else None
        exchange.release()
        if status >= 300:
            raise provider.error(status, body, retry_after)
        body, usage = translate(body)
        headers = {
            "x-mmproxy-request-id": request_id,
            "x-mmproxy-deployment": deployment.id,
            **(route or {}),
        }
        self._count_completion(deployment.id, usage)
        cost = usage_cost(deployment, usage)
        if cost is not None:
            headers["x-mmproxy-cost-usd"] = format_usd(cost)
        headers["x-mmproxy-overhead-ms"] = _overhead_ms(started, sent, received)
        return web.Response(body=body, content_type=_JSON, headers=headers)

    async def _relay_stream(
        self,
        request: web.BaseRequest,
        request_id: str,
        provider: Provider,
        data: bytes,
        translator: StreamTranslator | None,
        started: int,
        stream_error: Callable[[str, str], bytes],
        route: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        deployment = provider.deployment
        sent = time.perf_counter_ns()
        try:
            exchange = await provider.pool.open(data, deployment.stream_timeout)
        except UpstreamError as exc:
            raise _upstream_failure(deployment.id, exc) from None
        try:
            if exchange.status >= 300:
                retry_after = exchange.header(b"retry-after")
                try:
                    await exchange.done
                except UpstreamError as exc:
                    raise _upstream_failure(deployment.id, exc) from None
                raise provider.error(exchange.status, exchange.body(), retry_after)
            received = time.perf_counter_ns()
            relay = SSERelay(exchange, asyncio.get_running_loop(), deployment.timeout, translator)
            await relay.ready
            self.usage.observe_latency(deployment.id, (time.perf_counter_ns() - sent) / 1e9)  # time to first event
            if not relay.events_seen:
                # Nothing reached the client yet, so the failure can still be a plain error response.
                failure = exchange.done.exception() if exchange.done.done() else None
                if failure is not None:
                    raise _upstream_failure(deployment.id, failure)  # type: ignore[arg-type]
                raise ProxyError(502, f"upstream {deployment.id} ended the stream without any event",
                                 type="upstream_error", code="upstream_bad_response", kind="server")
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "x-mmproxy-request-id": request_id,
                    "x-mmproxy-deployment": deployment.id,
                    **(route or {}),
                    # A stream's headers leave first: this counts the overhead up to them.
                    "x-mmproxy-overhead-ms": _overhead_ms(started, sent, received),
                }
            )
            response.enable_chunked_encoding()
            await response.prepare(request)
            transport = request.transport
            if transport is None:
                exchange.abort()
                return response
            await relay.pipe(response, transport)
            self._count_completion(deployment.id, relay.usage())
            if not relay.saw_done:
                failure = exchange.done.exception() if exchange.done.done() else None
                if isinstance(failure, UpstreamTimeout):
                    message, code = f"upstream {deployment.id} timed out mid-stream", "upstream_timeout"
                elif failure is not None or not exchange.complete:
                    message, code = f"upstream {deployment.id} cut the stream before it was complete", \
                        "stream_cut"
                else:
                    message, code = f"upstream {deployment.id} ended the stream without [DONE]", "stream_cut"
                log.warning("request %s: %s", request_id, message)
                # A translator that already turned an upstream error into an error event has said it.
                if not transport.is_closing() and not (translator and translator.failed):
                    await response.write(stream_error(message, code))
            if not transport.is_closing():
                await response.write_eof()
            return response
        finally:
            exchange.release()


def _check_chat_model(provider: Provider, model: str) -> None:
    if provider.deployment.mode == "embedding":
        raise ProxyError(400, f"model {model!r} is an embedding model; use /v1/embeddings", param="model")


def _anthropic_stream_error(message: str, code: str) -> bytes:
    return anthropic_inbound.stream_error(message, "timeout_error" if code == "upstream_timeout" else "api_error")


def _overhead_ms(started: int, sent: int, received: int) -> str:
    """Time spent in the gateway itself: before the upstream call and after its answer."""
    return f"{((sent - started) + (time.perf_counter_ns() - received)) / _NS_PER_MS:.3f}"


def _upstream_failure(deployment_id: str, exc: BaseException) -> ProxyError:
    if isinstance(exc, UpstreamTimeout):
        return ProxyError(504, f"upstream {deployment_id}: {exc}", type="upstream_error", code="upstream_timeout",
                          kind="timeout")
    if isinstance(exc, UpstreamDisconnected):
        return ProxyError(502, f"upstream {deployment_id}: {exc}", type="upstream_error",
                          code="upstream_disconnected", kind="server")
    return ProxyError(502, f"upstream {deployment_id}: {exc}", type="upstream_error", code="upstream_unreachable",
                      kind="server")
