"""``POST /v1/messages``: the Anthropic Messages API in front of any model, driven by the real anthropic SDK."""

from __future__ import annotations

import anthropic
import httpx
import orjson
import pytest

from mmproxy import tokens
from tests.conftest import MASTER_KEY, Process, SimControl

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
HELLO = [{"role": "user", "content": "Say hello to the gateway."}]


@pytest.fixture
def claude(gateway: Process) -> anthropic.Anthropic:
    # The SDK sends the key as x-api-key, which the gateway accepts like a Bearer key.
    return anthropic.Anthropic(base_url=gateway.url, api_key=MASTER_KEY, max_retries=0)


def test_plain_message_on_an_openai_model(claude, sim: SimControl, gateway: Process):
    message = claude.messages.create(model="gpt-4o", max_tokens=64, system="Be brief.", messages=HELLO)
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "gpt-4o"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    # The upstream got the OpenAI translation of the same request.
    body = sim.last()["body"]
    assert body["model"] == "sim-frontier" and body["max_tokens"] == 64
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, *HELLO]
    # Same answer as the OpenAI endpoint gives for the same request.
    openai_reply = httpx.post(f"{gateway.url}/v1/chat/completions", headers={"x-api-key": MASTER_KEY}, json={
        "model": "gpt-4o", "max_tokens": 64, "messages": [{"role": "system", "content": "Be brief."}, *HELLO]})
    assert openai_reply.json()["choices"][0]["message"]["content"] == message.content[0].text


def test_streaming_with_a_tool_on_an_openai_model(claude, sim: SimControl):
    with claude.messages.stream(
        model="gpt-4o", max_tokens=128, tools=[WEATHER_TOOL], tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert final.stop_reason == "tool_use"
    tool_use = [block for block in final.content if block.type == "tool_use"]
    assert len(tool_use) == 1 and tool_use[0].name == "get_weather"
    assert isinstance(tool_use[0].input, dict)
    sent = sim.last()["body"]
    assert sent["tools"][0]["function"]["name"] == "get_weather" and sent["tool_choice"] == "required"
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert final.usage.output_tokens > 0


def test_tool_result_round_trip(claude, sim: SimControl):
    first = claude.messages.create(
        model="gpt-4o", max_tokens=128, tools=[WEATHER_TOOL], tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    call = next(block for block in first.content if block.type == "tool_use")
    second = claude.messages.create(
        model="gpt-4o", max_tokens=128, tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [block.model_dump() for block in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C, sunny"}]},
        ],
    )
    assert second.stop_reason == "end_turn" and second.content[0].text
    sent = sim.last()["body"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": "18C, sunny"}


def test_errors_come_back_in_anthropic_shape(claude, gateway: Process, sim: SimControl):
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="no-such-model", max_tokens=10, messages=HELLO)
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] in ("invalid_request_error", "not_found_error")
    missing = httpx.post(f"{gateway.url}/v1/messages", headers={"x-api-key": MASTER_KEY},
                         json={"model": "gpt-4o", "messages": HELLO})
    assert missing.status_code == 400
    assert missing.json()["type"] == "error" and "max_tokens" in missing.json()["error"]["message"]
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gateway.url, api_key="wrong", max_retries=0).messages.create(
            model="gpt-4o", max_tokens=10, messages=HELLO)
    sim.fault("sim-flaky", "429", retry_after=3)
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude.messages.create(model="flaky", max_tokens=10, messages=HELLO)
    assert limited.value.response.headers["retry-after"] == "3"


def test_cut_stream_ends_with_an_anthropic_error_event(claude, sim: SimControl):
    sim.fault("sim-flaky", "cut", cut_after=4)
    with pytest.raises(anthropic.APIError):
        with claude.messages.stream(model="flaky", max_tokens=64, messages=HELLO) as stream:
            for _ in stream:
                pass


# -- an Anthropic upstream: the request passes through untouched ---------------------------------
def test_passthrough_to_an_anthropic_model(claude, sim: SimControl):
    system = [{"type": "text", "text": "You are terse. " * 300, "cache_control": {"type": "ephemeral"}}]
    claude.messages.create(model="claude", max_tokens=50, system=system, messages=HELLO)  # writes the cache
    raw = claude.messages.with_raw_response.create(
        model="claude", max_tokens=50, system=system, messages=HELLO, metadata={"user_id": "u-1"},
        extra_body={"top_k": 5})
    message = raw.parse()
    assert message.content[0].text and message.stop_reason == "end_turn"
    received = sim.last()
    assert received["path"] == "/v1/messages"
    # Byte-for-byte the client's request but for the model: no detour through OpenAI's shape.
    assert received["body"] == {"model": "sim-claude", "max_tokens": 50, "system": system, "messages": HELLO,
                                "top_k": 5, "metadata": {"user_id": "u-1"}}
    assert received["headers"]["x-api-key"] != MASTER_KEY
    assert raw.headers["x-mmproxy-deployment"] == "claude-1"
    usage = message.usage
    expected = (usage.input_tokens + usage.cache_read_input_tokens) * 3e-06 + usage.output_tokens * 1.5e-05
    assert usage.cache_read_input_tokens > 1000  # the simulator reports the cached system prompt
    assert float(raw.headers["x-mmproxy-cost-usd"]) == pytest.approx(expected, rel=1e-9)


def test_passthrough_stream_with_tools(claude, sim: SimControl):
    with claude.messages.stream(
        model="claude", max_tokens=200, tools=[WEATHER_TOOL], tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.name for b in final.content if b.type == "tool_use"] == ["get_weather"]
    assert sim.last()["body"]["tools"] == [WEATHER_TOOL]


def test_passthrough_cut_stream_is_an_error(claude, sim: SimControl, simulator: Process, tmp_path):
    sim.fault("sim-claude", "cut", cut_after=3)
    with pytest.raises(anthropic.APIError):
        with claude.messages.stream(model="claude", max_tokens=64, messages=HELLO) as stream:
            for _ in stream:
                pass


def test_count_tokens_on_an_anthropic_model_is_the_upstreams_own(claude, sim: SimControl, gateway: Process):
    params = {"model": "claude", "system": "Be brief.", "messages": [{"role": "user", "content": "count me in"}]}
    reply = claude.messages.with_raw_response.count_tokens(**params)
    assert reply.headers["x-mmproxy-token-count"] == "upstream"
    counted = reply.parse().input_tokens
    sent = sim.last()
    assert sent["path"] == "/v1/messages/count_tokens" and sent["body"]["model"] == "sim-claude"
    # The number Anthropic bills for the same prompt.
    assert counted == claude.messages.create(max_tokens=5, **params).usage.input_tokens


def test_count_tokens_on_an_openai_model_is_the_gateways_own_count(claude, gateway: Process):
    messages = [{"role": "user", "content": "How many tokens is this sentence, exactly?"}]
    reply = claude.messages.with_raw_response.count_tokens(model="gpt-4o", system="Be brief.", messages=messages)
    # The deployment's upstream model decides the tokenizer: exact for OpenAI's encodings, else an estimate.
    payload = {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."}, *messages]}
    expected = tokens.count_chat(orjson.dumps(payload), "sim-frontier")
    assert reply.parse().input_tokens == expected.count
    assert reply.headers["x-mmproxy-token-count"] == ("exact" if expected.exact else "estimate")
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.count_tokens(model="no-such-model", messages=messages)
    assert caught.value.body["type"] == "error" and "no-such-model" in caught.value.message
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.count_tokens(model="gpt-4o", messages=[{"role": "robot", "content": "x"}])
