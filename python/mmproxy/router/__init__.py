"""Choosing deployments: target names, routing rules, strategies, limits, health, failover, shared state.

The router works on deployment ids and plain values. It never sees a wire format or a web framework:
a caller hands it a coroutine that makes one attempt on a ``Deployment``, and it decides which
deployments to try, in which order, and what their failures mean for the next request. A caller may
route several times in one request (a virtual model calling a cascade of deployments); each call
gets its own ``Trace``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from mmproxy.config import Deployment, RouterSettings, Wildcard
from mmproxy.errors import ProxyError
from mmproxy.router.failover import Attempt, Failover, Trace, untrusted
from mmproxy.router.groups import ModelGroup, build_groups, target
from mmproxy.router.health import Health
from mmproxy.router.shared import SharedState
from mmproxy.router.strategies import STRATEGIES
from mmproxy.router.usage import Usage
from mmproxy.router.wildcards import Wildcards
from mmproxy.rules import Decision, RuleSet
from mmproxy.validation import unknown_model

log = logging.getLogger("mmproxy")

T = TypeVar("T")
# A model name that routes purely by ``routing_rules``.
AUTO_MODEL = "auto"

__all__ = ["AUTO_MODEL", "Attempt", "ModelGroup", "Router", "Trace"]


class Router:
    def __init__(self, deployments: Sequence[Deployment], settings: RouterSettings, rules: RuleSet | None = None,
                 on_cooldown: Callable[[str], None] | None = None, wildcards: Sequence[Wildcard] = ()) -> None:
        self.settings = settings
        self.rules = rules
        self.health = Health(settings.allowed_fails, settings.cooldown_time)
        self.usage = Usage()
        self.shared: SharedState | None = None
        self.groups, self._virtual = build_groups(deployments)
        self.wildcards = Wildcards(wildcards)
        self._listed: list[str] | None = None  # the model names, made on first use
        self._deployments = {d.id: d for d in deployments}
        self._on_cooldown = on_cooldown
        self._failover = self._make_failover()
        self._background: set[asyncio.Task[None]] = set()

    def _make_failover(self) -> Failover:
        settings = self.settings
        return Failover(self.group, self.health, self.usage, settings, STRATEGIES[settings.routing_strategy],
                        self.shared, self._on_cooldown, self.wildcards.ids)

    async def start(self) -> None:
        """Join the other instances' shared state when ``redis_url`` is configured; needs the running loop."""
        if self.settings.redis_url:
            self.shared = SharedState(self.settings.redis_url, self.health, self.usage,
                                      list(self._deployments.values()))
            await self.shared.start()
            self._failover = self._make_failover()

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self.shared is not None:
            await self.shared.stop()

    # -- names -----------------------------------------------------------------------
    def group(self, name: str) -> ModelGroup | None:
        """The group a target name stands for: a model name, ``tier:<tier>``, ``local`` or ``local:<tier>``, or a
        name a wildcard matches (only when none of these is it: an explicit group wins)."""
        group = self.groups.get(name) or self._virtual.get(name)
        if group is None and self.wildcards:
            return self.wildcards.group(name)
        return group

    def deployment(self, deployment_id: str) -> Deployment | None:
        return self._deployments.get(deployment_id)

    def model_names(self) -> list[str]:
        """The names a client may request: every model group, what the wildcards serve, and ``auto`` when routing
        rules exist."""
        if self._listed is None:
            self._listed = [*self.groups, *self.wildcards.listed(set(self.groups)),
                            *([AUTO_MODEL] if self.rules is not None else [])]
        return self._listed

    # -- rules -----------------------------------------------------------------------
    def choose(self, model: str, body: bytes, headers: Mapping[str, str], input_tokens: int, key: str | None,
               team: str | None) -> tuple[str, Decision | None, str | None]:
        """The group a request goes to, the routing rule's decision (None: the requested model), and the
        sensitive data the rules found (``card:1,email:2``; None when no rule looked or none was found).

        ``body`` is the request in OpenAI's chat shape, which is what rules read.
        """
        rules = self.rules
        if rules is None:
            return model, None, None
        decision, pii = rules.decide(body, headers=headers, input_tokens=input_tokens, key=key, team=team)
        if decision is None:
            if model == AUTO_MODEL:
                raise ProxyError(400, f"no routing rule matched this request for model {AUTO_MODEL!r}; "
                                 "add a default rule (one without `when`)", param="model", code="no_route")
            return model, None, pii
        chosen = target(decision, model)
        # A rule that only redacts keeps the requested model, which is resolved like any (a virtual model too).
        if chosen != model and self.group(chosen) is None:
            if decision.local_only:
                raise untrusted(chosen, f"routing rule {decision.rule!r} keeps this request inside the trust "
                                "boundary, and no deployment there serves it")
            raise ProxyError(503, f"routing rule {decision.rule!r} chose {chosen!r}, which has no deployment",
                             type="upstream_error", code="no_deployment_for_route")
        log.debug("route: rule %r -> %s", decision.rule, chosen)
        return chosen, decision, pii

    # -- calls -----------------------------------------------------------------------
    def run(self, name: str, attempt: Callable[[Deployment], Awaitable[T]], trace: Trace, tokens: int = 0,
            eligible: Callable[[Deployment], bool] | None = None, limited: bool = True) -> Awaitable[T]:
        """``attempt`` on the deployments of ``name`` with retries, fallbacks and cooldowns (``failover``).

        A plain function returning the failover's coroutine: one coroutine frame less on every request.
        """
        group = self.group(name)
        if group is None:
            raise unknown_model(name)
        return self._failover.run(group, attempt, tokens, trace, eligible, limited)

    async def pinned(self, deployment_id: str, attempt: Callable[[Deployment], Awaitable[T]]) -> T:
        """One attempt on a given deployment (a batch lives where it was created): no retry, health counted."""
        deployment = self._deployments.get(deployment_id)
        if deployment is None:
            raise ProxyError(503, f"deployment {deployment_id!r} is no longer configured", type="upstream_error",
                             code="deployment_gone")
        try:
            answer = await attempt(deployment)
        except ProxyError as exc:
            if exc.kind is not None:
                await self._failover.failed(deployment_id, exc.kind)
            raise
        self.health.succeeded(deployment_id)
        return answer

    # -- what answers tell the router ------------------------------------------------------
    def add_completion_tokens(self, deployment_id: str, tokens: int) -> None:
        """Completion tokens count against tpm once the answer is in."""
        self.usage.add_tokens(deployment_id, tokens)
        if self.shared is not None:  # after the answer: not worth a round trip on its latency
            task = asyncio.ensure_future(self.shared.add_tokens(deployment_id, tokens))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def report(self) -> list[dict[str, object]]:
        """Every deployment's health as the router sees it (cooldowns, recent failures)."""
        return [{"model_name": d.model_name, "id": d.id, "provider": d.provider, **self.health.report(d.id)}
                for group in self.groups.values() for d in group.members]
