"""One routed, priced attempt in one process: router + forwarder + provider dialect over the fake transport.

The upstream is scripted per deployment (``upstream.fake``), so failover through real provider error
mapping, pricing from the provider's usage, and limits are checked without a socket.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from mmproxy.config import parse_config
from mmproxy.errors import ProxyError
from mmproxy.pipeline.accounting import Accounting
from mmproxy.pipeline.call import Call
from mmproxy.pipeline.forwarding import Forwarder
from mmproxy.pipeline.pipeline import Pipeline
from mmproxy.pipeline.upstreams import Upstream, Upstreams
from mmproxy.router import Router, Trace
from mmproxy.spend.record import RequestRecord
from mmproxy.upstream.fake import FakeReply, FakeTransport
from mmproxy.upstream.http1 import UpstreamError

COMPLETION = orjson.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
})
RATE_LIMITED = orjson.dumps({"error": {"message": "slow down", "type": "rate_limit_error", "code": None}})


class Fleet:
    """Two OpenAI deployments of one model on two origins, each answering from its own script."""

    def __init__(self, scripts: dict[str, list[FakeReply]], router_settings: dict[str, Any] | None = None) -> None:
        config = parse_config({
            "model_list": [
                {"model_name": "m", "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "sk-test",
                                                       "api_base": f"http://{name}.example/v1",
                                                       "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6},
                 "model_info": {"id": name}}
                for name in scripts
            ],
            "router_settings": router_settings or {"allowed_fails": 10},
        })
        self.transports: dict[str, FakeTransport] = {}

        def connect(base: str) -> FakeTransport:
            name = base.split("//")[1].split(".")[0]
            script = scripts[name]
            transport = self.transports[name] = FakeTransport(
                lambda _request: script.pop(0) if len(script) > 1 else script[0])
            return transport

        self.router = Router(config.deployments, config.router)
        self.upstreams = Upstreams(config.deployments, connect)
        self.forwarder = Forwarder(self.router)

    async def chat(self, call: Call, trace: Trace) -> Any:
        async def attempt(upstream: Upstream) -> Any:
            payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            return await self.forwarder.forward(upstream, upstream.provider.chat_request(payload),
                                                upstream.provider.chat_response, call)

        return await self.router.run("m", lambda d: attempt(self.upstreams[d.id]), trace)


def _call() -> Call:
    return Call(RequestRecord("req-1", "chat"), time.perf_counter_ns())


async def test_a_rate_limited_deployment_fails_over_and_the_answer_is_priced():
    fleet = Fleet({"a": [FakeReply(429, [RATE_LIMITED], {b"retry-after": b"30"})], "b": [FakeReply(200, [COMPLETION])]},
                  {"num_retries": 1, "allowed_fails": 10, "routing_strategy": "latency-based-routing"})
    fleet.router.usage.observe_latency("a", 0.1)  # the faster one is tried first
    fleet.router.usage.observe_latency("b", 0.5)
    call, trace = _call(), Trace()
    response = await fleet.chat(call, trace)
    assert [(a.deployment.id, a.failure) for a in trace.attempts] == [("a", "rate_limit"), ("b", None)]
    assert response.status == 200 and response.headers["x-mmproxy-deployment"] == "b"
    assert call.record.cost_usd == pytest.approx(1000 * 1e-6 + 500 * 2e-6)
    assert response.headers["x-mmproxy-cost-usd"] == "0.002"
    assert all(e.released for t in fleet.transports.values() for e in t.exchanges)  # both connections went back
    sent = fleet.transports["b"].requests[-1]
    assert sent.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: b.example\r\n")
    assert b"Authorization: Bearer sk-test" in sent


async def test_a_transport_failure_is_a_server_kind_and_cools_the_deployment_down():
    refused = FakeReply(failure=UpstreamError("connection refused"))
    fleet = Fleet({"a": [refused], "b": [refused]}, {"allowed_fails": 1, "cooldown_time": 30})
    with pytest.raises(ProxyError) as caught:
        await fleet.chat(_call(), Trace())
    assert caught.value.status == 502 and caught.value.code == "upstream_unreachable"
    with pytest.raises(ProxyError):
        await fleet.chat(_call(), Trace())
    with pytest.raises(ProxyError) as caught:
        await fleet.chat(_call(), Trace())
    assert caught.value.code == "no_healthy_deployment"  # both cooling down: nothing is sent
    assert sum(len(t.requests) for t in fleet.transports.values()) == 2


async def test_completion_tokens_from_the_answer_count_against_tpm():
    fleet = Fleet({"a": [FakeReply(200, [COMPLETION])]})
    await fleet.chat(_call(), Trace())
    assert fleet.router.usage.tokens("a") == 500  # the request counted 0 input tokens; the answer's 500 output


async def test_one_request_may_route_several_times_and_pays_for_each_call():
    """What a virtual model (a cascade, a verifier) does: several routed calls inside one client request."""
    fleet = Fleet({"a": [FakeReply(200, [COMPLETION])], "b": [FakeReply(200, [COMPLETION])]})
    config = parse_config({"model_list": []})
    pipeline = Pipeline(config, fleet.router, fleet.upstreams, Accounting(None, None, None, None), None)
    call = _call()

    async def ask(upstream: Upstream) -> Any:
        payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        return await pipeline.forwarder.forward(upstream, upstream.provider.chat_request(payload),
                                                upstream.provider.chat_response, call)

    first = await pipeline.route(call, "m", ask, eligible=lambda d: d.id == "a")
    second = await pipeline.route(call, "m", ask, eligible=lambda d: d.id == "b")
    assert (first.headers["x-mmproxy-deployment"], second.headers["x-mmproxy-deployment"]) == ("a", "b")
    record = call.record
    assert record.cost_usd == pytest.approx(2 * (1000 * 1e-6 + 500 * 2e-6))
    assert (record.prompt_tokens, record.completion_tokens) == (2000, 1000)
    assert (record.model_group, record.deployment) == ("m", "b")  # the call that answered last
