"""The router in-process: strategies, limits, retries, fallbacks, cooldowns and rules, with attempts scripted
as plain coroutines (no transport, no provider)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mmproxy.config import Deployment, parse_config
from mmproxy.errors import ProxyError
from mmproxy.router import AUTO_MODEL, Router, Trace


def _config(models: list[tuple[str, str, dict[str, Any]]], router: dict[str, Any] | None = None,
            rules: list[dict[str, Any]] | None = None) -> Any:
    raw: dict[str, Any] = {
        "model_list": [
            {"model_name": name, "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": "http://127.0.0.1:9/v1",
                                                    **params},
             "model_info": {"id": dep_id, **params.pop("model_info", {})}}
            for name, dep_id, params in models
        ],
        "router_settings": router or {},
    }
    if rules is not None:
        raw["routing_rules"] = rules
    return parse_config(raw)


def _router(models: list[tuple[str, str, dict[str, Any]]], router: dict[str, Any] | None = None,
            rules: list[dict[str, Any]] | None = None) -> Router:
    config = _config(models, router, rules)
    return Router(config.deployments, config.router, config.rules)


def _failing(kind: str, status: int = 503, **headers: str) -> ProxyError:
    return ProxyError(status, f"scripted {kind}", type="upstream_error", kind=kind, headers=headers or None)


class Script:
    """Attempts answer per deployment id: an exception to raise, or a value to return."""

    def __init__(self, **outcomes: Any) -> None:
        self.outcomes = outcomes
        self.calls: list[str] = []

    async def __call__(self, deployment: Deployment) -> str:
        self.calls.append(deployment.id)
        outcome = self.outcomes.get(deployment.id, "ok")
        if isinstance(outcome, list):
            outcome = outcome.pop(0) if len(outcome) > 1 else outcome[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return f"{outcome} from {deployment.id}"


async def test_a_retry_goes_to_another_deployment_of_the_group_first():
    # Latency-based routing makes the first pick deterministic: "a" is the faster one.
    router = _router([("m", "a", {}), ("m", "b", {})],
                     {"num_retries": 1, "allowed_fails": 50, "routing_strategy": "latency-based-routing"})
    router.usage.observe_latency("a", 0.1)
    router.usage.observe_latency("b", 0.5)
    trace = Trace()
    assert await router.run("m", Script(a=_failing("server")), trace) == "ok from b"  # no backoff wait either
    assert [(a.deployment.id, a.failure) for a in trace.attempts] == [("a", "server"), ("b", None)]
    assert (trace.retries, trace.fallbacks) == (1, 0)


async def test_a_request_error_is_not_retried_or_counted_against_health():
    router = _router([("m", "a", {}), ("m", "b", {})], {"num_retries": 3})
    bad = ProxyError(400, "the request's own fault")  # no kind: the client's error
    script = Script(a=bad, b=bad)
    with pytest.raises(ProxyError) as caught:
        await router.run("m", script, Trace())
    assert caught.value is bad
    assert len(script.calls) == 1
    assert router.health.report(script.calls[0])["total_failures"] == 0


async def test_fallbacks_follow_the_kind_of_failure():
    models = [("m", "a", {}), ("big", "b", {}), ("safe", "c", {})]
    router = _router(models, {"fallbacks": [{"m": ["big"]}], "content_policy_fallbacks": [{"m": ["safe"]}],
                              "allowed_fails": 10})
    trace = Trace()
    assert await router.run("m", Script(a=_failing("rate_limit", 429)), trace) == "ok from b"
    assert [(a.group, a.failure) for a in trace.attempts] == [("m", "rate_limit"), ("big", None)]
    assert (trace.retries, trace.fallbacks) == (0, 1)
    trace = Trace()
    policy = _failing("content_policy", 400)
    assert await router.run("m", Script(a=policy), trace) == "ok from c"
    assert trace.attempts[-1].group == "safe"
    # A failure no fallback list covers (the upstream refused the request as invalid) ends the call.
    with pytest.raises(ProxyError) as caught:
        await router.run("m", Script(a=_failing("invalid", 400)), Trace())
    assert caught.value.kind == "invalid"


async def test_failures_cool_a_deployment_down_and_traffic_avoids_it():
    router = _router([("m", "a", {}), ("m", "b", {})], {"allowed_fails": 2, "cooldown_time": 30})
    script = Script(a=_failing("server"))
    for _ in range(40):
        if router.health.cooling("a"):
            break
        try:
            await router.run("m", script, Trace())
        except ProxyError:
            pass
    assert router.health.cooling("a") > 0
    script.calls.clear()
    for _ in range(20):
        assert await router.run("m", script, Trace()) == "ok from b"
    assert set(script.calls) == {"b"}


async def test_every_deployment_cooling_down_is_a_429_with_retry_after():
    router = _router([("m", "a", {})], {"allowed_fails": 1, "cooldown_time": 30})
    with pytest.raises(ProxyError):
        await router.run("m", Script(a=_failing("server")), Trace())
    with pytest.raises(ProxyError) as caught:
        await router.run("m", Script(), Trace())
    assert caught.value.status == 429 and caught.value.code == "no_healthy_deployment"
    assert 1 <= int(caught.value.headers["Retry-After"]) <= 30


async def test_rpm_limit_moves_traffic_then_refuses_with_the_minute_reset():
    router = _router([("m", "a", {"rpm": 2}), ("m", "b", {"rpm": 1})])
    script = Script()
    for _ in range(3):
        await router.run("m", script, Trace())
    assert sorted(script.calls) == ["a", "a", "b"]
    with pytest.raises(ProxyError) as caught:
        await router.run("m", script, Trace())
    assert caught.value.status == 429 and caught.value.code == "rate_limit_exceeded"
    assert 1 <= int(caught.value.headers["Retry-After"]) <= 60
    # A call that is not limited (a token count) still gets a deployment and uses no room.
    assert await router.run("m", script, Trace(), limited=False) in ("ok from a", "ok from b")


async def test_tpm_limit_counts_input_and_completion_tokens():
    router = _router([("m", "a", {"tpm": 1000})])
    await router.run("m", Script(), Trace(), tokens=600)
    router.add_completion_tokens("a", 300)
    with pytest.raises(ProxyError) as caught:
        await router.run("m", Script(), Trace(), tokens=200)
    assert caught.value.code == "rate_limit_exceeded"
    assert await router.run("m", Script(), Trace(), tokens=100) == "ok from a"


async def test_least_busy_picks_the_deployment_with_fewest_calls_in_flight():
    router = _router([("m", "a", {}), ("m", "b", {})], {"routing_strategy": "least-busy"})
    release = asyncio.Event()

    async def slow(deployment: Deployment) -> str:
        await release.wait()
        return deployment.id

    first = asyncio.ensure_future(router.run("m", slow, Trace()))
    await asyncio.sleep(0)
    busy = next(d for d, n in router.usage.in_flight.items() if n == 1)
    assert await router.run("m", Script(), Trace()) == f"ok from {'b' if busy == 'a' else 'a'}"
    release.set()
    assert await first == busy


async def test_cost_based_routing_prefers_the_cheaper_deployment():
    cheap = {"input_cost_per_token": 1e-7, "output_cost_per_token": 1e-7}
    dear = {"input_cost_per_token": 1e-5, "output_cost_per_token": 1e-5}
    router = _router([("m", "a", dear), ("m", "b", cheap)], {"routing_strategy": "cost-based-routing"})
    script = Script()
    for _ in range(10):
        await router.run("m", script, Trace())
    assert set(script.calls) == {"b"}


async def test_latency_based_routing_measures_each_then_prefers_the_faster():
    router = _router([("m", "a", {}), ("m", "b", {})], {"routing_strategy": "latency-based-routing"})
    router.usage.observe_latency("a", 0.5)
    script = Script()
    await router.run("m", script, Trace())
    assert script.calls == ["b"]  # never measured: tried first
    router.usage.observe_latency("b", 0.1)
    for _ in range(5):
        await router.run("m", script, Trace())
    assert set(script.calls) == {"b"}


async def test_eligible_narrows_the_group():
    router = _router([("m", "a", {}), ("m", "b", {})])
    script = Script()
    for _ in range(10):
        await router.run("m", script, Trace(), eligible=lambda d: d.id == "b")
    assert set(script.calls) == {"b"}


async def test_unknown_names_are_refused_and_pinned_calls_reach_one_deployment():
    router = _router([("m", "a", {}), ("m", "b", {})])
    with pytest.raises(ProxyError) as caught:
        await router.run("nope", Script(), Trace())
    assert caught.value.status == 400 and caught.value.param == "model"
    assert await router.pinned("b", Script()) == "ok from b"
    with pytest.raises(ProxyError) as caught:
        await router.pinned("gone", Script())
    assert caught.value.code == "deployment_gone"


def test_rules_choose_a_tier_or_a_model_and_auto_needs_a_match():
    models = [("small", "a", {"model_info": {"tier": "economy"}}), ("big", "b", {"model_info": {"tier": "frontier"}})]
    rules = [{"name": "long", "when": {"min_tokens": 100}, "route": {"tier": "frontier"}},
             {"name": "code", "when": {"keywords_any": ["stack trace"]}, "route": {"model": "small"}}]
    router = _router(models, rules=rules)

    def chat(text: str) -> bytes:
        return b'{"model":"auto","messages":[{"role":"user","content":"%s"}]}' % text.encode()

    def choose(model: str, body: bytes, tokens: int) -> tuple[str, str | None]:
        chosen, decision, _ = router.choose(model, body, {}, tokens, None, None)
        return chosen, None if decision is None else decision.rule

    assert choose("small", chat("hello"), 500) == ("tier:frontier", "long")
    assert router.group("tier:frontier").members[0].id == "b"
    assert choose("big", chat("a stack trace"), 5) == ("small", "code")
    assert choose("big", chat("hello"), 5) == ("big", None)
    with pytest.raises(ProxyError) as caught:
        router.choose(AUTO_MODEL, chat("hello"), {}, 5, None, None)
    assert caught.value.code == "no_route"
    assert router.model_names() == ["small", "big", AUTO_MODEL]
