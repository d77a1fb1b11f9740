"""The Gemini provider end to end: the openai SDK -> gateway -> Gemini wire -> simulator, and back.

Each test checks what the client got and what the simulator (speaking Gemini's v1beta wire) received.
The translator and error mapping also get direct tests for what the simulator cannot produce.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import httpx
import openai
import orjson
import pytest

from mmproxy import tokens
from mmproxy.config import parse_config
from mmproxy.providers.gemini.adapter import GeminiProvider
from mmproxy.providers.gemini.request import to_contents
from mmproxy.providers.gemini.response import to_choice
from mmproxy.providers.gemini.stream import GeminiStream
from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, SimControl, start_gateway

MODEL = "gemini-2.0-flash"
HELLO = [{"role": "user", "content": "Say hello to Gemini."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["city", "days"], "additionalProperties": False},
    },
}
PNG_DATA = base64.b64encode(b"\x89PNG\r\n\x1a\nfake-image-bytes").decode()


@pytest.fixture(scope="module")
def gemini_gateway(simulator: Process, tmp_path_factory: pytest.TempPathFactory):
    base = f"{simulator.url}/v1beta"
    model_list = [
        {"model_name": "gem", "litellm_params": {"model": f"gemini/{MODEL}", "api_base": base,
                                                 "api_key": UPSTREAM_KEY},
         "model_info": {"input_cost_per_token": 1e-07, "output_cost_per_token": 4e-07}},
        {"model_name": "gem-drop", "litellm_params": {"model": f"gemini/{MODEL}", "api_base": base,
                                                      "api_key": UPSTREAM_KEY, "drop_params": True}},
        {"model_name": "gem-badkey", "litellm_params": {"model": f"gemini/{MODEL}", "api_base": base,
                                                        "api_key": "AIza-wrong-key-42"}},
        {"model_name": "gem-embed", "litellm_params": {"model": "gemini/text-embedding-004", "api_base": base,
                                                       "api_key": UPSTREAM_KEY},
         "model_info": {"mode": "embedding"}},
    ]
    config = {"model_list": model_list, "general_settings": {"master_key": MASTER_KEY},
              "router_settings": {"cooldown_time": 0}}
    gw = start_gateway(tmp_path_factory.mktemp("gemini"), config)
    yield gw
    gw.stop()


@pytest.fixture
def client(gemini_gateway: Process) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gemini_gateway.url}/v1", api_key=MASTER_KEY, max_retries=0)


@pytest.fixture
def raw(gemini_gateway: Process) -> httpx.Client:
    return httpx.Client(base_url=gemini_gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10)


def upstream(simulator: Process, method: str, body: dict[str, Any], query: str = "") -> httpx.Response:
    """Call the simulator's Gemini wire directly, as the gateway would."""
    return httpx.post(f"{simulator.url}/v1beta/models/{MODEL}:{method}{query}", json=body,
                      headers={"x-goog-api-key": UPSTREAM_KEY}, timeout=10)


def sse_events(text: str) -> list[str]:
    return [e for e in text.split("\n\n") if e]


# -- plain chat -------------------------------------------------------------------------
def test_plain_chat_is_the_upstream_answer(client, simulator: Process, sim: SimControl):
    via = client.chat.completions.with_raw_response.create(model="gem", messages=HELLO)
    reply = via.parse()
    received = sim.last()
    assert received["path"] == f"/v1beta/models/{MODEL}:generateContent"
    assert received["headers"]["x-goog-api-key"] == UPSTREAM_KEY
    assert "authorization" not in received["headers"] and MASTER_KEY not in str(received["headers"])
    assert received["body"] == {"contents": [{"role": "user", "parts": [{"text": HELLO[0]["content"]}]}]}

    direct = upstream(simulator, "generateContent", received["body"]).json()
    meta = direct["usageMetadata"]
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == direct["candidates"][0]["content"]["parts"][0]["text"]
    assert reply.choices[0].finish_reason == "stop"
    assert reply.id.startswith("chatcmpl-") and reply.model == MODEL
    assert reply.usage.prompt_tokens == meta["promptTokenCount"]
    assert reply.usage.completion_tokens == meta["candidatesTokenCount"]
    assert reply.usage.total_tokens == meta["totalTokenCount"]
    expected_cost = meta["promptTokenCount"] * 1e-07 + meta["candidatesTokenCount"] * 4e-07
    assert float(via.headers["x-mmproxy-cost-usd"]) == pytest.approx(expected_cost, rel=1e-9)


def test_key_from_gemini_api_key_variable(simulator: Process, tmp_path, sim: SimControl, monkeypatch):
    config = {"model_list": [{"model_name": "g", "litellm_params": {
        "model": "gemini/gemini-env", "api_base": f"{simulator.url}/v1beta"}}]}
    monkeypatch.setenv("GEMINI_API_KEY", UPSTREAM_KEY)  # LiteLLM's variable for the gemini/ prefix
    gw = start_gateway(tmp_path, config)
    try:
        response = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "g", "messages": HELLO}, timeout=10)
        assert response.status_code == 200, response.text
        assert sim.last()["headers"]["x-goog-api-key"] == UPSTREAM_KEY
    finally:
        gw.stop()


def test_streaming_with_usage_matches_non_streaming(client, sim: SimControl):
    full = client.chat.completions.create(model="gem", messages=HELLO)
    stream = client.chat.completions.create(model="gem", messages=HELLO, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    received = sim.last()
    assert received["path"] == f"/v1beta/models/{MODEL}:streamGenerateContent"
    assert received["query"] == "alt=sse"
    assert "stream" not in received["body"] and "stream_options" not in received["body"]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # really streamed
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_stream_wire_ends_with_one_done_and_no_usage_unless_asked(raw: httpx.Client):
    with raw.stream("POST", "/v1/chat/completions", json={"model": "gem", "messages": HELLO, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    events = sse_events(text)
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]" and text.count("[DONE]") == 1
    assert all('"usage"' not in e for e in events)


def test_cut_stream_ends_with_an_error_not_done(raw: httpx.Client, sim: SimControl):
    sim.fault(MODEL, "cut", cut_after=2)
    body = {"model": "gem", "messages": HELLO, "stream": True}
    with raw.stream("POST", "/v1/chat/completions", json=body) as r:
        text = "".join(r.iter_text())
    events = sse_events(text)
    assert "data: [DONE]" not in events
    assert events[-1].startswith('data: {"error"') and "stream_cut" in events[-1]


def test_corrupt_stream_event_is_not_passed_on_as_complete(raw: httpx.Client, sim: SimControl):
    sim.fault(MODEL, "bad_json")
    with raw.stream("POST", "/v1/chat/completions", json={"model": "gem", "messages": HELLO, "stream": True}) as r:
        text = "".join(r.iter_text())
    events = sse_events(text)
    assert "data: [DONE]" not in events and events[-1].startswith('data: {"error"')


# -- request mapping ----------------------------------------------------------------------
def test_system_and_developer_become_system_instruction_and_turns_merge(client, sim: SimControl):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "First question."},
        {"role": "user", "content": [{"type": "text", "text": "Second part."}]},
        {"role": "assistant", "content": "An answer."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Follow-up."},
    ]
    client.chat.completions.create(model="gem", messages=messages)
    body = sim.last()["body"]
    assert body["systemInstruction"] == {"parts": [{"text": "You are terse."}, {"text": "Answer in French."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "First question."}, {"text": "Second part."}]},
        {"role": "model", "parts": [{"text": "An answer."}]},
        {"role": "user", "parts": [{"text": "Follow-up."}]},
    ]


def test_generation_config_mapping(client, sim: SimControl):
    reply = client.chat.completions.create(
        model="gem", messages=HELLO, temperature=0.3, top_p=0.9, max_tokens=50, stop="END", n=2, seed=7,
        presence_penalty=0.5, frequency_penalty=-0.25,
        extra_body={"top_k": 40, "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT",
                                                     "threshold": "BLOCK_NONE"}]},
    )
    body = sim.last()["body"]
    assert body["generationConfig"] == {
        "temperature": 0.3, "topP": 0.9, "maxOutputTokens": 50, "stopSequences": ["END"], "candidateCount": 2,
        "seed": 7, "presencePenalty": 0.5, "frequencyPenalty": -0.25, "topK": 40,
    }
    assert body["safetySettings"] == [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.choices[0].message.content != reply.choices[1].message.content


def test_max_completion_tokens_wins_and_cap_is_length(client, sim: SimControl):
    reply = client.chat.completions.create(model="gem", messages=HELLO, max_tokens=50, max_completion_tokens=3,
                                           stop=["zzz", "yyy"])
    config = sim.last()["body"]["generationConfig"]
    assert config == {"maxOutputTokens": 3, "stopSequences": ["zzz", "yyy"]}
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3


def test_stream_with_n_above_one_is_refused(raw: httpx.Client):
    response = raw.post("/v1/chat/completions", json={"model": "gem", "messages": HELLO, "stream": True, "n": 2})
    assert response.status_code == 400 and response.json()["error"]["param"] == "n"


def test_unsupported_parameter_is_400_or_dropped(client, sim: SimControl):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gem", messages=HELLO, logprobs=True)
    error = info.value.body
    assert error["param"] == "logprobs" and error["code"] == "unsupported_parameter"
    assert "drop_params" in error["message"]

    reply = client.chat.completions.create(model="gem-drop", messages=HELLO, logprobs=True,
                                           parallel_tool_calls=False, temperature=0.1)
    assert reply.choices[0].message.content
    body = sim.last()["body"]
    assert "logprobs" not in str(body) and "parallel" not in str(body)
    assert body["generationConfig"] == {"temperature": 0.1}


# -- tools --------------------------------------------------------------------------------
def test_tool_call_non_stream(client, sim: SimControl):
    reply = client.chat.completions.create(model="gem", messages=HELLO, tools=[WEATHER], tool_choice="required")
    body = sim.last()["body"]
    assert body["tools"] == [{"functionDeclarations": [{
        "name": "get_weather", "description": "Current weather of a city",
        "parametersJsonSchema": WEATHER["function"]["parameters"]}]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert call.id.startswith("call_") and len(call.id) == 5 + 24
    args = orjson.loads(call.function.arguments)
    assert set(args) == {"city", "days"} and isinstance(args["days"], int)
    assert call.function.arguments == orjson.dumps(args).decode()  # compact JSON


@pytest.mark.parametrize(("choice", "config"), [
    ("auto", {"mode": "AUTO"}),
    ("none", {"mode": "NONE"}),
    ({"type": "function", "function": {"name": "get_time"}}, {"mode": "ANY", "allowedFunctionNames": ["get_time"]}),
])
def test_tool_choice_mapping(client, sim: SimControl, choice, config):
    time_tool = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    reply = client.chat.completions.create(model="gem", messages=HELLO, tools=[WEATHER, time_tool],
                                           tool_choice=choice)
    assert sim.last()["body"]["toolConfig"] == {"functionCallingConfig": config}
    calls = reply.choices[0].message.tool_calls
    if config["mode"] == "NONE":
        assert calls is None and reply.choices[0].finish_reason == "stop"
    else:
        assert calls[0].function.name == ("get_time" if "allowedFunctionNames" in config else "get_weather")


def test_tool_call_stream(client):
    chunks = list(client.chat.completions.create(model="gem", messages=HELLO, tools=[WEATHER], stream=True,
                                                 stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert len(calls) == 1
    call = calls[0]
    assert call.index == 0 and call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert set(orjson.loads(call.function.arguments)) == {"city", "days"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].usage.completion_tokens > 0


def test_tool_result_round_trip(client, sim: SimControl):
    first = client.chat.completions.create(model="gem", messages=HELLO, tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]
    second_id = "call_parallel_2"
    messages = [
        *HELLO,
        {"role": "assistant", "content": None, "tool_calls": [
            call.model_dump(),
            {"id": second_id, "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21, "sky": "clear"}'},
        {"role": "tool", "tool_call_id": second_id, "content": "noon"},
    ]
    reply = client.chat.completions.create(model="gem", messages=messages, tools=[WEATHER])
    contents = sim.last()["body"]["contents"]
    assert contents[1] == {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": orjson.loads(call.function.arguments)}},
        {"functionCall": {"name": "get_time", "args": {}}},
    ]}
    assert contents[2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21, "sky": "clear"}}},
        {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}},
    ]}
    # After a function response the model answers in text (auto), so agent loops end.
    assert reply.choices[0].finish_reason == "stop" and reply.choices[0].message.content


def test_tool_result_without_its_call_is_400(client, sim: SimControl):
    messages = [*HELLO, {"role": "tool", "tool_call_id": "call_unknown", "content": "x"}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gem", messages=messages)
    assert info.value.body["param"] == "messages[1].tool_call_id"
    assert sim.requests() == []  # refused before any upstream call


# -- images and JSON ---------------------------------------------------------------------------
def test_images_inline_and_by_url(client, sim: SimControl):
    content = [
        {"type": "text", "text": "Compare these."},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_DATA}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cats/tabby.webp?size=large"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/render?id=3", "detail": "low"}},
    ]
    reply = client.chat.completions.create(model="gem", messages=[{"role": "user", "content": content}])
    assert reply.choices[0].message.content
    assert sim.last()["body"]["contents"][0]["parts"] == [
        {"text": "Compare these."},
        {"inlineData": {"mimeType": "image/png", "data": PNG_DATA}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cats/tabby.webp?size=large"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/render?id=3"}},
    ]


def test_upstream_rejection_of_a_bad_image_is_a_400(client):
    content = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,not base64!!"}}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gem", messages=[{"role": "user", "content": content}])
    assert "Base64 decoding failed" in info.value.body["message"]


def test_json_object_mode(client, sim: SimControl):
    reply = client.chat.completions.create(model="gem", messages=HELLO, response_format={"type": "json_object"})
    assert sim.last()["body"]["generationConfig"] == {"responseMimeType": "application/json"}
    assert isinstance(orjson.loads(reply.choices[0].message.content), dict)


def test_json_schema_mode_uses_response_json_schema(client, sim: SimControl):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model="gem", messages=HELLO,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
    )
    assert sim.last()["body"]["generationConfig"] == {"responseMimeType": "application/json",
                                                     "responseJsonSchema": schema}
    value = orjson.loads(reply.choices[0].message.content)
    assert set(value) == {"name", "age"} and isinstance(value["age"], int)


# -- safety -------------------------------------------------------------------------------
def test_safety_stop_is_content_filter(client, sim: SimControl):
    sim.fault(MODEL, "safety")
    reply = client.chat.completions.create(model="gem", messages=HELLO)
    assert reply.choices[0].finish_reason == "content_filter"
    assert reply.choices[0].message.content == ""


def test_blocked_prompt_is_content_filter_with_empty_content(client, sim: SimControl):
    sim.fault(MODEL, "safety_prompt")
    reply = client.chat.completions.create(model="gem", messages=HELLO)
    assert len(reply.choices) == 1
    assert reply.choices[0].finish_reason == "content_filter"
    assert reply.choices[0].message.content == ""
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens == 0


@pytest.mark.parametrize("fault", ["safety", "safety_prompt"])
def test_safety_in_a_stream(client, sim: SimControl, fault):
    full = client.chat.completions.create(model="gem", messages=HELLO).choices[0].message.content
    sim.fault(MODEL, fault)
    chunks = list(client.chat.completions.create(model="gem", messages=HELLO, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["content_filter"]
    if fault == "safety":  # stopped part-way: what came before the stop is the start of the answer
        assert text and full.startswith(text) and text != full
    else:
        assert text == ""


# -- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize(("fault", "status", "err_type", "code"), [
    ("429", 429, "rate_limit_error", "rate_limit_exceeded"),
    ("503", 503, "upstream_error", "overloaded"),
    ("500", 502, "upstream_error", "upstream_500"),
    ("502", 502, "upstream_error", "upstream_502"),
    ("401", 401, "authentication_error", "upstream_auth_failed"),
    ("404", 404, "invalid_request_error", "model_not_found"),
    ("400_context", 400, "invalid_request_error", "context_length_exceeded"),
    ("400", 400, "invalid_request_error", "invalid_request"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors_are_classified(raw: httpx.Client, sim: SimControl, fault, status, err_type, code, stream):
    sim.fault(MODEL, fault, retry_after=7)
    response = raw.post("/v1/chat/completions", json={"model": "gem", "messages": HELLO, "stream": stream})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == (err_type, code)
    assert f"HTTP {502 if fault == '502' else int(fault[:3])}" in error["message"]
    if fault == "429":  # Gemini sends no Retry-After header: it comes from the RetryInfo detail
        assert response.headers["retry-after"] == "7"
    else:
        assert "retry-after" not in response.headers


def test_truncated_body_is_a_bad_upstream_response(raw: httpx.Client, sim: SimControl):
    sim.fault(MODEL, "bad_json")
    response = raw.post("/v1/chat/completions", json={"model": "gem", "messages": HELLO})
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_bad_response"


def test_rate_limit_seen_by_the_sdk(client, sim: SimControl):
    sim.fault(MODEL, "429", retry_after=0.4)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gem", messages=HELLO)
    assert info.value.response.headers["retry-after"] == "1"  # rounded up to whole seconds


def test_context_error_through_the_sdk(client, sim: SimControl):
    sim.fault(MODEL, "400_context")
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gem", messages=HELLO)
    assert info.value.code == "context_length_exceeded"
    assert "input token count" in info.value.body["message"]


def test_wrong_upstream_key_is_an_auth_error_without_the_key(raw: httpx.Client, sim: SimControl):
    response = raw.post("/v1/chat/completions", json={"model": "gem-badkey", "messages": HELLO})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error" and "API key not valid" in error["message"]
    assert "AIza-wrong-key-42" not in response.text
    assert sim.last()["status"] == 400  # Google answers a bad key with 400 INVALID_ARGUMENT


# -- embeddings ---------------------------------------------------------------------------
def test_embeddings_float(client, simulator: Process, sim: SimControl):
    texts = ["hello world", "gateways route requests"]
    result = client.embeddings.create(model="gem-embed", input=texts, encoding_format="float", dimensions=16)
    received = sim.last()
    assert received["path"] == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert received["body"] == {"requests": [
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": t}]}, "outputDimensionality": 16}
        for t in texts]}
    direct = httpx.post(f"{simulator.url}/v1beta/models/text-embedding-004:batchEmbedContents",
                        json=received["body"], headers={"x-goog-api-key": UPSTREAM_KEY}).json()
    assert [d.embedding for d in result.data] == [e["values"] for e in direct["embeddings"]]
    assert [d.index for d in result.data] == [0, 1]
    assert result.model == "text-embedding-004"
    # Gemini returns no usage: the gateway estimates it with its own tokenizer.
    assert result.usage.prompt_tokens == sum(tokens.count(t) for t in texts)


def test_embeddings_base64_as_the_sdk_sends_by_default(client, gemini_gateway: Process, sim: SimControl):
    floats = client.embeddings.create(model="gem-embed", input="hello world", encoding_format="float").data[0]
    decoded = client.embeddings.create(model="gem-embed", input="hello world")  # SDK asks for base64, decodes
    assert decoded.data[0].embedding == pytest.approx(floats.embedding, abs=0)
    wire = httpx.post(f"{gemini_gateway.url}/v1/embeddings", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                      json={"model": "gem-embed", "input": "hello world", "encoding_format": "base64"}).json()
    packed = base64.b64decode(wire["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(packed) // 4}f", packed)) == floats.embedding


def test_embeddings_token_arrays_are_refused(raw: httpx.Client):
    response = raw.post("/v1/embeddings", json={"model": "gem-embed", "input": [[1, 2, 3]]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "input"


def test_embedding_errors_are_classified(raw: httpx.Client, sim: SimControl):
    sim.fault("text-embedding-004", "503")
    response = raw.post("/v1/embeddings", json={"model": "gem-embed", "input": "x"})
    assert response.status_code == 503 and response.json()["error"]["code"] == "overloaded"


# -- translator and mapping details ---------------------------------------------------------------
def _event(obj: dict[str, Any], sep: bytes) -> bytes:
    return b"data: " + orjson.dumps(obj) + sep


def _recorded_stream(sep: bytes) -> bytes:
    meta = {"promptTokenCount": 9, "totalTokenCount": 9}
    parts = [{"text": "Let me think.", "thought": True}, {"text": "Hel"}, {"text": "lo, wörld"},
             {"text": "!", "thought": False}]
    events = [_event({"candidates": [{"content": {"parts": [p], "role": "model"}, "index": 0}],
                      "usageMetadata": meta, "responseId": "abc"}, sep) for p in parts]
    events.append(_event({"candidates": [{"content": {"parts": [{"text": ""}], "role": "model"},
                                          "finishReason": "STOP", "index": 0}],
                          "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4,
                                            "thoughtsTokenCount": 2, "cachedContentTokenCount": 3,
                                            "totalTokenCount": 15}, "responseId": "abc"}, sep))
    return b"".join(events)


def _translated(data: bytes, split: int) -> tuple[list[dict[str, Any] | str], GeminiStream]:
    translator = GeminiStream("gemini-x", include_usage=True)
    out = b"".join(translator.feed(data[i:i + split]) for i in range(0, len(data), split))
    events: list[dict[str, Any] | str] = []
    for event in out.split(b"\n\n"):
        if event:
            payload = event.removeprefix(b"data: ")
            events.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return events, translator


@pytest.mark.parametrize("sep", [b"\r\n\r\n", b"\n\n"])
@pytest.mark.parametrize("split", [1, 7, 10_000])
def test_translator_any_split_and_framing(sep: bytes, split: int):
    events, translator = _translated(_recorded_stream(sep), split)
    assert events[-1] == "[DONE]" and translator.complete
    chunks = [e for e in events if isinstance(e, dict)]
    assert {c["id"] for c in chunks} == {"chatcmpl-abc"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[1:] if c["choices"]) == \
        "Hello, wörld!"
    assert [c["choices"][0]["delta"].get("reasoning_content") for c in chunks[1:3]] == ["Let me think.", None]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (9, 6, 15)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 3
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 2
    assert translator.usage == usage


def test_translator_finish_without_usage_uses_the_last_seen_and_later_usage_is_accounted():
    sep = b"\r\n\r\n"
    data = (_event({"candidates": [{"content": {"parts": [{"text": "a"}]}, "index": 0}],
                    "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}}, sep)
            + _event({"candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS"}]}, sep))
    translator = GeminiStream("m", include_usage=True)
    out = translator.feed(data)
    assert out.endswith(b"data: [DONE]\n\n") and out.count(b"[DONE]") == 1
    assert b'"finish_reason":"length"' in out
    assert translator.complete and translator.usage["prompt_tokens"] == 5
    late = translator.feed(_event({"usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2}}, sep))
    assert late == b"" and translator.usage["completion_tokens"] == 2


def test_translator_without_finish_is_never_complete():
    translator = GeminiStream("m", include_usage=False)
    out = translator.feed(_event({"candidates": [{"content": {"parts": [{"text": "a"}]}}]}, b"\r\n\r\n"))
    assert b'"content":"a"' in out and not translator.complete
    out = translator.feed(b'data: {"candidates": [\r\n\r\n')  # corrupt: stop translating
    out += translator.feed(_event({"candidates": [{"finishReason": "STOP"}]}, b"\r\n\r\n"))
    assert out == b"" and not translator.complete
    failed = GeminiStream("m", include_usage=False)
    error = {"error": {"code": 500, "message": "internal", "status": "INTERNAL"}}
    assert failed.feed(_event(error, b"\r\n\r\n")) == b"" and not failed.complete


def test_translator_blocked_prompt_and_function_calls():
    blocked = GeminiStream("m", include_usage=False)
    out = blocked.feed(_event({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}, b"\n\n"))
    assert b'"finish_reason":"content_filter"' in out and blocked.complete
    calls = GeminiStream("m", include_usage=False)
    out = calls.feed(_event({"candidates": [{"content": {"parts": [
        {"functionCall": {"name": "a", "args": {"x": 1}}, "thoughtSignature": "c2ln"},
        {"functionCall": {"name": "b"}}]}, "finishReason": "STOP"}]}, b"\n\n"))
    chunks = [orjson.loads(e[6:]) for e in out.split(b"\n\n") if e.startswith(b"data: {")]
    tool_calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert [(t["index"], t["function"]["name"], t["function"]["arguments"]) for t in tool_calls] == \
        [(0, "a", '{"x":1}'), (1, "b", "{}")]
    assert tool_calls[0]["id"].endswith("__thought__c2ln") and "__thought__" not in tool_calls[1]["id"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_thought_signature_round_trips_through_the_call_id():
    message, reason = to_choice({"content": {"parts": [
        {"text": "thinking...", "thought": True},
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "U0lH"}]}, "finishReason": "STOP"})
    assert reason == "tool_calls" and message["content"] is None
    assert message["reasoning_content"] == "thinking..."
    call = message["tool_calls"][0]
    _, contents = to_contents([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]},
                             {"role": "tool", "tool_call_id": call["id"], "content": "[1, 2]"}])
    assert contents[1]["parts"] == [{"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "U0lH"}]
    assert contents[2]["parts"] == [{"functionResponse": {"name": "f", "response": {"content": [1, 2]}}}]


def _provider(**params: Any) -> GeminiProvider:
    config = parse_config({"model_list": [{"model_name": "g", "litellm_params": {
        "model": "gemini/gemini-2.5-pro", "api_key": "AIza-secret", **params}}]})
    return GeminiProvider(config.deployments[0])


def test_default_endpoint_and_targets():
    provider = _provider()
    plain = provider.chat_request({"model": "g", "messages": HELLO})
    streamed = provider.chat_request({"model": "g", "messages": HELLO, "stream": True})
    assert plain.startswith(b"POST /v1beta/models/gemini-2.5-pro:generateContent HTTP/1.1\r\n"
                            b"Host: generativelanguage.googleapis.com\r\n")
    assert streamed.startswith(b"POST /v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse HTTP/1.1\r\n")
    assert b"\r\nx-goog-api-key: AIza-secret\r\n" in plain


@pytest.mark.parametrize(("status", "body", "retry_after", "kind", "expected_retry"), [
    (429, {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37.2s"}]}}, None, "rate_limit", "38"),
    (429, {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}, b"5", "rate_limit", "5"),
    (400, {"error": {"code": 400, "message": "API key expired. Please renew the API key.",
                     "status": "INVALID_ARGUMENT"}}, None, "auth", None),
    (403, {"error": {"code": 403, "message": "Method doesn't allow unregistered callers. Please use API Key.",
                     "status": "PERMISSION_DENIED"}}, None, "auth", None),
    (403, {"error": {"code": 403, "message": "The caller does not have permission",
                     "status": "PERMISSION_DENIED"}}, None, "permission", None),
    (401, {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                     "status": "UNAUTHENTICATED"}}, None, "auth", None),
    (400, [{"error": {"code": 400, "message": "The input token count (2000000) exceeds the maximum number of "
                      "tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}}], None, "context", None),
    (504, {"error": {"code": 504, "message": "Deadline expired", "status": "DEADLINE_EXCEEDED"}}, None, "timeout",
     None),
    (500, b"<html>oops</html>", None, "server", None),
])
def test_error_classification(status, body, retry_after, kind, expected_retry):
    raw_body = body if isinstance(body, bytes) else orjson.dumps(body)
    error = _provider().error(status, raw_body, retry_after)
    assert error.kind == kind
    assert error.headers.get("Retry-After") == expected_retry
    assert "AIza-secret" not in error.message


# -- the simulator's Gemini wire itself ----------------------------------------------------------
def test_simulator_json_array_stream_and_alt_forms(simulator: Process):
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "sim": {"chunks": 3}}
    array_form = upstream(simulator, "streamGenerateContent", body)
    assert array_form.headers["content-type"] == "application/json"
    objects = array_form.json()
    assert len(objects) == 3 and objects[-1]["candidates"][0]["finishReason"] == "STOP"
    sse = upstream(simulator, "streamGenerateContent", body, "?alt=sse")
    assert sse.text.endswith("\r\n\r\n") and sse.text.count("data: ") == 3
    assert [orjson.loads(e[6:]) ["candidates"][0]["content"] for e in sse.text.split("\r\n\r\n") if e] == \
        [o["candidates"][0]["content"] for o in objects]
    assert upstream(simulator, "streamGenerateContent", body, "?alt=proto").status_code == 400


def test_simulator_auth_forms_and_unknown_fields(simulator: Process):
    url = f"{simulator.url}/v1beta/models/{MODEL}:generateContent"
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    assert httpx.post(f"{url}?key={UPSTREAM_KEY}", json=body).status_code == 200
    missing = httpx.post(url, json=body)
    assert missing.status_code == 403 and missing.json()["error"]["status"] == "PERMISSION_DENIED"
    unknown = upstream(simulator, "generateContent", {**body, "generationConfig": {"maxTokens": 5}})
    assert unknown.status_code == 400 and "maxTokens" in unknown.json()["error"]["message"]
    assert upstream(simulator, "generateContent", {**body, "messages": []}).status_code == 400
    snake = upstream(simulator, "generateContent", {**body, "generation_config": {"max_output_tokens": 2}})
    assert snake.json()["candidates"][0]["finishReason"] == "MAX_TOKENS"


def test_simulator_embed_content_count_tokens_and_models(simulator: Process):
    headers = {"x-goog-api-key": UPSTREAM_KEY}
    base = f"{simulator.url}/v1beta/models"
    one = httpx.post(f"{base}/text-embedding-004:embedContent", headers=headers,
                     json={"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 8}).json()
    batch = httpx.post(f"{base}/text-embedding-004:batchEmbedContents", headers=headers, json={"requests": [
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "hello"}]},
         "outputDimensionality": 8}]}).json()
    assert one["embedding"]["values"] == batch["embeddings"][0]["values"] and len(one["embedding"]["values"]) == 8
    counted = httpx.post(f"{base}/{MODEL}:countTokens", headers=headers,
                         json={"contents": [{"parts": [{"text": "hello"}]}]}).json()
    assert counted["totalTokens"] > 0
    listed = httpx.get(base, headers=headers).json()["models"]
    assert all(m["name"].startswith("models/") for m in listed)
    assert httpx.get(f"{base}/{MODEL}", headers=headers).json()["name"] == f"models/{MODEL}"
