"""The one request path every client API takes, step by step:

    auth → parse/validate → count → rules → redact → learned router → admit → cache → route (or cascade) → store
    → account

``serve`` reads top-down in that order. A client API (``apis``) supplies only what differs: how its body
is parsed and validated, one attempt on a deployment, and the shape its answers and errors leave in.
The cache may answer early; a budget or limit may refuse early; every request, whatever its outcome, is
accounted once (``handler``).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web

from mmproxy import cost, tokens
from mmproxy.config import Config, Deployment
from mmproxy.errors import ProxyError, auth_error
from mmproxy.keys.manager import MASTER, Caller
from mmproxy.keys.sessions import COOKIE as SESSION_COOKIE
from mmproxy.pipeline.accounting import Accounting
from mmproxy.pipeline.apis import ClientAPI, Inbound
from mmproxy.pipeline.caching import CacheStep
from mmproxy.pipeline.call import Call
from mmproxy.pipeline.forwarding import Forwarder
from mmproxy.pipeline.upstreams import Upstream, Upstreams
from mmproxy.router import ModelGroup, Router, Trace
from mmproxy.spend.record import RequestRecord
from mmproxy.validation import parse_json_object, refuse_upstream_override

if TYPE_CHECKING:
    # numpy, FAISS and ONNX load only with a learned router or a cascade
    from mmproxy.pipeline.smart_routing import SmartRouting
    from mmproxy.pipeline.subcalls import MultiCall

log = logging.getLogger("mmproxy")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
T = TypeVar("T")
_JSON = "application/json"


class Pipeline:
    def __init__(self, config: Config, router: Router, upstreams: Upstreams, accounting: Accounting,
                 cache: CacheStep | None) -> None:
        self.config = config
        self.router = router
        self.upstreams = upstreams
        self.accounting = accounting
        self.cache = cache
        self.smart: SmartRouting | None = None  # the learned routers' virtual models, when the config has any
        self.multi: dict[str, MultiCall] = {}  # virtual models that call several models, by name
        self.forwarder = Forwarder(router, accounting.ledger.begin if accounting.ledger is not None else None)
        self.privacy = config.privacy
        self.lengths = cost.CompletionLengths()  # what budget reservations expect an answer to take
        self.in_flight = 0  # requests being served: what a graceful shutdown waits for
        # Whether a key with a budget may meet a group it may not use (a deployment without a price would count as
        # free): a configured one, or one a wildcard makes for a model the registry has no price for.
        self._refuse_unpriced = config.budget_on_unpriced_models == "refuse" and (
            bool(router.wildcards) or any(map(_unpriced, router.groups.values())))
        keys, ledger, metrics = accounting.keys, accounting.ledger, accounting.metrics
        self.keys = keys
        self._persist = ledger.persist if ledger is not None else None  # a row on disk before its answer leaves
        # Input tokens are counted per request only when something reads them (tpm limits, rules, budgets).
        self._count_tokens = config.rules is not None or any(d.tpm for d in config.deployments)
        # Something reads every stream's usage (its cost, its tokens) unless ledger, metrics and tpm limits
        # are all off; a virtual key's budget then still needs it, per request.
        self.stream_usage = ledger is not None or metrics is not None or self._count_tokens
        # Request ids: a random per-process prefix and a counter, unique across workers and instances.
        self._id_prefix = os.urandom(6).hex()
        self._ids = itertools.count(1)

    # -- the request path ------------------------------------------------------------
    async def serve(self, api: ClientAPI, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        caller = await self.authorize(request, call)                                        # auth
        body, raw = await self.read_json(request)                                            # parse/validate
        refuse_upstream_override(body)
        inbound = api.parse(body, raw)
        record = call.record
        record.requested_model, record.stream = inbound.model, inbound.stream
        headers: dict[str, str] = {}
        target = inbound.model
        if api.chat:
            call.inbound = inbound
            if self._count_tokens or caller.key is not None:                                # count
                call.counted = tokens.count_chat(inbound.chat_bytes(), inbound.model).count
            if self.router.rules is not None:                                               # rules
                target = self.choose(request, call, inbound, headers)
        if call.redaction is None and self.privacy is not None and self.privacy.always is not None:
            call.redaction = self.privacy.redaction(self.privacy.always)  # every API, embeddings too
        if call.redaction is not None:                                                      # redact
            self.redact(call, inbound, headers)
        if api.chat and self.smart is not None and target in self.smart:                    # learned router
            target = await self.smart.choose(target, inbound.chat, call, headers)
        if caller.key is not None:                                                          # admit
            await self.admit(call, inbound.model, target, inbound)
        # A redacted request's answer holds the restored values, and its redacted body is no key: not cached.
        cache, plan = (self.cache if call.redaction is None else None), None
        if cache is not None:                                                               # cache
            plan, hit = await cache.consult(request.headers, call, api.cache_payload(inbound), inbound.raw,
                                            target, api.endpoint, headers)
            if hit is not None:
                return await cache.serve(request, call, hit)

        def attempt(upstream: Upstream) -> Awaitable[web.StreamResponse]:
            return api.attempt(self, request, call, inbound, upstream, headers)

        multi = self.multi.get(target) if self.multi else None
        if multi is None:
            response = await self.route(call, target, attempt)                              # route
        else:                                                                               # or several calls
            response = await multi.serve(self, api, request, call, inbound, target, headers)
        if cache is not None and plan is not None:
            cache.store(plan, request, call, response)                                      # store
        return response                                                                     # account: handler

    def handler(self, serve: Callable[[web.BaseRequest, Call], Awaitable[web.StreamResponse]],
                render: Callable[[ProxyError], bytes] = ProxyError.body, endpoint: str | None = None) -> Handler:
        """An aiohttp handler around ``serve``: every failure leaves as an error in the API's own shape
        (``render``), and with an ``endpoint`` name the request is accounted — one ledger row and one metrics
        observation, whatever the outcome, a client disconnect included."""

        def respond(exc: ProxyError, request_id: str) -> web.Response:
            headers = {"x-mmproxy-request-id": request_id, **exc.headers}
            return web.Response(status=exc.status, body=render(exc), content_type=_JSON, headers=headers)

        async def run(request: web.BaseRequest) -> web.StreamResponse:
            call = Call(RequestRecord(self._request_id(), endpoint or ""), time.perf_counter_ns())
            record = call.record
            self.in_flight += 1
            try:
                response = await serve(request, call)
            except ProxyError as exc:
                record.status, record.error_code = exc.status, exc.code or exc.type
                response = respond(exc, record.request_id)
            except asyncio.CancelledError:
                record.status, record.error_code = 499, "client_disconnected"
                raise
            except Exception:
                log.exception("internal error handling %s %s (request %s)", request.method, request.path,
                              record.request_id)
                record.status, record.error_code = 500, "internal_error"
                response = respond(
                    ProxyError(500, "internal gateway error; see the gateway log", type="server_error",
                               code="internal_error"),
                    record.request_id,
                )
            finally:
                self.in_flight -= 1
                if endpoint is not None:
                    self.accounting.finish(call)
                    if record.status == 200 and record.completion_tokens and record.model_group is not None \
                            and record.cache not in ("hit", "semantic-hit"):
                        self.lengths.observe(record.model_group, record.completion_tokens)
            if endpoint is not None and self._persist is not None and not response.prepared:
                # The spool writes a turn's rows at its end; this answer leaves before that, so its row (with any
                # others buffered) is written now: a SIGKILL in between would lose it.
                self._persist()
            return response

        return run

    def api_handler(self, api: ClientAPI) -> Handler:
        """The handler of a client API: ``serve`` through it, accounted under its endpoint name."""
        return self.handler(functools.partial(self.serve, api), api.render_error, api.endpoint)

    # -- the steps -------------------------------------------------------------------
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
        if supplied is None and "x-mmproxy-ui" in headers:
            # The dashboard's own calls: its session cookie, honoured only with a header a cross-site form
            # cannot send, so another site cannot act with an operator's session.
            caller = await keys.authenticate_session(request.cookies.get(SESSION_COOKIE))
        else:
            caller = await keys.authenticate(supplied)
        if call is not None:
            call.caller = caller
            if caller.key is not None:
                key = caller.key.record
                record = call.record
                record.key_hash, record.key_alias, record.team_id = key.key_hash, key.key_alias, key.team_id
        return caller

    async def read_json(self, request: web.BaseRequest) -> tuple[dict[str, object], bytes]:
        """The request's JSON object and its raw bytes; 413 over the size limit, 400 when not a JSON object."""
        try:
            if request.content.is_eof():  # the whole body came with the headers: the usual case, no timer
                raw = await request.read()
            else:  # a client that stops sending its body must not hold the handler and its memory forever
                raw = await asyncio.wait_for(request.read(), self.config.request_body_timeout)
        except web.HTTPRequestEntityTooLarge:
            limit_mb = self.config.max_request_bytes / (1024 * 1024)
            raise ProxyError(
                413, f"request body exceeds the {limit_mb:g} MB limit", code="request_too_large"
            ) from None
        except asyncio.TimeoutError:
            raise ProxyError(408, f"the request body did not arrive within {self.config.request_body_timeout:g} s",
                             code="request_timeout") from None
        return parse_json_object(raw), raw

    async def admit(self, call: Call, model: str, target: str, inbound: Inbound) -> None:
        """A virtual key's call to ``target`` (asked for as ``model``): refused for an unpriced group when the key
        (or its team or user) has a budget, then their restrictions, limits and budget reservation."""
        caller = call.caller
        if caller.key is None:
            return
        if self._refuse_unpriced and caller.has_budget():
            self._check_priced(target)
        await self.accounting.admit(call, model, self.reservation(target, call, inbound))

    def _check_priced(self, target: str) -> None:
        """A 400 when ``target`` has a deployment without a price (its spend would count as nothing)."""
        group = self.router.group(target)
        if group is not None and _unpriced(group):
            raise ProxyError(400, f"model {target!r} has a deployment without a price, and this key (or its team or "
                             "user) has a budget its requests could not be counted against; the operator can price it "
                             "(model_info.input_cost_per_token) or allow it (general_settings."
                             "budget_on_unpriced_models: allow)", param="model", code="model_not_priced")

    def reservation(self, target: str, call: Call, inbound: Inbound) -> float:
        """What a budget reserves before any call: on ``target``'s dearest deployment, the answer as long as the
        group's answers run (at most the request's limit); a virtual model's worst case over all its calls."""
        multi = self.multi.get(target)
        if multi is not None:
            return multi.worst_cost(target, call.counted, inbound.completion)
        group = self.router.group(target)
        if group is None:
            return 0.0
        return cost.estimate(group.members, call.counted, self.lengths.expected(group.name, inbound.completion))

    def choose(self, request: web.BaseRequest, call: Call, inbound: Inbound, headers: dict[str, str]) -> str:
        """The group ``routing_rules`` send this request to (the requested model when none matches)."""
        key = call.caller.key
        target, decision, pii = self.router.choose(
            inbound.model, inbound.chat_bytes(), request.headers, call.counted,
            None if key is None else key.record.key_alias or key.record.key_hash,
            None if key is None else key.record.team_id)
        if pii is not None:
            call.record.pii = headers["x-mmproxy-pii"] = pii
        if decision is not None:
            call.record.rule = decision.rule
            headers["x-mmproxy-route-rule"] = decision.rule
            headers["x-mmproxy-route-target"] = target
            if decision.redact and self.privacy is not None:  # config makes detectors whenever a rule redacts
                call.redaction = self.privacy.redaction()
        return target

    @staticmethod
    def redact(call: Call, inbound: Inbound, headers: dict[str, str]) -> None:
        """Replace the request's sensitive data by placeholders before anything reads it for an upstream; what
        was redacted (kinds and counts) goes to the ledger and headers when no rule reported its findings."""
        redaction = call.redaction
        assert redaction is not None
        inbound.redact(redaction.value)
        summary = redaction.summary()
        if summary is not None and call.record.pii is None:
            call.record.pii = headers["x-mmproxy-pii"] = summary

    async def route(self, call: Call, target: str, attempt: Callable[[Upstream], Awaitable[T]],
                    eligible: Callable[[Deployment], bool] | None = None, limited: bool = True) -> T:
        """``attempt`` on the deployments of ``target`` with failover; what was tried lands in the request's
        record, so its cost, retries and fallbacks are the request's own."""
        upstreams = self.upstreams.by_id

        def on(deployment: Deployment) -> Awaitable[T]:
            upstream = upstreams.get(deployment.id)
            return attempt(upstream if upstream is not None else self.upstreams.of(deployment))

        trace = Trace()
        try:
            return await self.router.run(target, on, trace, call.counted, eligible, limited)
        finally:
            if trace.attempts:
                last = trace.attempts[-1]
                record = call.record
                deployment = last.deployment
                record.model_group, record.deployment = last.group, deployment.id
                record.provider, record.tier = deployment.provider, deployment.tier
                record.retries += trace.retries
                record.fallbacks += trace.fallbacks

    def _request_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"


def _unpriced(group: ModelGroup) -> bool:
    """Whether a deployment of ``group`` has no price."""
    return any(d.input_cost_per_token is None and d.output_cost_per_token is None for d in group.members)
