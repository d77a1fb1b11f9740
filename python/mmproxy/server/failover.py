"""Retries, fallbacks and cooldowns around one request's upstream attempts.

The loop knows error kinds (from the providers' classification), groups and health; it knows no wire
format. Each attempt is the handler's closure over one deployment.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

from aiohttp import web

from mmproxy.config import RouterSettings
from mmproxy.errors import ProxyError
from mmproxy.health import Health
from mmproxy.metrics import Metrics
from mmproxy.providers import Provider
from mmproxy.router import ModelGroup, Router, Strategy
from mmproxy.server.call import Call
from mmproxy.shared import SharedState
from mmproxy.usage import Usage
from mmproxy.validation import unknown_model

# Failure kinds worth another attempt: the upstream's state, not the request, caused them.
RETRYABLE = frozenset({"rate_limit", "overloaded", "server", "timeout"})
_BACKOFF_BASE_S = 0.25
_MAX_RETRY_WAIT_S = 10.0


class Failover:
    def __init__(self, router: Router, health: Health, usage: Usage, settings: RouterSettings, strategy: Strategy,
                 shared: SharedState | None, metrics: Metrics | None) -> None:
        self._router = router
        self._health = health
        self._usage = usage
        self._settings = settings
        self._strategy = strategy
        self._shared = shared
        self._metrics = metrics

    async def run(
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
        group = self._router.group(model)
        if group is None:
            raise unknown_model(model)
        settings = self._settings
        health = self._health
        usage = self._usage
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
                    if health.failed(deployment_id, exc.kind) and self._metrics is not None:
                        self._metrics.cooldown(deployment_id)
                    if self._shared is not None:
                        await self._shared.failed(deployment_id, exc.kind)
                    tried.add(deployment_id)
                    error = exc
                    if exc.kind not in RETRYABLE or retry == settings.num_retries:
                        break
                    if not current.untried(health, tried) and not await self._backoff(retry, exc):
                        break
                    continue
                finally:
                    usage.finish(deployment_id)
                health.succeeded(deployment_id)
                return response
            if position == 1:  # the requested group is done for: its fallbacks, one level deep as in LiteLLM
                chain += [g for name in self._fallbacks(model, error) if (g := self._router.group(name)) is not None]
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
            provider = group.pick(self._health, self._usage, self._strategy, tokens, tried)
            if provider is None or self._shared is None or await self._shared.reserve(provider.deployment, tokens):
                return provider
            self._usage.mark_full(provider.deployment)

    def _fallbacks(self, model: str, error: ProxyError | None) -> list[str]:
        settings = self._settings
        kind = error.kind if error is not None else "overloaded"
        if kind == "context":
            return settings.context_window_fallbacks.get(model, [])
        if kind == "content_policy":
            return settings.content_policy_fallbacks.get(model, [])
        if kind in RETRYABLE or kind in ("auth", "not_found"):
            return settings.fallbacks.get(model, [])
        return []

    async def _backoff(self, retry: int, error: ProxyError) -> bool:
        """Wait before retrying the same deployments; False when the upstream asks for too long a wait."""
        wait = max(self._settings.retry_after, _BACKOFF_BASE_S * 2**retry)
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
