"""Anthropic through the gateway: OpenAI requests in, Messages API calls out, OpenAI answers back.

Real gateway process, real simulator (its Anthropic wire module), the real ``openai`` SDK as the
client; assertions cover both what the client got and what the simulator received. The
``anthropic`` SDK talks to the simulator directly to prove its wire format is the real one, and
replays the gateway's translated bodies so both paths can be compared answer for answer.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
import yaml

from mmproxy.config import parse_config
from mmproxy.providers.anthropic.adapter import AnthropicProvider, default_max_tokens
from mmproxy.registry import all_defaults
from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, SimControl, start_process

MODEL = "claude-sim-1"
HELLO = [{"role": "user", "content": "Say hello to Claude."}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}
CLOCK = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def _deployment(name: str, model: str, api_base: str, **params: Any) -> dict[str, Any]:
    info = params.pop("model_info", {})
    entry = {"model_name": name, "litellm_params": {"model": f"anthropic/{model}", "api_base": api_base,
                                                   "api_key": UPSTREAM_KEY, **params}}
    if info:
        entry["model_info"] = info
    return entry


@pytest.fixture(scope="module")
def anthropic_gateway(simulator: Process, tmp_path_factory: pytest.TempPathFactory):
    root = simulator.url
    model_list = [
        _deployment("claude", MODEL, root, model_info={"id": "claude-1", "input_cost_per_token": 3e-06,
                                                        "output_cost_per_token": 1.5e-05}),
        _deployment("claude-sonnet", "claude-3-5-sonnet-20241022", root),
        _deployment("claude-drop", "claude-sim-drop", root, drop_params=True),
        _deployment("claude-bad-key", MODEL, root, api_key="sk-wrong-anthropic-key-42"),
        _deployment("claude-embed", "claude-sim-embed", root, model_info={"mode": "embedding"}),
        _deployment("claude-messages-url", MODEL, f"{root}/v1/messages"),
    ]
    path = tmp_path_factory.mktemp("anthropic") / "config.yaml"
    path.write_text(yaml.safe_dump({"model_list": model_list, "general_settings": {"master_key": MASTER_KEY},
                                     "router_settings": {"cooldown_time": 0}}))
    gw = start_process(["mmproxy", "serve", "--config", str(path), "--host", "127.0.0.1", "--port", "0"])
    yield gw
    gw.stop()


@pytest.fixture
def client(anthropic_gateway: Process) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{anthropic_gateway.url}/v1", api_key=MASTER_KEY, max_retries=0)


@pytest.fixture
def raw(anthropic_gateway: Process) -> httpx.Client:
    return httpx.Client(base_url=anthropic_gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"},
                        timeout=10)


@pytest.fixture
def direct(simulator: Process) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=simulator.url, api_key=UPSTREAM_KEY, max_retries=0)


def received(sim: SimControl) -> dict[str, Any]:
    last = sim.last()
    assert last["path"] == "/v1/messages"
    return last


def replay(direct: anthropic.Anthropic, body: dict[str, Any]) -> anthropic.types.Message:
    """The simulator's answer to exactly the body the gateway sent, parsed by the anthropic SDK."""
    body = {k: v for k, v in body.items() if k != "stream"}
    return direct.messages.create(**body)


def tool_calls_of(stream: Any) -> tuple[dict[int, dict[str, str]], list[str], str]:
    """Accumulate streamed tool calls by index, as OpenAI clients do; also the text and finish reason."""
    calls: dict[int, dict[str, str]] = {}
    text: list[str] = []
    finish = ""
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        text.append(choice.delta.content or "")
        finish = choice.finish_reason or finish
        for call in choice.delta.tool_calls or ():
            slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
            slot["id"] += call.id or ""
            slot["name"] += (call.function.name or "") if call.function else ""
            slot["arguments"] += (call.function.arguments or "") if call.function else ""
    return calls, text, finish


# -- plain answers -----------------------------------------------------------------


def test_plain_chat_is_translated_both_ways(client, direct, sim: SimControl):
    messages = [{"role": "system", "content": "You are terse."}, *HELLO]
    via = client.chat.completions.with_raw_response.create(model="claude", messages=messages)
    reply = via.parse()
    upstream = received(sim)
    assert upstream["headers"]["x-api-key"] == UPSTREAM_KEY
    assert upstream["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in upstream["headers"] and MASTER_KEY not in str(upstream["headers"])
    assert upstream["body"] == {"model": MODEL, "system": "You are terse.", "messages": HELLO, "max_tokens": 4096}

    native = replay(direct, upstream["body"])
    assert reply.choices[0].message.content == native.content[0].text
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == native.model == MODEL
    assert reply.object == "chat.completion"
    assert reply.usage.prompt_tokens == native.usage.input_tokens
    assert reply.usage.completion_tokens == native.usage.output_tokens
    assert reply.usage.prompt_tokens_details.cached_tokens == 0
    expected_cost = reply.usage.prompt_tokens * 3e-06 + reply.usage.completion_tokens * 1.5e-05
    assert float(via.headers["x-mmproxy-cost-usd"]) == pytest.approx(expected_cost, rel=1e-9)
    assert via.headers["x-mmproxy-deployment"] == "claude-1"


def test_api_base_may_already_end_in_v1_messages(client, sim: SimControl):
    client.chat.completions.create(model="claude-messages-url", messages=HELLO)
    assert received(sim)["body"]["model"] == MODEL


def test_max_tokens_default_per_model_and_explicit(client, sim: SimControl):
    client.chat.completions.create(model="claude-sonnet", messages=HELLO)
    assert received(sim)["body"]["max_tokens"] == 8192
    reply = client.chat.completions.create(model="claude", messages=HELLO, max_tokens=7)
    assert received(sim)["body"]["max_tokens"] == 7
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 7
    client.chat.completions.create(model="claude", messages=HELLO, max_tokens=50, max_completion_tokens=5)
    assert received(sim)["body"]["max_tokens"] == 5
    assert default_max_tokens("claude-opus-4-1-20250805") == 32000
    assert default_max_tokens("claude-opus-4-20250514") == 32000
    assert default_max_tokens("claude-sonnet-4-5") == 64000
    assert default_max_tokens("some-new-model") == 4096


def test_max_tokens_default_is_the_registry_datas_output_limit():
    """Every Claude model in the shipped data, and its dated snapshots, get its ``max_output_tokens``."""
    claude = {name: entry for name, entry in all_defaults().items() if name.startswith("claude-")}
    assert {"claude-opus-4-5", "claude-opus-4", "claude-3-5-sonnet", "claude-3-opus", "claude-3-haiku"} <= set(claude)
    for name, entry in claude.items():
        assert entry.max_output_tokens, name
        assert default_max_tokens(name) == default_max_tokens(f"{name}-20250101") == entry.max_output_tokens
    assert default_max_tokens("claude-3-haiku-20240307") == 4096 and default_max_tokens("claude-opus-4-0") == 32000


def test_sampling_params_stop_user_and_extras(client, sim: SimControl):
    reply = client.chat.completions.create(
        model="claude", messages=HELLO, temperature=0.3, top_p=0.9, stop="END", user="user-7", n=1,
        extra_body={"top_k": 5, "thinking": {"type": "disabled"}, "sim": {"content": "alpha beta END gamma"}},
    )
    body = received(sim)["body"]
    assert body["temperature"] == 0.3 and body["top_p"] == 0.9 and body["top_k"] == 5
    assert body["thinking"] == {"type": "disabled"}
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "user-7"}
    for name in ("stop", "user", "n", "stream_options", "max_completion_tokens"):
        assert name not in body
    assert reply.choices[0].message.content == "alpha beta "
    assert reply.choices[0].finish_reason == "stop"

    client.chat.completions.create(model="claude", messages=HELLO, stop=["x", "y"])
    assert received(sim)["body"]["stop_sequences"] == ["x", "y"]


def test_system_and_developer_messages_are_lifted(client, sim: SimControl):
    messages = [{"role": "system", "content": "Rule one."}, {"role": "developer", "content": "Rule two."}, *HELLO]
    client.chat.completions.create(model="claude", messages=messages)
    body = received(sim)["body"]
    assert body["system"] == "Rule one.\nRule two."
    assert body["messages"] == HELLO

    cached = {"type": "ephemeral"}
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Long policy.", "cache_control": cached},
                                       {"type": "text", "text": "Short note."}]},
        {"role": "user", "content": "First question.", "cache_control": cached},
        {"role": "assistant", "content": "First answer."},
        {"role": "user", "content": "Second question."},
    ]
    client.chat.completions.create(model="claude", messages=messages)
    body = received(sim)["body"]
    assert body["system"] == [{"type": "text", "text": "Long policy.", "cache_control": cached},
                              {"type": "text", "text": "Short note."}]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "First question.", "cache_control": cached}]},
        {"role": "assistant", "content": "First answer."},
        {"role": "user", "content": "Second question."},
    ]


def test_consecutive_same_role_messages_are_merged(client, sim: SimControl):
    messages = [{"role": "user", "content": "Part one."}, {"role": "user", "content": "Part two."}]
    client.chat.completions.create(model="claude", messages=messages)
    assert received(sim)["body"]["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}]}]


def test_images_data_url_and_http_url(client, sim: SimControl):
    content = [
        {"type": "text", "text": "What is in these images?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
    ]
    reply = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": content}])
    assert reply.choices[0].message.content
    assert received(sim)["body"]["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these images?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_bad_image_url_is_a_400_naming_it(client, sim: SimControl):
    bad = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude", messages=bad)
    assert info.value.body["param"] == "messages[0].content[0].image_url.url"
    assert sim.stats()["requests"] == 0


# -- streaming ---------------------------------------------------------------------


def test_streaming_with_usage_matches_non_streaming(client, sim: SimControl):
    full = client.chat.completions.create(model="claude", messages=HELLO)
    chunks = list(client.chat.completions.create(
        model="claude", messages=HELLO, stream=True, stream_options={"include_usage": True}))
    body = received(sim)["body"]
    assert body["stream"] is True and "stream_options" not in body
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_stream_wire_format_without_usage(raw: httpx.Client):
    body = {"model": "claude", "messages": HELLO, "stream": True, "sim": {"chunks": 5}}
    with raw.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]" and text.count("[DONE]") == 1
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert all("usage" not in c for c in chunks)  # not requested: no usage key at all
    assert len(chunks) == 1 + 5 + 1  # role, five text pieces, finish


def test_stream_events_arrive_as_produced(raw: httpx.Client):
    import time

    body = {"model": "claude", "messages": HELLO, "stream": True, "sim": {"chunks": 4, "chunk_delay_ms": 150}}
    arrivals = []
    start = time.monotonic()
    with raw.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic() - start)
    assert arrivals[-1] - arrivals[0] > 0.4


# -- tools -------------------------------------------------------------------------


def test_parallel_tool_calls_non_stream(client, direct, sim: SimControl):
    reply = client.chat.completions.create(model="claude", messages=HELLO, tools=[WEATHER, CLOCK])
    body = received(sim)["body"]
    assert body["tools"] == [
        {"name": "get_weather", "description": "Weather for a city",
         "input_schema": WEATHER["function"]["parameters"]},
        {"name": "get_time", "input_schema": CLOCK["function"]["parameters"]},
    ]
    assert "tool_choice" not in body
    native = replay(direct, body)
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        (b.id, b.name, b.input) for b in native.content]
    assert [c.function.name for c in message.tool_calls] == ["get_weather", "get_time"]
    assert " " not in message.tool_calls[0].function.arguments  # compact JSON


@pytest.mark.parametrize(("choice", "parallel", "sent", "called"), [
    ("auto", None, {"type": "auto"}, ["get_weather", "get_time"]),
    ("required", None, {"type": "any"}, ["get_weather", "get_time"]),
    ("none", None, {"type": "none"}, []),
    ({"type": "function", "function": {"name": "get_time"}}, None, {"type": "tool", "name": "get_time"},
     ["get_time"]),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}, ["get_weather"]),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}, ["get_weather"]),
])
def test_tool_choice_mapping(client, sim: SimControl, choice, parallel, sent, called):
    extra: dict[str, Any] = {}
    if choice is not None:
        extra["tool_choice"] = choice
    if parallel is not None:
        extra["parallel_tool_calls"] = parallel
    reply = client.chat.completions.create(model="claude", messages=HELLO, tools=[WEATHER, CLOCK], **extra)
    body = received(sim)["body"]
    assert body["tool_choice"] == sent
    assert "parallel_tool_calls" not in body
    calls = reply.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == called
    assert reply.choices[0].finish_reason == ("tool_calls" if called else "stop")


def test_tool_calls_stream_match_non_stream(client, sim: SimControl):
    full = client.chat.completions.create(model="claude", messages=HELLO, tools=[WEATHER, CLOCK])
    calls, text, finish = tool_calls_of(client.chat.completions.create(
        model="claude", messages=HELLO, tools=[WEATHER, CLOCK], stream=True, extra_body={"sim": {"chunks": 3}}))
    assert finish == "tool_calls" and "".join(text) == ""
    assert [calls[i] for i in sorted(calls)] == [
        {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
        for c in full.choices[0].message.tool_calls]


def test_text_before_tool_calls_streams_with_tool_indexes_from_zero(client, sim: SimControl):
    extra = {"sim": {"content": "Let me check both."}}
    full = client.chat.completions.create(model="claude", messages=HELLO, tools=[WEATHER, CLOCK], extra_body=extra)
    assert full.choices[0].message.content == "Let me check both."
    assert len(full.choices[0].message.tool_calls) == 2
    calls, text, finish = tool_calls_of(client.chat.completions.create(
        model="claude", messages=HELLO, tools=[WEATHER, CLOCK], stream=True, extra_body=extra))
    assert "".join(text) == "Let me check both."
    assert sorted(calls) == [0, 1]  # Anthropic block indexes 1 and 2 become OpenAI tool indexes 0 and 1
    assert [calls[0]["name"], calls[1]["name"]] == ["get_weather", "get_time"]
    assert finish == "tool_calls"


def test_tool_results_round_trip(client, sim: SimControl):
    first = client.chat.completions.create(model="claude", messages=HELLO, tools=[WEATHER, CLOCK])
    calls = first.choices[0].message.tool_calls
    assert len(calls) == 2
    conversation = [
        *HELLO,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "Sunny, 21 C"},
        {"role": "tool", "tool_call_id": calls[1].id, "content": [{"type": "text", "text": "12:00"}]},
    ]
    reply = client.chat.completions.create(model="claude", messages=conversation, tools=[WEATHER, CLOCK])
    # The simulator checks tool_use/tool_result pairing like the real API, so a 200 proves it held.
    assert reply.choices[0].finish_reason == "stop" and reply.choices[0].message.content
    sent = received(sim)["body"]["messages"]
    assert sent[1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": c.id, "name": c.function.name, "input": json.loads(c.function.arguments)}
        for c in calls]}
    assert sent[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": calls[0].id, "content": "Sunny, 21 C"},
        {"type": "tool_result", "tool_use_id": calls[1].id, "content": [{"type": "text", "text": "12:00"}]},
    ]}
    assert len(sent) == 3

    # A user message after the results joins the same user turn (roles must alternate).
    conversation.append({"role": "user", "content": "Thanks, and tomorrow?"})
    client.chat.completions.create(model="claude", messages=conversation, tools=[WEATHER, CLOCK])
    sent = received(sim)["body"]["messages"]
    assert len(sent) == 3 and sent[2]["content"][-1] == {"type": "text", "text": "Thanks, and tomorrow?"}


def test_unanswered_tool_call_is_the_upstreams_400(client, sim: SimControl):
    first = client.chat.completions.create(model="claude", messages=HELLO, tools=[WEATHER, CLOCK])
    calls = first.choices[0].message.tool_calls
    conversation = [*HELLO, first.choices[0].message.model_dump(exclude_none=True),
                    {"role": "tool", "tool_call_id": calls[0].id, "content": "Sunny"}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude", messages=conversation, tools=[WEATHER, CLOCK])
    assert "tool_result" in info.value.message and calls[1].id in info.value.message


# -- usage and cache -----------------------------------------------------------------


def test_cache_write_then_read_tokens_are_reported(client, sim: SimControl):
    # Over the 1,024-token minimum: the first call writes the prefix, later ones read it.
    messages = [{"role": "system", "content": [
        {"type": "text", "text": "A long reusable policy. " * 200, "cache_control": {"type": "ephemeral"}}]}, *HELLO]
    first = client.chat.completions.create(model="claude", messages=messages).usage
    written = first.model_extra["cache_creation_input_tokens"]
    assert written > 1000 and first.model_extra["cache_read_input_tokens"] == 0
    assert first.prompt_tokens_details.cached_tokens == 0 and first.prompt_tokens > written

    usage = client.chat.completions.create(model="claude", messages=messages).usage
    cached = usage.model_extra["cache_read_input_tokens"]
    assert cached == written
    assert usage.prompt_tokens == first.prompt_tokens
    assert usage.prompt_tokens_details.cached_tokens == cached
    assert usage.model_extra["cache_creation_input_tokens"] == 0

    chunks = list(client.chat.completions.create(model="claude", messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == cached
    assert chunks[-1].usage.prompt_tokens == usage.prompt_tokens


# -- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "status", "err_type", "code"), [
    ("429:3", 429, "rate_limit_error", "rate_limit_exceeded"),
    ("503", 503, "upstream_error", "overloaded"),  # the simulator's Anthropic 529
    ("401", 401, "authentication_error", "upstream_auth_failed"),
    ("400_context", 400, "invalid_request_error", "context_length_exceeded"),
    ("400", 400, "invalid_request_error", "invalid_request"),
    ("404", 404, "invalid_request_error", "model_not_found"),
    ("500", 502, "upstream_error", "upstream_500"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors(raw: httpx.Client, sim: SimControl, fault, status, err_type, code, stream):
    sim.fault(MODEL, fault)
    response = raw.post("/v1/chat/completions", json={"model": "claude", "messages": HELLO, "stream": stream})
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["type"], error["code"]) == (err_type, code)
    assert "claude-1" in error["message"]
    if fault.startswith("429"):
        assert response.headers["retry-after"] == "3"
    if fault == "503":
        assert "HTTP 529" in error["message"] and "Overloaded" in error["message"]
    if fault == "400_context":
        assert "prompt is too long" in error["message"]
    assert sim.last()["status"] == (529 if fault == "503" else int(fault[:3]))


def test_sdk_sees_rate_limit_with_retry_after(client, sim: SimControl):
    sim.fault(MODEL, "429", retry_after=7)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="claude", messages=HELLO)
    assert info.value.response.headers["retry-after"] == "7"


def test_wrong_upstream_key_is_an_auth_error_without_the_key(raw: httpx.Client, sim: SimControl):
    response = raw.post("/v1/chat/completions", json={"model": "claude-bad-key", "messages": HELLO})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert "sk-wrong-anthropic-key-42" not in response.text
    assert sim.last()["headers"]["x-api-key"] == "sk-wrong-anthropic-key-42"


def test_cut_stream_is_not_passed_on_as_complete(raw: httpx.Client, sim: SimControl):
    sim.fault(MODEL, "cut", cut_after=5)
    with raw.stream("POST", "/v1/chat/completions", json={"model": "claude", "messages": HELLO,
                                                          "stream": True}) as response:
        text = "".join(response.iter_text())
    assert "data: [DONE]" not in text
    assert text.rstrip().split("\n\n")[-1].startswith('data: {"error"') and "stream_cut" in text


def test_corrupt_stream_event_becomes_an_error_event(raw: httpx.Client, sim: SimControl):
    sim.fault(MODEL, "bad_json")
    with raw.stream("POST", "/v1/chat/completions", json={"model": "claude", "messages": HELLO,
                                                          "stream": True}) as response:
        text = "".join(response.iter_text())
    assert "data: [DONE]" not in text
    assert "failed mid-stream" in text and "unparseable stream event" in text


# -- parameters the Messages API cannot express --------------------------------------


def test_unsupported_param_is_a_400_naming_it(client, sim: SimControl):
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude", messages=HELLO, response_format=schema)
    assert info.value.body["param"] == "response_format"
    assert info.value.body["code"] == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude", messages=HELLO, n=2)
    assert info.value.body["param"] == "n"
    assert sim.stats()["requests"] == 0


def test_unsupported_params_dropped_with_drop_params(client, sim: SimControl):
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    reply = client.chat.completions.create(model="claude-drop", messages=HELLO, response_format=schema, seed=3,
                                           presence_penalty=0.5)
    assert reply.choices[0].message.content
    body = received(sim)["body"]
    for name in ("response_format", "seed", "presence_penalty"):
        assert name not in body
    assert body["model"] == "claude-sim-drop"


def test_embeddings_are_a_400(client, sim: SimControl):
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="claude-embed", input="hello")
    assert "no embeddings" in info.value.message
    assert sim.stats()["requests"] == 0


# -- the simulator's wire format, judged by the anthropic SDK ---------------------------


def test_anthropic_sdk_against_the_simulator(direct, sim: SimControl):
    message = direct.messages.create(model=MODEL, max_tokens=64, system="Be brief.", messages=HELLO,
                                     stop_sequences=["zzz-never"])
    assert message.type == "message" and message.role == "assistant" and message.model == MODEL
    assert message.stop_reason == "end_turn" and message.id.startswith("msg_")
    assert message.usage.output_tokens == 20 and message.usage.input_tokens > 0

    with direct.messages.stream(model=MODEL, max_tokens=64, messages=HELLO, tools=[
            {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}]) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "input_json" in events
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use" and isinstance(final.content[0].input, dict)
    assert final.content[0].input["city"]

    with direct.messages.stream(model=MODEL, max_tokens=3, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens" and text == final.content[0].text and len(text.split()) == 3


def test_anthropic_sdk_error_classes(direct, sim: SimControl):
    sim.fault(MODEL, "429:2")
    with pytest.raises(anthropic.RateLimitError) as info:
        direct.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
    assert info.value.response.headers["retry-after"] == "2"
    assert info.value.body["error"]["type"] == "rate_limit_error"
    sim.fault(MODEL, "503")
    with pytest.raises(anthropic.InternalServerError) as info:
        direct.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
    assert info.value.status_code == 529 and info.value.body["error"]["type"] == "overloaded_error"
    bad_key = anthropic.Anthropic(base_url=str(direct.base_url), api_key="nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad_key.messages.create(model=MODEL, max_tokens=8, messages=HELLO)


def test_simulator_rejects_what_anthropic_rejects(simulator: Process):
    url = f"{simulator.url}/v1/messages"
    headers = {"x-api-key": UPSTREAM_KEY, "anthropic-version": "2023-06-01"}
    ok = {"model": MODEL, "max_tokens": 8, "messages": HELLO}
    assert httpx.post(url, json=ok, headers=headers).status_code == 200
    missing_version = httpx.post(url, json=ok, headers={"x-api-key": UPSTREAM_KEY})
    assert missing_version.status_code == 400 and "anthropic-version" in missing_version.text
    cases = [
        ({"model": MODEL, "messages": HELLO}, "max_tokens: Field required"),
        ({**ok, "n": 1}, "n: Extra inputs are not permitted"),
        ({**ok, "messages": [{"role": "system", "content": "x"}]}, 'Unexpected role "system"'),
        ({**ok, "temperature": 1.5}, "temperature"),
        ({**ok, "tool_choice": {"type": "auto"}}, "tool_choice may only be specified while providing tools"),
        ({**ok, "messages": [*HELLO, {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]}, {"role": "user", "content": "hi"}]},
         "`tool_use` ids were found without `tool_result` blocks"),
    ]
    for body, words in cases:
        response = httpx.post(url, json=body, headers=headers)
        assert response.status_code == 400, body
        error = response.json()
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert words in error["error"]["message"]


# -- the stream translator alone --------------------------------------------------------


def _sse(kind: str, obj: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), orjson.dumps(obj))


def recorded_stream(pieces: int = 40) -> bytes:
    """A text-then-tool stream in the shape Anthropic's documentation shows."""
    events = [
        _sse("message_start", {"type": "message_start", "message": {
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 25, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7,
                      "output_tokens": 1}}}),
        _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
        _sse("ping", {"type": "ping"}),
    ]
    events += [_sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": f" word{i}"}})
               for i in range(pieces)]
    events += [
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}}),
        _sse("content_block_delta", {"type": "content_block_delta", "index": 1,
                                     "delta": {"type": "input_json_delta", "partial_json": ""}}),
        _sse("content_block_delta", {"type": "content_block_delta", "index": 1,
                                     "delta": {"type": "input_json_delta", "partial_json": '{"city": "Pa'}}),
        _sse("content_block_delta", {"type": "content_block_delta", "index": 1,
                                     "delta": {"type": "input_json_delta", "partial_json": 'ris"}'}}),
        _sse("content_block_stop", {"type": "content_block_stop", "index": 1}),
        _sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                               "usage": {"output_tokens": 60}}),
        _sse("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(events)


def _provider() -> AnthropicProvider:
    config = parse_config({"model_list": [{"model_name": "c", "litellm_params": {
        "model": "anthropic/claude-x", "api_base": "http://127.0.0.1:9", "api_key": "k"}}]})
    return AnthropicProvider(config.deployments[0])


def _events(out: bytes) -> list[Any]:
    return [e[6:] if e[6:] == b"[DONE]" else orjson.loads(e[6:]) for e in out.split(b"\n\n") if e]


def test_translator_is_split_independent():
    data = recorded_stream(5)
    provider = _provider()
    whole = provider.chat_stream({"stream_options": {"include_usage": True}})
    expected = _events(whole.feed(data))
    assert whole.complete
    for step in (1, 7, 64):
        split = provider.chat_stream({"stream_options": {"include_usage": True}})
        out = b"".join(split.feed(data[i:i + step]) for i in range(0, len(data), step))
        got = _events(out)
        assert [{**e, "id": 0, "created": 0} if isinstance(e, dict) else e for e in got] == \
            [{**e, "id": 0, "created": 0} if isinstance(e, dict) else e for e in expected]
        assert split.complete
    crlf = provider.chat_stream({})
    out = crlf.feed(data.replace(b"\n", b"\r\n"))
    assert crlf.complete and out.endswith(b"data: [DONE]\n\n")

    assert expected[-1] == b"[DONE]"
    usage = expected[-2]["usage"]
    assert usage["prompt_tokens"] == 25 + 100 + 7 and usage["completion_tokens"] == 60
    assert usage["prompt_tokens_details"]["cached_tokens"] == 100
    assert usage["cache_creation_input_tokens"] == 7
    assert whole.usage == usage
    calls = [e["choices"][0]["delta"]["tool_calls"][0] for e in expected[:-2] if "tool_calls" in
             e["choices"][0]["delta"]]
    assert calls[0] == {"index": 0, "id": "toolu_01", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city": "Paris"}'
    assert expected[-3]["choices"][0]["finish_reason"] == "tool_calls"
    assert expected[0]["id"] == "msg_01" and expected[0]["model"] == "claude-x"


def test_translator_error_event_is_not_complete():
    translator = _provider().chat_stream({})
    head = recorded_stream(2).split(b"event: content_block_stop")[0]
    error = _sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    out = translator.feed(head + error + _sse("message_stop", {"type": "message_stop"}))
    last = _events(out)[-1]
    assert last["error"]["code"] == "overloaded" and "Overloaded" in last["error"]["message"]
    assert not translator.complete and b"[DONE]" not in out


def test_thinking_deltas_become_reasoning_content():
    translator = _provider().chat_stream({})
    head = recorded_stream(0).split(b"event: content_block_start")[0]
    thinking = [
        _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "thinking", "thinking": ""}}),
        _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "thinking_delta", "thinking": "Let me think."}}),
        _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "signature_delta", "signature": "abc"}}),
    ]
    events = _events(translator.feed(head + b"".join(thinking)))
    assert [e["choices"][0]["delta"] for e in events] == [
        {"role": "assistant", "content": ""}, {"reasoning_content": "Let me think."}]


def test_response_mapping_of_a_recorded_body():
    body = orjson.dumps({
        "id": "msg_9", "type": "message", "role": "assistant", "model": "claude-x-20250101",
        "content": [{"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {"a": [1, {"b": "é"}]}},
                    {"type": "tool_use", "id": "toolu_b", "name": "g", "input": {}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 5,
                  "cache_creation_input_tokens": 2}})
    out, usage = _provider().chat_response(body)
    reply = orjson.loads(out)
    message = reply["choices"][0]["message"]
    assert reply["model"] == "claude-x-20250101" and reply["id"] == "msg_9"
    assert message["content"] == "Checking." and message["reasoning_content"] == "Hmm."
    assert [c["function"]["arguments"] for c in message["tool_calls"]] == ['{"a":[1,{"b":"é"}]}', "{}"]
    assert reply["choices"][0]["finish_reason"] == "tool_calls"
    assert usage == reply["usage"] and usage["prompt_tokens"] == 17 and usage["total_tokens"] == 21
    for reason, finish in (("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
                           ("refusal", "content_filter")):
        body = orjson.dumps({"model": "m", "content": [{"type": "text", "text": "x"}], "stop_reason": reason,
                             "usage": {"input_tokens": 1, "output_tokens": 1}})
        assert orjson.loads(_provider().chat_response(body)[0])["choices"][0]["finish_reason"] == finish


def test_error_classification_of_anthropic_bodies():
    provider = _provider()

    def err(status: int, err_type: str, message: str, retry: bytes | None = None) -> Any:
        body = orjson.dumps({"type": "error", "error": {"type": err_type, "message": message}})
        return provider.error(status, body, retry)

    assert err(400, "invalid_request_error", "prompt is too long: 1 tokens > 0 maximum").code == \
        "context_length_exceeded"
    assert err(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.").status == 413
    assert err(403, "permission_error", "no").kind == "permission"
    limited = err(429, "rate_limit_error", "slow down", b"12")
    assert (limited.status, limited.headers) == (429, {"Retry-After": "12"})
    assert err(529, "overloaded_error", "Overloaded").status == 503
    assert err(500, "api_error", "boom").status == 502
    assert provider.error(502, b"<html>bad gateway</html>", None).kind == "server"


def test_request_bytes_for_a_bare_claude_model():
    """A bare ``claude-*`` model is Anthropic's, at api.anthropic.com/v1/messages with the key header."""
    from mmproxy.providers import registration

    config = parse_config({"model_list": [{"model_name": "c", "litellm_params": {
        "model": "claude-3-haiku-20240307", "api_key": "sk-ant-test"}}]})
    deployment = config.deployments[0]
    assert registration(deployment.provider).adapter_class() is AnthropicProvider
    request = AnthropicProvider(deployment).chat_request({"model": "c", "messages": HELLO})
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/messages HTTP/1.1"
    assert b"x-api-key: sk-ant-test" in lines and b"anthropic-version: 2023-06-01" in lines
    assert orjson.loads(body) == {"model": "claude-3-haiku-20240307", "messages": HELLO, "max_tokens": 4096}


def test_gateway_metadata_is_not_sent_to_anthropic(client, sim):
    """LiteLLM clients put logging tags in ``metadata``; it is the gateway's, not an Anthropic parameter."""
    reply = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}],
                                           metadata={"team": "search"})
    assert reply.choices[0].message.content
    assert "team" not in str(sim.last()["body"])
