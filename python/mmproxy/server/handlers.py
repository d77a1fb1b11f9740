"""Request handlers: they orchestrate (auth, validate, route, forward) and hold no business rules."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from mmproxy import __version__, cost, tokens
from mmproxy.cache import policy as cache_policy
from mmproxy.cache.prompt import PromptCachePlanner
from mmproxy.cache.responses import Hit, Question, ResponseCache
from mmproxy.cache.store import CachedResponse
from mmproxy.config import CacheSettings, Config
from mmproxy.db import Database, open_database
from mmproxy.errors import ProxyError, auth_error, error_body
from mmproxy.health import Health
from mmproxy.inbound import anthropic as anthropic_inbound
from mmproxy.inbound import responses as responses_inbound
from mmproxy.keys.manager import MASTER, Caller, Keys
from mmproxy.metrics import Metrics
from mmproxy.providers import Provider, adapter, registration
from mmproxy.providers.base import ChainedTranslator, StreamTranslator
from mmproxy.providers.chunks import wants_usage
from mmproxy.router import STRATEGIES, Router
from mmproxy.server.access_log import AccessLog
from mmproxy.server.call import Call, StartupError
from mmproxy.server.failover import Failover
from mmproxy.server.forwarding import Forwarder, UsageChunk, fetch_whole
from mmproxy.server.sse import error_event, rewrite_usage_chunk
from mmproxy.shared import SharedState
from mmproxy.spend.ledger import Ledger
from mmproxy.spend.record import RequestRecord
from mmproxy.upstream.http1 import UpstreamPool
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
# A model name that routes purely by ``routing_rules``.
AUTO_MODEL = "auto"
_SQLITE_DEFAULT = "mmproxy.db"


class Gateway:
    """Process-wide state shared by the handlers: config, upstream pools, router."""

    def __init__(self, config: Config, worker: int = 0, shared_dir: Path | None = None) -> None:
        self.config = config
        self._pools: dict[str, UpstreamPool] = {}  # by origin
        self._deployment_pools: dict[str, UpstreamPool] = {}  # by deployment id
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
        self.access_log = AccessLog(config.access_log) if config.access_log else None
        self._multi_worker = shared_dir is not None  # several workers
        self._worker = worker
        self.prompt_cache = PromptCachePlanner()
        self.cache: ResponseCache | None = None
        self.failover: Failover  # made in start(), once the router has its providers
        self.forwarder: Forwarder
        self._local_embedder: Any = None
        self._stream_usage = True

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
            self._deployment_pools[deployment.id] = pool
            providers.append(adapter(deployment))
        self.router = Router(providers)
        if self.config.router.redis_url:
            self.shared = SharedState(self.config.router.redis_url, self.health, self.usage, self.config.deployments)
            await self.shared.start()
        self.failover = Failover(self.router, self.health, self.usage, self.config.router, self._strategy,
                                 self.shared, self.metrics)
        self.forwarder = Forwarder(self.usage, self.shared, self._spawn, self.pool_for)
        config = self.config
        if config.cache is not None:
            self.cache = ResponseCache(config.cache, self._embedder(config.cache),
                                       self._worker if self._multi_worker else None, self._local_embedder)
            for job in self.cache.jobs():
                self._spawn(job)
        if self.metrics is not None and self._multi_worker:
            self._spawn(self.metrics.run_sharing())
        if config.master_key or config.spend_logs:
            self.db = open_database(config.database_url, Path(_SQLITE_DEFAULT).resolve())
            try:
                await self.db.start()
            except Exception as exc:
                raise StartupError(f"cannot open the database: {self.db.describe_error(exc)}") from None
            if config.master_key:
                self.keys = Keys(self.db, config.master_key, redis_url=config.router.redis_url)
                await self.keys.start()
            if config.spend_logs:
                self.ledger = Ledger(self.db)
                await self.ledger.start()
        # Something reads every stream's usage (its cost, its tokens) unless ledger, metrics and tpm limits
        # are all off; a virtual key's budget then still needs it, per request.
        self._stream_usage = self.ledger is not None or self.metrics is not None or self._count_tokens

    def pool_for(self, deployment_id: str) -> UpstreamPool:
        """The connection pool of the deployment's origin: adapters only frame requests, this sends them."""
        return self._deployment_pools[deployment_id]

    def _embedder(self, settings: CacheSettings) -> Callable[[str], Awaitable[Any]] | None:
        if not settings.semantic:
            return None
        if settings.embedding_model is not None:
            from mmproxy.cache.deployment_embedder import DeploymentEmbedder  # numpy loads only when used

            return DeploymentEmbedder(self.router, self.health, self.usage, settings.embedding_model,
                                      self.pool_for).embed_one
        from mmproxy.cache.embedder import LocalEmbedder  # onnxruntime loads only when it is used

        self._local_embedder = LocalEmbedder()
        return self._local_embedder.embed_one

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
        if self.cache is not None:
            await self.cache.close()
        if self._local_embedder is not None:
            self._local_embedder.close()
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

    async def _admit(self, call: Call, model: str, target: str, payload: dict[str, Any]) -> None:
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
            call.reservation = await keys.admit(call.caller, model, estimate, call.counted)
        except ProxyError as exc:
            if exc.code == "budget_exceeded" and self.metrics is not None:
                self.metrics.budget_rejected(call.record.key_alias, call.record.team_id)
            raise

    def _finish(self, call: Call) -> None:
        """The request is over: settle its budget, then hand its record to the ledger and the metrics."""
        record = call.record
        record.latency_ms = (time.perf_counter_ns() - call.started) / _NS_PER_MS
        if call.reservation is not None and self.keys is not None:
            self.keys.settle(call.reservation, record.cost_usd, record.completion_tokens)
        if self.ledger is not None:
            self.ledger.record(record)
        if self.metrics is not None:
            self.metrics.observe(record)
        if self.access_log is not None:
            self.access_log.write(record)

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

    def _apply_rules(
        self, request: web.BaseRequest, body: bytes, model: str, call: Call
    ) -> tuple[str, dict[str, str]]:
        """The group ``routing_rules`` send this request to (the requested model when none matches)."""
        rules = self.config.rules
        if rules is None:
            return model, {}
        key = call.caller.key
        decision = rules.evaluate(
            body, headers=request.headers, input_tokens=call.counted,
            key=None if key is None else key.record.key_alias or key.record.key_hash,
            team=None if key is None else key.record.team_id)
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

    # -- endpoints -----------------------------------------------------------------
    async def chat_completions(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        caller = await self.authorize(request, call)
        raw, payload = await self._read_json(request)
        model = require_model(payload)
        validate_chat(payload)
        stream = payload.get("stream") is True
        record = call.record
        record.requested_model, record.stream = model, stream
        call.body = raw
        if self._count_tokens or caller.key is not None:
            call.counted = tokens.count_chat(raw, model).count
        target, route = self._apply_rules(request, raw, model, call)
        await self._admit(call, model, target, payload)
        client_usage = wants_usage(payload)
        lookup, question, hit = await self._consult_cache(request, call, payload, raw, target, route, "chat")
        if hit is not None:
            return await self._serve_cached(request, call, hit)

        async def attempt(provider: Provider) -> web.StreamResponse:
            body = dict(payload)  # adapters rewrite and drop fields; a retry starts from the client's request
            body.pop("cache", None)  # the gateway's own control field
            _check_chat_model(provider, model)
            if provider.deployment.max_input_tokens is not None:
                _check_context(raw, provider)
            provider.check_params(body)
            if provider.deployment.auto_prompt_cache:  # only where the provider has "prompt_caching" (config)
                self.prompt_cache.plan(raw, body, provider.deployment.upstream_model)
            if stream:
                translator = provider.chat_stream(body)
                data = provider.chat_request(body, stream_usage=self._stream_usage or call.caller.key is not None)
                on_usage = UsageChunk(call, provider.deployment, client_usage or translator is not None)
                return await self.forwarder.relay_stream(request, call, provider, data, translator, error_event, route,
                                                on_usage)
            data = provider.chat_request(body)
            return await self.forwarder.forward(provider, data, provider.chat_response, call, route)

        response = await self.failover.run(target, attempt, call)
        self._cache_put(lookup, question, call, response)
        return response

    async def _consult_cache(self, request: web.BaseRequest, call: Call, payload: dict[str, Any], raw: bytes,
                             target: str, route: dict[str, str], endpoint: str
                             ) -> tuple[cache_policy.Lookup | None, Question | None, Hit | None]:
        """The request's cache plan, the semantic question to keep with its answer, and a hit if there is one.

        Adds ``x-mmproxy-cache`` to ``route`` (the answer's headers); a stream that may be kept is captured
        as it is relayed. A cache failure (Redis down, embedder error) is a miss, never the request's error.
        """
        if self.cache is None:
            return None, None, None
        lookup = cache_policy.plan(self.cache.settings, request.headers, payload, raw, target, _scope(call), endpoint)
        route["x-mmproxy-cache"] = "miss" if lookup is not None and lookup.read else "bypass"
        if lookup is None:
            return None, None, None
        question = None
        if lookup.read:
            try:
                hit, question = await self.cache.get(lookup, payload)
            except Exception as exc:
                log.warning("cache lookup failed (%s: %s); answering from upstream", type(exc).__name__, exc)
                hit = None
            if hit is not None:
                return lookup, None, hit
            call.record.cache = "miss"
        if lookup.store and payload.get("stream") is True:
            call.capture = []
        return lookup, question, None

    def _cache_put(self, lookup: cache_policy.Lookup | None, question: Question | None, call: Call,
                   response: web.StreamResponse) -> None:
        record = call.record
        if lookup is None or not lookup.store or self.cache is None:
            return
        if response.status != 200 or record.error_code is not None or record.model_group is None:
            return
        if call.capture is not None:
            body = b"".join(call.capture)
            stream = True
        elif isinstance(response, web.Response) and isinstance(response.body, bytes):
            body, stream = response.body, False
        else:
            return
        self.cache.put(lookup, CachedResponse(
            body=body, stream=stream, model_group=record.model_group, deployment=record.deployment or "",
            prompt_tokens=record.prompt_tokens, completion_tokens=record.completion_tokens,
            cost_usd=record.cost_usd, created=time.time()), question)

    async def _serve_cached(self, request: web.BaseRequest, call: Call, hit: Hit) -> web.StreamResponse:
        """Answer from the cache: no upstream call, no cost; the ledger notes what it saved."""
        entry = hit.response
        record = call.record
        record.cache, record.saved_usd = hit.kind, entry.cost_usd
        record.model_group, record.deployment = entry.model_group, entry.deployment
        record.prompt_tokens, record.completion_tokens = entry.prompt_tokens, entry.completion_tokens
        headers = {"x-mmproxy-request-id": record.request_id, "x-mmproxy-cache": hit.kind,
                   "x-mmproxy-deployment": entry.deployment, "x-mmproxy-cost-usd": "0"}
        if hit.similarity is not None:
            headers["x-mmproxy-cache-similarity"] = f"{hit.similarity:.4f}"
        if not entry.stream:
            record.overhead_ms = (time.perf_counter_ns() - call.started) / _NS_PER_MS
            return web.Response(body=entry.body, content_type=_JSON, headers=headers)
        body = entry.body
        if b"x_mmproxy_cost_usd" in body:  # the replay itself cost nothing
            body = rewrite_usage_chunk(body, True, _zero_cost)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               **headers})
        response.enable_chunked_encoding()
        await response.prepare(request)
        record.ttft_ms = record.overhead_ms = (time.perf_counter_ns() - call.started) / _NS_PER_MS
        await response.write(body)
        await response.write_eof()
        return response

    async def messages(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """Anthropic Messages API in front of any model: passed through to Anthropic, translated for others."""
        caller = await self.authorize(request, call)
        raw, body = await self._read_json(request)
        model = require_model(body)
        stream = body.get("stream") is True
        record = call.record
        record.requested_model, record.stream = model, stream
        route: dict[str, str] = {}
        target = model
        if self._count_tokens or caller.key is not None:
            translated = call.body = orjson.dumps(anthropic_inbound.to_openai(body))
            call.counted = tokens.count_chat(translated, model).count
            target, route = self._apply_rules(request, translated, model, call)
        await self._admit(call, model, target, body)
        lookup, question, hit = await self._consult_cache(request, call, body, raw, target, route, "messages")
        if hit is not None:
            return await self._serve_cached(request, call, hit)
        body.pop("cache", None)  # the gateway's own control field, never forwarded

        async def attempt(provider: Provider) -> web.StreamResponse:
            _check_chat_model(provider, model)
            # Translating also validates: a malformed request is a 400 naming the field, never an upstream call.
            native = "messages_passthrough" in registration(provider.deployment.provider).capabilities
            payload = anthropic_inbound.to_openai(body, keep_cache_control=native)
            validate_chat(payload)
            if provider.deployment.max_input_tokens is not None:
                _check_context(orjson.dumps(payload), provider)
            passthrough = provider.messages_request(dict(body))
            if passthrough is not None:  # the upstream speaks Messages itself: no detour via OpenAI's shape
                if stream:
                    return await self.forwarder.relay_stream(request, call, provider, passthrough,
                                                             provider.messages_stream(), _anthropic_stream_error,
                                                             route)
                return await self.forwarder.forward(provider, passthrough, provider.messages_response, call, route)

            def anthropic_stream() -> tuple[StreamTranslator, Callable[[str, str], bytes]]:
                return anthropic_inbound.OpenAIToAnthropicStream(model), _anthropic_stream_error

            return await self._via_chat(request, call, provider, payload, route, anthropic_stream,
                                        lambda completion: anthropic_inbound.from_openai(completion, model))

        response = await self.failover.run(target, attempt, call)
        self._cache_put(lookup, question, call, response)
        return response

    async def _via_chat(
        self, request: web.BaseRequest, call: Call, provider: Provider, payload: dict[str, Any],
        route: dict[str, str], client_stream: Callable[[], tuple[StreamTranslator, Callable[[str, str], bytes]]],
        client_answer: Callable[[bytes], bytes],
    ) -> web.StreamResponse:
        """One attempt of another client API answered by a chat completion: ``client_stream`` makes the translator
        of a chat stream (and its error event), ``client_answer`` translates a whole chat completion."""
        provider.check_params(payload)
        if payload.get("stream") is True:
            inner = provider.chat_stream(payload)
            outer, stream_error = client_stream()
            translator = outer if inner is None else ChainedTranslator(inner, outer)
            return await self.forwarder.relay_stream(request, call, provider, provider.chat_request(payload),
                                                     translator, stream_error, route)

        def translate(upstream: bytes) -> tuple[bytes, dict[str, Any] | None]:
            completion, usage = provider.chat_response(upstream)
            return client_answer(completion), usage

        return await self.forwarder.forward(provider, provider.chat_request(payload), translate, call, route)

    async def responses(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """OpenAI's Responses API in front of any chat model: translated to a chat completion and back."""
        caller = await self.authorize(request, call)
        raw, body = await self._read_json(request)
        model = require_model(body)
        chat = responses_inbound.to_chat(body)
        validate_chat(chat)
        stream = chat.get("stream") is True
        record = call.record
        record.requested_model, record.stream = model, stream
        target, route = model, {}
        if self._count_tokens or caller.key is not None:
            translated = call.body = orjson.dumps(chat)
            call.counted = tokens.count_chat(translated, model).count
            target, route = self._apply_rules(request, translated, model, call)
        await self._admit(call, model, target, chat)
        # The key hashes the client's body; the plan and the semantic question read its chat translation.
        planned = {**chat, "cache": body.get("cache")} if "cache" in body else chat
        lookup, question, hit = await self._consult_cache(request, call, planned, raw, target, route, "responses")
        if hit is not None:
            return await self._serve_cached(request, call, hit)

        async def attempt(provider: Provider) -> web.StreamResponse:
            _check_chat_model(provider, model)
            payload = dict(chat)
            if provider.deployment.max_input_tokens is not None:
                _check_context(orjson.dumps(payload), provider)

            def responses_stream() -> tuple[StreamTranslator, Callable[[str, str], bytes]]:
                translator = responses_inbound.ChatToResponsesStream(body)
                return translator, translator.failure

            return await self._via_chat(request, call, provider, payload, route, responses_stream,
                                        lambda completion: responses_inbound.from_chat(completion, body))

        response = await self.failover.run(target, attempt, call)
        self._cache_put(lookup, question, call, response)
        return response

    async def count_message_tokens(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """Anthropic's ``count_tokens``: the upstream's own count when the model runs on Anthropic, else the
        gateway's (exact for OpenAI's encodings, an estimate otherwise: ``x-mmproxy-token-count`` says which)."""
        await self.authorize(request, call)
        _, body = await self._read_json(request)
        model = require_model(body)
        group = self.router.group(model)
        if group is None:
            raise unknown_model(model)
        # Translating validates the request; max_tokens is required there but plays no part in a count.
        payload = anthropic_inbound.to_openai({**body, "max_tokens": 1})
        provider = next((m for m in group.members if not self.health.cooling(m.deployment.id)), group.members[0])
        upstream = provider.count_tokens_request(dict(body))
        if upstream is not None:
            status, answer, retry_after = await fetch_whole(self.pool_for(provider.deployment.id), provider.deployment,
                                                            upstream)
            if status >= 300:
                raise provider.error(status, answer, retry_after)
            return web.Response(body=answer, content_type=_JSON, headers={"x-mmproxy-token-count": "upstream"})
        counted = tokens.count_chat(orjson.dumps(payload), provider.deployment.upstream_model)
        return web.Response(body=orjson.dumps({"input_tokens": counted.count}), content_type=_JSON,
                            headers={"x-mmproxy-token-count": "exact" if counted.exact else "estimate"})

    async def embeddings(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        await self.authorize(request, call)
        raw, payload = await self._read_json(request)
        model = require_model(payload)
        validate_embeddings(payload)
        call.record.requested_model = model
        await self._admit(call, model, model, {"max_tokens": 0})
        route: dict[str, str] = {}
        lookup, _, hit = await self._consult_cache(request, call, payload, raw, model, route, "embeddings")
        if hit is not None:
            return await self._serve_cached(request, call, hit)
        payload.pop("cache", None)

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

            return await self.forwarder.forward(provider, data, translate, call, route)

        response = await self.failover.run(model, attempt, call)
        self._cache_put(lookup, None, call, response)
        return response

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
        """``GET /v1/models`` (and ``/v1/models/{id}``) in a shape both SDKs read: OpenAI's list fields and
        Anthropic's (``type``, ``display_name``, ``created_at``, paging ids)."""
        caller = await self.authorize(request)
        names = [*self.router.groups, *([AUTO_MODEL] if self.config.rules is not None else [])]
        allowed = caller.key.record.models if caller.key is not None else []
        if allowed and "*" not in allowed:
            names = [name for name in names if name in allowed]  # a key sees the models it may use
        wanted = request.path.partition("/models/")[2]
        if wanted:
            if wanted not in names:
                raise ProxyError(404, f"model {wanted!r} is not served here (or not to this key)",
                                 code="model_not_found", param="model")
            return web.Response(body=orjson.dumps(_model(wanted)), content_type=_JSON)
        data = [_model(name) for name in names]
        body = {"object": "list", "data": data, "has_more": False,
                "first_id": names[0] if names else None, "last_id": names[-1] if names else None}
        return web.Response(body=orjson.dumps(body), content_type=_JSON)

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

def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "mmproxy", "type": "model",
            "display_name": name, "created_at": "1970-01-01T00:00:00Z"}


def _scope(call: Call) -> str:
    """Whose cache entries a request may read: its team's, else its key's (the master key has its own)."""
    key = call.caller.key
    if key is None:
        return "master"
    return f"team:{key.record.team_id}" if key.record.team_id else f"key:{key.record.key_hash}"


def _zero_cost(chunk: dict[str, object]) -> None:
    chunk["x_mmproxy_cost_usd"] = 0.0


def _check_chat_model(provider: Provider, model: str) -> None:
    if provider.deployment.mode == "embedding":
        raise ProxyError(400, f"model {model!r} is an embedding model; use /v1/embeddings", param="model")


def _anthropic_stream_error(message: str, code: str) -> bytes:
    return anthropic_inbound.stream_error(message, "timeout_error" if code == "upstream_timeout" else "api_error")


def _check_context(raw: bytes, provider: Provider) -> None:
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
