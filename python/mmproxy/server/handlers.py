"""Request handlers: they orchestrate (auth, validate, route, forward) and hold no business rules."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from mmproxy import __version__, cost, tokens
from mmproxy.cache.prompt import PromptCachePlanner
from mmproxy.config import Config, Deployment
from mmproxy.db import Database, open_database
from mmproxy.errors import ProxyError, auth_error, error_body
from mmproxy.health import Health
from mmproxy.inbound import anthropic as anthropic_inbound
from mmproxy.keys.manager import MASTER, Caller, Keys, Reservation
from mmproxy.metrics import Metrics
from mmproxy.providers import Provider, provider_for
from mmproxy.providers.base import ChainedTranslator, StreamTranslator
from mmproxy.providers.chunks import wants_usage
from mmproxy.router import STRATEGIES, ModelGroup, Router
from mmproxy.server.sse import SSERelay, error_event, rewrite_usage_chunk
from mmproxy.shared import SharedState
from mmproxy.spend.ledger import Ledger
from mmproxy.spend.record import RequestRecord
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
_SQLITE_DEFAULT = "mmproxy.db"


class Call:
    """One client request while it runs: who sent it, its record, its budget reservation."""

    __slots__ = ("caller", "counted", "record", "reservation", "started")

    def __init__(self, record: RequestRecord, started: int) -> None:
        self.record = record
        self.started = started  # perf_counter_ns when the handler began
        self.caller: Caller = MASTER
        self.counted = 0  # input tokens by the gateway's own count (0 when nothing needed it)
        self.reservation: Reservation | None = None


class Gateway:
    """Process-wide state shared by the handlers: config, upstream pools, router."""

    def __init__(self, config: Config, worker: int = 0, shared_dir: Path | None = None) -> None:
        self.config = config
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
        self.db: Database | None = None
        self.keys: Keys | None = None
        self.ledger: Ledger | None = None
        self.metrics: Metrics | None = Metrics(shared_dir, worker) if config.metrics else None
        self._metrics_shared = shared_dir is not None
        self.prompt_cache = PromptCachePlanner()

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
        config = self.config
        if self.metrics is not None and self._metrics_shared:
            self._spawn(self.metrics.run_sharing())
        if config.master_key or config.spend_logs:
            self.db = open_database(config.database_url, Path(_SQLITE_DEFAULT).resolve())
            await self.db.start()
            if config.master_key:
                self.keys = Keys(self.db, config.master_key)
                await self.keys.start()
            if config.spend_logs:
                self.ledger = Ledger(self.db)
                await self.ledger.start()

    def _spawn(self, job: Awaitable[None]) -> None:
        task = asyncio.ensure_future(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        for pool in self._pools.values():
            pool.close()
        if self.shared is not None:
            await self.shared.stop()
        if self.keys is not None:
            await self.keys.stop()
        if self.ledger is not None:
            await self.ledger.close()  # every row still queued is written before the process exits
        if self.db is not None:
            await self.db.close()

    # -- plumbing ------------------------------------------------------------------
    def _request_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    async def authorize(self, request: web.BaseRequest, call: Call | None = None) -> Caller:
        """The caller: the master key (admin) or a virtual key; 401 otherwise."""
        keys = self.keys
        if keys is None:
            return MASTER
        headers = request.headers
        supplied = headers.get("Authorization")
        if supplied is not None:
            scheme, _, token = supplied.partition(" ")
            if scheme.lower() != "bearer":
                raise auth_error("Authorization header must be 'Bearer <key>'")
            supplied = token.strip()
        else:
            supplied = headers.get("x-api-key")
        caller = await keys.authenticate(supplied)
        if call is not None:
            call.caller = caller
            if caller.key is not None:
                key = caller.key.record
                record = call.record
                record.key_hash, record.key_alias, record.team_id = key.key_hash, key.key_alias, key.team_id
        return caller

    async def require_admin(self, request: web.BaseRequest) -> None:
        """Key and spend administration: the master key only."""
        if self.keys is None:
            raise ProxyError(400, "key management needs general_settings.master_key", code="no_master_key")
        if not (await self.authorize(request)).admin:
            raise ProxyError(403, "this endpoint needs the master key", type="permission_error",
                             code="admin_only")

    def _admit(self, call: Call, model: str, target: str, payload: dict[str, Any]) -> None:
        """Key restrictions, limits and the budget reservation, before any upstream call."""
        keys = self.keys
        if keys is None or call.caller.key is None:
            return
        group = self.router.group(target)
        members = [m.deployment for m in group.members] if group is not None else []
        completion = payload.get("max_completion_tokens") or payload.get("max_tokens")
        if not isinstance(completion, int):
            completion = cost.DEFAULT_COMPLETION_ESTIMATE
        estimate = cost.estimate(members, call.counted, completion)
        try:
            call.reservation = keys.admit(call.caller, model, estimate, call.counted)
        except ProxyError as exc:
            if exc.code == "budget_exceeded" and self.metrics is not None:
                self.metrics.budget_rejected(call.record.key_alias, call.record.team_id)
            raise

    def _finish(self, call: Call) -> None:
        """The request is over: settle its budget, then hand its record to the ledger and the metrics."""
        record = call.record
        record.latency_ms = (time.perf_counter_ns() - call.started) / _NS_PER_MS
        if call.reservation is not None:
            Keys.settle(call.reservation, record.cost_usd, record.completion_tokens)
        if self.ledger is not None:
            self.ledger.record(record)
        if self.metrics is not None:
            self.metrics.observe(record)

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
        handler: Callable[[web.BaseRequest, Call], Awaitable[web.StreamResponse]],
        render: Callable[[ProxyError], bytes] = ProxyError.body,
        endpoint: str | None = None,
    ) -> Handler:
        """Wrap a handler so every failure leaves as an error in the API's own shape (``render``).

        With an ``endpoint`` name the request is accounted: one ledger row and one metrics observation,
        whatever the outcome, a client disconnect included.
        """

        def respond(exc: ProxyError, request_id: str) -> web.Response:
            headers = {"x-mmproxy-request-id": request_id, **exc.headers}
            return web.Response(status=exc.status, body=render(exc), content_type=_JSON, headers=headers)

        async def run(request: web.BaseRequest) -> web.StreamResponse:
            call = Call(RequestRecord(self._request_id(), endpoint or ""), time.perf_counter_ns())
            record = call.record
            try:
                return await handler(request, call)
            except ProxyError as exc:
                record.status, record.error_code = exc.status, exc.code or exc.type
                return respond(exc, record.request_id)
            except asyncio.CancelledError:
                record.status, record.error_code = 499, "client_disconnected"
                raise
            except Exception:
                log.exception("internal error handling %s %s (request %s)", request.method, request.path,
                              record.request_id)
                record.status, record.error_code = 500, "internal_error"
                return respond(
                    ProxyError(500, "internal gateway error; see the gateway log", type="server_error",
                               code="internal_error"),
                    record.request_id,
                )
            finally:
                if endpoint is not None:
                    self._finish(call)

        return run

    # -- failover ------------------------------------------------------------------
    async def _failover(
        self, model: str, attempt: Callable[[Provider], Awaitable[web.StreamResponse]], call: Call
    ) -> web.StreamResponse:
        """Run ``attempt`` on deployments of ``model`` until one answers: retries, then fallbacks.

        Retries go to another healthy deployment of the group first and back off (honouring
        ``Retry-After``) only when none is left. Which failures are retried and which fallback list
        applies is decided by the error's kind, never by provider. An error without a kind is the
        request's own fault and ends the request at once. A stream counts as answered once its
        first byte reached the client, so it never falls back after that. Every attempt lands in the
        request's record, so its cost and its retries and fallbacks are the request's own.
        """
        group = self.router.group(model)
        if group is None:
            raise unknown_model(model)
        settings = self.config.router
        health = self.health
        usage = self.usage
        record = call.record
        tokens = call.counted
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
                deployment = provider.deployment
                deployment_id = deployment.id
                if tried:
                    if record.model_group == current.name:
                        record.retries += 1
                    else:
                        record.fallbacks += 1
                record.model_group, record.deployment = current.name, deployment_id
                record.provider, record.tier = deployment.provider, deployment.tier
                usage.start(deployment_id, tokens)
                try:
                    response = await attempt(provider)
                except ProxyError as exc:
                    if exc.kind is None:
                        raise
                    if health.failed(deployment_id, exc.kind) and self.metrics is not None:
                        self.metrics.cooldown(deployment_id)
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
        self, request: web.BaseRequest, body: bytes, model: str, call: Call
    ) -> tuple[str, dict[str, str]]:
        """The group ``routing_rules`` send this request to (the requested model when none matches)."""
        rules = self.config.rules
        if rules is None:
            return model, {}
        decision = rules.evaluate(body, headers=request.headers, input_tokens=call.counted)
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
        call.record.rule = decision.rule
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
    async def chat_completions(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        caller = await self.authorize(request, call)
        raw, payload = await self._read_json(request)
        model = require_model(payload)
        validate_chat(payload)
        stream = payload.get("stream") is True
        record = call.record
        record.requested_model, record.stream = model, stream
        if self._count_tokens or caller.key is not None:
            call.counted = tokens.count_chat(raw, model).count
        target, route = self._apply_rules(request, raw, model, call)
        self._admit(call, model, target, payload)
        client_usage = wants_usage(payload)

        async def attempt(provider: Provider) -> web.StreamResponse:
            body = dict(payload)  # adapters rewrite and drop fields; a retry starts from the client's request
            _check_chat_model(provider, model)
            if provider.deployment.max_input_tokens is not None:
                self._check_context(raw, provider)
            provider.check_params(body)
            if provider.deployment.auto_prompt_cache and provider.deployment.provider == "anthropic":
                self.prompt_cache.plan(raw, body, provider.deployment.upstream_model)
            if stream:
                translator = provider.chat_stream(body)
                data = provider.chat_request(body)
                on_usage = self._usage_chunk(call, provider.deployment, client_usage or translator is not None)
                return await self._relay_stream(request, call, provider, data, translator, error_event, route,
                                                on_usage)
            data = provider.chat_request(body)
            return await self._forward(provider, data, provider.chat_response, call, route)

        return await self._failover(target, attempt, call)

    async def messages(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """Anthropic Messages API in front of any model: passed through to Anthropic, translated for others."""
        caller = await self.authorize(request, call)
        _, body = await self._read_json(request)
        model = require_model(body)
        stream = body.get("stream") is True
        record = call.record
        record.requested_model, record.stream = model, stream
        route: dict[str, str] = {}
        target = model
        if self._count_tokens or caller.key is not None:
            translated = orjson.dumps(anthropic_inbound.to_openai(body))
            call.counted = tokens.count_chat(translated, model).count
            target, route = self._apply_rules(request, translated, model, call)
        self._admit(call, model, target, body)

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
                    return await self._relay_stream(request, call, provider, passthrough, provider.messages_stream(),
                                                    _anthropic_stream_error, route)
                return await self._forward(provider, passthrough, provider.messages_response, call, route)
            provider.check_params(payload)
            if stream:
                inner = provider.chat_stream(payload)
                outer = anthropic_inbound.OpenAIToAnthropicStream(model)
                translator: StreamTranslator = outer if inner is None else ChainedTranslator(inner, outer)
                data = provider.chat_request(payload)
                return await self._relay_stream(request, call, provider, data, translator, _anthropic_stream_error,
                                                route)

            def translate(upstream: bytes) -> tuple[bytes, dict[str, Any] | None]:
                completion, usage = provider.chat_response(upstream)
                return anthropic_inbound.from_openai(completion, model), usage

            return await self._forward(provider, provider.chat_request(payload), translate, call, route)

        return await self._failover(target, attempt, call)

    async def embeddings(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        await self.authorize(request, call)
        _, payload = await self._read_json(request)
        model = require_model(payload)
        validate_embeddings(payload)
        call.record.requested_model = model
        self._admit(call, model, model, {"max_tokens": 0})

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

            return await self._forward(provider, data, translate, call)

        return await self._failover(model, attempt, call)

    async def health_report(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """Per-deployment health as the router sees it (cooldowns, recent failures)."""
        await self.authorize(request)
        deployments = [
            {"model_name": m.deployment.model_name, "id": m.deployment.id,
             "provider": m.deployment.provider, **self.health.report(m.deployment.id)}
            for group in self.router.groups.values() for m in group.members
        ]
        healthy = sum(1 for d in deployments if d["healthy"])
        body = {"healthy_count": healthy, "unhealthy_count": len(deployments) - healthy, "deployments": deployments}
        return web.Response(body=orjson.dumps(body), content_type=_JSON)

    async def models(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        caller = await self.authorize(request)
        names = [*self.router.groups, *([AUTO_MODEL] if self.config.rules is not None else [])]
        allowed = caller.key.record.models if caller.key is not None else []
        if allowed and "*" not in allowed:
            names = [name for name in names if name in allowed]  # a key sees the models it may use
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "mmproxy"} for name in names]
        return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type=_JSON)

    async def liveliness(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=b'"I\'m alive!"', content_type=_JSON)

    async def readiness(self, request: web.BaseRequest) -> web.StreamResponse:
        body = {"status": "healthy", "db": "connected" if self.db is not None else "Not connected", "cache": None,
                "mmproxy_version": __version__,
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
                self._spawn(self.shared.add_tokens(deployment_id, completion))

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
        call: Call,
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
        record = call.record
        headers = {
            "x-mmproxy-request-id": record.request_id,
            "x-mmproxy-deployment": deployment.id,
            **(route or {}),
        }
        self._count_completion(deployment.id, usage)
        if cost.charge(record, deployment, usage, call.counted) is not None:
            headers["x-mmproxy-cost-usd"] = cost.format_usd(record.cost_usd)
        overhead = _overhead_ns(call.started, sent, received)
        record.overhead_ms = overhead / _NS_PER_MS
        headers["x-mmproxy-overhead-ms"] = f"{record.overhead_ms:.3f}"
        return web.Response(body=body, content_type=_JSON, headers=headers)

    def _usage_chunk(self, call: Call, deployment: Deployment, keep: bool) -> Callable[[bytes], bytes]:
        """Rewrites a stream's usage chunk: the request's cost so far added, or the chunk dropped when
        only the gateway asked for it (the client did not set ``stream_options.include_usage``)."""
        record = call.record

        def annotate(chunk: dict[str, object]) -> None:
            usage = chunk.get("usage")
            if isinstance(usage, dict):
                priced = cost.price(deployment, *cost.usage_tokens(usage))
                if priced is not None:
                    chunk["x_mmproxy_cost_usd"] = record.cost_usd + priced[0]

        return lambda events: rewrite_usage_chunk(events, keep, annotate)

    async def _relay_stream(
        self,
        request: web.BaseRequest,
        call: Call,
        provider: Provider,
        data: bytes,
        translator: StreamTranslator | None,
        stream_error: Callable[[str, str], bytes],
        route: dict[str, str] | None = None,
        on_usage: Callable[[bytes], bytes] | None = None,
    ) -> web.StreamResponse:
        deployment = provider.deployment
        record = call.record
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
            relay = SSERelay(exchange, asyncio.get_running_loop(), deployment.timeout, translator, on_usage)
            await relay.ready
            self.usage.observe_latency(deployment.id, (time.perf_counter_ns() - sent) / 1e9)  # time to first event
            if not relay.events_seen:
                # Nothing reached the client yet, so the failure can still be a plain error response.
                failure = exchange.done.exception() if exchange.done.done() else None
                if failure is not None:
                    raise _upstream_failure(deployment.id, failure)  # type: ignore[arg-type]
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
                usage = relay.usage()
                cost.charge(record, deployment, usage, call.counted)
                self._count_completion(deployment.id, usage)
            if not relay.saw_done:
                failure = exchange.done.exception() if exchange.done.done() else None
                if isinstance(failure, UpstreamTimeout):
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
            exchange.release()


def _check_chat_model(provider: Provider, model: str) -> None:
    if provider.deployment.mode == "embedding":
        raise ProxyError(400, f"model {model!r} is an embedding model; use /v1/embeddings", param="model")


def _anthropic_stream_error(message: str, code: str) -> bytes:
    return anthropic_inbound.stream_error(message, "timeout_error" if code == "upstream_timeout" else "api_error")


def _overhead_ns(started: int, sent: int, received: int) -> int:
    """Time spent in the gateway itself: before the upstream call and after its answer."""
    return (sent - started) + (time.perf_counter_ns() - received)


def _upstream_failure(deployment_id: str, exc: BaseException) -> ProxyError:
    if isinstance(exc, UpstreamTimeout):
        return ProxyError(504, f"upstream {deployment_id}: {exc}", type="upstream_error", code="upstream_timeout",
                          kind="timeout")
    if isinstance(exc, UpstreamDisconnected):
        return ProxyError(502, f"upstream {deployment_id}: {exc}", type="upstream_error",
                          code="upstream_disconnected", kind="server")
    return ProxyError(502, f"upstream {deployment_id}: {exc}", type="upstream_error", code="upstream_unreachable",
                      kind="server")
