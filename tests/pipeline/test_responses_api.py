"""``POST /v1/responses``: OpenAI's Responses API in front of any model, driven by the real openai SDK."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY, Process, SimControl

WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture
def client(gateway: Process) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=MASTER_KEY, max_retries=0)


@pytest.mark.parametrize("model", ["gpt-4o", "claude"])  # an OpenAI-wire and an Anthropic deployment
def test_plain_response_equals_the_chat_answer(client, sim: SimControl, model: str):
    reply = client.responses.with_raw_response.create(model=model, instructions="Be brief.", input="Say hello.",
                                                      max_output_tokens=30)
    response = reply.parse()
    assert response.object == "response" and response.status == "completed" and response.model == model
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    chat = client.chat.completions.create(model=model, max_tokens=30, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}])
    assert response.output_text == chat.choices[0].message.content
    assert response.usage.input_tokens == chat.usage.prompt_tokens
    assert response.usage.output_tokens == chat.usage.completion_tokens
    assert float(reply.headers["x-mmproxy-cost-usd"]) > 0 and reply.headers["x-mmproxy-deployment"]
    if model == "gpt-4o":  # the upstream got a chat completion request, the instructions as its system message
        sent = sim.last()["body"]
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."} and sent["max_tokens"] == 30


def test_stream_events_follow_the_responses_api(client, sim: SimControl):
    with client.responses.stream(model="gpt-4o", input="Stream a few words.", max_output_tokens=200) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_response()
    assert events[:2] == ["response.created", "response.in_progress"]
    assert events[-1] == "response.completed"
    assert "response.output_text.delta" in events and events.count("response.output_item.done") == 1
    text = client.chat.completions.create(model="gpt-4o", max_tokens=200,
                                          messages=[{"role": "user", "content": "Stream a few words."}])
    assert final.output_text == text.choices[0].message.content
    assert final.usage.output_tokens == text.usage.completion_tokens


def test_function_calls_round_trip(client, sim: SimControl):
    first = client.responses.create(model="claude", input="Weather in Paris?", tools=[WEATHER], tool_choice="required")
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and isinstance(json.loads(calls[0].arguments), dict)
    follow_up = [{"role": "user", "content": "Weather in Paris?"},
                 {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather",
                  "arguments": calls[0].arguments},
                 {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 C, sunny"}]
    second = client.responses.create(model="claude", input=follow_up, tools=[WEATHER])
    assert second.output_text
    sent = sim.last()["body"]  # Anthropic got the call and its result as tool_use / tool_result blocks
    assert [b["type"] for b in sent["messages"][1]["content"]] == ["tool_use"]
    assert sent["messages"][2]["content"][0]["type"] == "tool_result"


def test_streamed_function_call(client):
    with client.responses.stream(model="gpt-4o", input="Weather in Oslo?", tools=[WEATHER],
                                 tool_choice="required") as stream:
        events = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in events and "response.function_call_arguments.done" in events
    call = next(item for item in final.output if item.type == "function_call")
    assert call.name == "get_weather" and isinstance(json.loads(call.arguments), dict)


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "gpt-4o", "input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"model": "gpt-4o", "input": "hi", "tools": [{"type": "web_search"}]}, "tools[0]"),
    ({"model": "gpt-4o", "input": []}, "input"),
    ({"model": "gpt-4o", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"model": "gpt-4o", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "no-such-model", "input": "hi"}, "model"),
])
def test_what_a_chat_completion_cannot_express_is_a_400(gateway: Process, sim: SimControl, body: dict, param: str):
    reply = httpx.post(f"{gateway.url}/v1/responses", json=body, headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == param
    assert sim.stats().get("requests", 0) == 0


def test_length_limit_is_an_incomplete_response(client):
    response = client.responses.create(model="gpt-4o", input="Tell me a long story.", max_output_tokens=3)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 3


def test_a_cut_stream_ends_with_response_failed(client, sim: SimControl):
    sim.fault("sim-flaky", "cut", cut_after=3)
    with client.responses.stream(model="flaky", input="Say something long.") as stream:
        events = [event for event in stream]
    assert events[-1].type == "response.failed" and "cut" in events[-1].response.error.message
    assert not any(e.type == "response.completed" for e in events)
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
