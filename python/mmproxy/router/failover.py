"""Retries, fallbacks and cooldowns around one routed call's attempts.

The loop knows failure kinds (the providers' classification of an error), groups and health; it knows no
wire format and no web framework. Each attempt is the caller's coroutine over one deployment; what the
loop tried is written to a ``Trace`` the caller reads, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mmproxy.config import Deployment, RouterSettings
from mmproxy.errors import ProxyError
from mmproxy.router.groups import ModelGroup
from mmproxy.router.health import Health
from mmproxy.router.shared import SharedState
from mmproxy.router.strategies import Strategy
from mmproxy.router.usage import Usage

T = TypeVar("T")

# Failure kinds worth another attempt: the upstream's state, not the request, caused them.
RETRYABLE = frozenset({"rate_limit", "overloaded", "server", "timeout"})
_BACKOFF_BASE_S = 0.25
_MAX_RETRY_WAIT_S = 10.0


def untrusted(group: str, why: str) -> ProxyError:
    """The error of a request that must stay inside the trust boundary when nothing there can take it: never a
    silent call outside."""
    return ProxyError(503, f"{why}; no deployment outside it was tried (target {group!r}; mark self-hosted "
                      "deployments with model_info.trusted: true)", type="upstream_error",
                      code="no_trusted_deployment")


def _inside(deployment: Deployment) -> bool:
    return deployment.local


class Attempt:
    """One try on one deployment: which group it served, and the failure kind when it failed."""

    __slots__ = ("deployment", "failure", "group")

    def __init__(self, group: str, deployment: Deployment) -> None:
        self.group = group
        self.deployment = deployment
        self.failure: str | None = None


class Trace:
    """What one routed call tried, in order. A retry is another attempt in the same group, a fallback one
    in another group."""

    __slots__ = ("attempts", "fallbacks", "retries")

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.retries = 0
        self.fallbacks = 0

    def start(self, group: str, deployment: Deployment) -> None:
        attempts = self.attempts
        if attempts:
            if attempts[-1].group == group:
                self.retries += 1
            else:
                self.fallbacks += 1
        attempts.append(Attempt(group, deployment))


class Failover:
    def __init__(self, groups: Callable[[str], ModelGroup | None], health: Health, usage: Usage,
                 settings: RouterSettings, strategy: Strategy, shared: SharedState | None,
                 on_cooldown: Callable[[str], None] | None, uncounted: frozenset[str] = frozenset()) -> None:
        self._group = groups
        self._uncounted = uncounted
        self._health = health
        self._usage = usage
        self._settings = settings
        self._strategy = strategy
        self._shared = shared
        self._on_cooldown = on_cooldown

    async def run(self, group: ModelGroup, attempt: Callable[[Deployment], Awaitable[T]], tokens: int,
                  trace: Trace, eligible: Callable[[Deployment], bool] | None = None, limited: bool = True) -> T:
        """Run ``attempt`` on deployments of ``group`` until one answers: retries, then fallbacks.

        Retries go to another healthy deployment of the group first and back off (honouring
        ``Retry-After``) only when none is left. Which failures are retried and which fallback list
        applies is decided by the error's kind, never by provider. An error without a kind is the
        request's own fault and ends the call at once. An attempt that has started answering the
        client (a stream's first byte) does not raise a kinded error after that, so it never falls back.
        ``eligible`` narrows every group to the deployments that can serve this kind of call; a call that is
        not ``limited`` (a token count) neither needs nor uses rpm/tpm room.
        """
        settings = self._settings
        health = self._health
        usage = self._usage
        chain = [group if eligible is None else group.only(eligible)]
        tried: set[str] = set()
        error: ProxyError | None = None
        position = 0
        while position < len(chain):
            current = chain[position]
            position += 1
            for retry in range(settings.num_retries + 1):
                deployment = await self._pick(current, tokens, tried, limited)
                if deployment is None:
                    break
                deployment_id = deployment.id
                trace.start(current.name, deployment)
                if limited:
                    usage.start(deployment_id, tokens)
                try:
                    answer = await attempt(deployment)
                except ProxyError as exc:
                    if exc.kind is None:
                        raise
                    trace.attempts[-1].failure = exc.kind
                    await self.failed(deployment_id, exc.kind)
                    tried.add(deployment_id)
                    error = exc
                    if exc.kind not in RETRYABLE or retry == settings.num_retries:
                        break
                    if not current.untried(health, tried) and not await self._backoff(retry, exc):
                        break
                    continue
                finally:
                    if limited:
                        usage.finish(deployment_id)
                health.succeeded(deployment_id)
                return answer
            if position == 1:  # the requested group is done for: its fallbacks, one level deep as in LiteLLM
                chain += [g if eligible is None else g.only(eligible) for name in self._fallbacks(group.name, error)
                          if (g := self._group(name)) is not None]
                if group.trusted_only:  # a fallback never takes a request out of the trust boundary
                    chain[1:] = [g.only(_inside) for g in chain[1:]]
        if error is not None:
            raise error
        raise self._unavailable(group, tokens)

    async def failed(self, deployment_id: str, kind: str) -> None:
        """Count a failed attempt against the deployment's health, here and, with Redis, on every instance.

        A wildcard's deployments (``uncounted``) are never cooled down, as in LiteLLM: their failures are one
        requested model's (a name the provider does not know), not the provider's."""
        if deployment_id in self._uncounted:
            return
        if self._health.failed(deployment_id, kind) and self._on_cooldown is not None:
            self._on_cooldown(deployment_id)
        if self._shared is not None:
            await self._shared.failed(deployment_id, kind)

    def _unavailable(self, group: ModelGroup, tokens: int) -> ProxyError:
        """Nothing was tried: every deployment is at its limit or cooling down (or, inside the trust boundary,
        there is none)."""
        if group.trusted_only:
            return untrusted(group.name, "this request must stay inside the trust boundary, and no deployment "
                             "there is available (all cooling down or at their limits)")
        usage, health = self._usage, self._health
        if not any(usage.has_room(d, tokens) for d in group.members):
            return ProxyError(429, f"every deployment of {group.name!r} is at its rpm/tpm limit this minute",
                              type="rate_limit_error", code="rate_limit_exceeded",
                              headers={"Retry-After": str(usage.seconds_to_reset())}, kind="rate_limit")
        wait = min(health.cooling(d.id) for d in group.members)
        return ProxyError(429, f"every deployment of {group.name!r} is cooling down after failures; retry shortly",
                          type="rate_limit_error", code="no_healthy_deployment",
                          headers={"Retry-After": str(max(1, math.ceil(wait)))}, kind="overloaded")

    async def _pick(self, group: ModelGroup, tokens: int, tried: set[str], limited: bool) -> Deployment | None:
        """The strategy's pick, with its rpm/tpm slot reserved across instances when Redis is configured."""
        while True:
            deployment = group.pick(self._health, self._usage, self._strategy, tokens, tried, limited)
            if (deployment is None or not limited or self._shared is None
                    or await self._shared.reserve(deployment, tokens)):
                return deployment
            self._usage.mark_full(deployment)

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
