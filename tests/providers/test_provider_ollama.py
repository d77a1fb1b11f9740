"""Ollama through the real gateway: the openai SDK on one side, the simulator's Ollama API on the other."""

from __future__ import annotations

import base64
import json
from array import array
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from mmproxy.config import parse_config
from mmproxy.errors import ProxyError
from mmproxy.providers.ollama.adapter import OllamaChatProvider, OllamaGenerateProvider
from mmproxy.simulator.server import run_in_thread
from tests.conftest import MASTER_KEY, Process, SimControl, start_gateway

HELLO = [{"role": "user", "content": "Say hello to the local model."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["city"]},
    },
}
PIXEL = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image bytes").decode()


def _deployment(name: str, model: str, base: str, **params: Any) -> dict[str, Any]:
    info = params.pop("model_info", {})
    return {"model_name": name, "litellm_params": {"model": model, "api_base": base, **params},
            "model_info": info}


@pytest.fixture(scope="module")
def gateway(simulator: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    base = simulator.url  # Ollama's api_base is the host root
    config = {
        "model_list": [
            _deployment("local", "ollama_chat/llama3.1", base),
            _deployment("local-drop", "ollama_chat/llama3.1", base, drop_params=True),
            _deployment("local-keyed", "ollama_chat/llama3.1", base, api_key="sk-ollama-proxy-key-42"),
            _deployment("local-gen", "ollama/llama3.1", base),
            _deployment("local-flaky", "ollama_chat/flaky", base, stream_timeout=2.0),
            _deployment("local-embed", "ollama/nomic-embed-text", base, model_info={"mode": "embedding"}),
            _deployment("local-embed-chat", "ollama_chat/nomic-embed-text", base,
                        model_info={"mode": "embedding"}),
        ],
        "general_settings": {"master_key": MASTER_KEY},
        "router_settings": {"cooldown_time": 0},  # fault tests must not cool deployments down for each other
    }
    process = start_gateway(tmp_path_factory.mktemp("ollama"), config)
    yield process
    process.stop()


@pytest.fixture
def client(gateway: Process) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=MASTER_KEY, max_retries=0)


@pytest.fixture
def raw(gateway: Process) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10)


def _replay(simulator: Process, received: dict[str, Any]) -> dict[str, Any]:
    """Send the body the simulator received straight back to it, non-streaming: the upstream's own answer."""
    body = {**received["body"], "stream": False}
    response = httpx.post(simulator.url + received["path"], json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def _stream_chunks(client: openai.OpenAI, **kwargs: Any) -> list[Any]:
    return list(client.chat.completions.create(stream=True, **kwargs))


# -- /api/chat ---------------------------------------------------------------------
def test_chat_answer_is_ollamas_answer(client, simulator: Process, sim: SimControl):
    completion = client.chat.completions.create(model="local", messages=HELLO)
    received = sim.last()
    assert received["path"] == "/api/chat"
    assert received["body"]["model"] == "llama3.1"
    assert received["body"]["messages"] == HELLO
    assert received["body"]["stream"] is False  # Ollama streams unless told not to
    assert "authorization" not in received["headers"]  # local tier: no key configured, none sent

    upstream = _replay(simulator, received)
    assert completion.choices[0].message.content == upstream["message"]["content"]
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.object == "chat.completion"
    assert completion.model == "llama3.1"
    assert completion.usage.prompt_tokens == upstream["prompt_eval_count"]
    assert completion.usage.completion_tokens == upstream["eval_count"]
    assert completion.usage.total_tokens == upstream["prompt_eval_count"] + upstream["eval_count"]


def test_stream_with_usage_matches_non_stream(client, sim: SimControl):
    full = client.chat.completions.create(model="local", messages=HELLO)
    chunks = _stream_chunks(client, model="local", messages=HELLO, stream_options={"include_usage": True})
    assert sim.last()["body"]["stream"] is True
    assert "stream_options" not in sim.last()["body"]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # really streamed
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_stream_without_usage_has_no_usage_chunk(raw: httpx.Client):
    with raw.stream("POST", "/v1/chat/completions",
                    json={"model": "local", "messages": HELLO, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [e for e in "".join(response.iter_text()).split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert all("usage" not in p for p in payloads)
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"


def test_options_mapping_and_passthrough(client, sim: SimControl):
    client.chat.completions.create(
        model="local", messages=HELLO, temperature=0.3, top_p=0.9, seed=7, stop="END", max_tokens=50,
        presence_penalty=0.5, frequency_penalty=0.25,
        extra_body={"keep_alive": "5m", "think": False, "options": {"num_ctx": 8192, "top_k": 20}},
    )
    body = sim.last()["body"]
    assert body["stream"] is False
    assert body["options"] == {"num_ctx": 8192, "top_k": 20, "temperature": 0.3, "top_p": 0.9, "seed": 7,
                               "stop": ["END"], "num_predict": 50, "presence_penalty": 0.5,
                               "frequency_penalty": 0.25}
    assert body["keep_alive"] == "5m" and body["think"] is False
    # OpenAI names never leak into the Ollama body.
    for name in ("temperature", "max_tokens", "stop", "seed", "top_p"):
        assert name not in body


def test_max_completion_tokens_caps_with_length(client, sim: SimControl):
    completion = client.chat.completions.create(model="local", messages=HELLO, max_completion_tokens=3)
    assert sim.last()["body"]["options"] == {"num_predict": 3}
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 3
    chunks = _stream_chunks(client, model="local", messages=HELLO, max_completion_tokens=3)
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["length"]


def test_tool_call_non_stream(client, simulator: Process, sim: SimControl):
    completion = client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=[WEATHER])
    received = sim.last()
    assert received["body"]["tools"] == [WEATHER]
    upstream = _replay(simulator, received)["message"]["tool_calls"][0]["function"]
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and len(call.id) > 10
    assert call.function.name == "get_weather"
    assert call.function.arguments == json.dumps(upstream["arguments"], separators=(",", ":"))
    assert json.loads(call.function.arguments) == upstream["arguments"]


def test_tool_call_stream(client, sim: SimControl):
    full = client.chat.completions.create(model="local", messages=[{"role": "user", "content": "Oslo?"}],
                                          tools=[WEATHER])
    chunks = _stream_chunks(client, model="local", messages=[{"role": "user", "content": "Oslo?"}],
                            tools=[WEATHER], stream_options={"include_usage": True})
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1
    assert calls[0].index == 0 and calls[0].id.startswith("call_") and calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    expected = full.choices[0].message.tool_calls[0].function.arguments
    assert json.loads(calls[0].function.arguments) == json.loads(expected)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_tool_result_round_trip(client, sim: SimControl):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_abc", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Oslo", "days": 2}'}}]},
        {"role": "tool", "tool_call_id": "call_abc", "content": '{"temp_c": -3}'},
    ]
    completion = client.chat.completions.create(model="local", messages=messages, tools=[WEATHER])
    sent = sim.last()["body"]["messages"]
    assert sent == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}}}]},
        {"role": "tool", "content": '{"temp_c": -3}', "tool_name": "get_weather"},
    ]
    # After a tool result the model answers in text.
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content
    assert not completion.choices[0].message.tool_calls


def test_tool_choice_none_leaves_tools_out(client, sim: SimControl):
    completion = client.chat.completions.create(model="local", messages=HELLO, tools=[WEATHER], tool_choice="none")
    assert "tools" not in sim.last()["body"]
    assert completion.choices[0].finish_reason == "stop"


def test_tool_choice_required_is_rejected_unless_dropped(client, sim: SimControl):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="local", messages=HELLO, tools=[WEATHER], tool_choice="required")
    assert "tool_choice" in str(exc.value)
    assert sim.stats()["requests"] == 0
    client.chat.completions.create(model="local-drop", messages=HELLO, tools=[WEATHER], tool_choice="required")
    assert sim.last()["body"]["tools"] == [WEATHER]


def test_data_url_image_becomes_base64(client, sim: SimControl):
    content = [{"type": "text", "text": "What is in this picture?"},
               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]
    completion = client.chat.completions.create(model="local", messages=[{"role": "user", "content": content}])
    assert completion.choices[0].message.content
    assert sim.last()["body"]["messages"] == [
        {"role": "user", "content": "What is in this picture?", "images": [PIXEL]}]


def test_http_image_url_is_a_400_naming_the_field(client, sim: SimControl):
    content = [{"type": "text", "text": "What is this?"},
               {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="local", messages=[{"role": "user", "content": content}])
    assert exc.value.body["param"] == "messages[0].content[1].image_url.url"
    assert "data URL" in exc.value.body["message"]
    assert sim.stats()["requests"] == 0


def test_json_mode_and_json_schema(client, sim: SimControl):
    client.chat.completions.create(model="local", messages=HELLO, response_format={"type": "json_object"})
    assert sim.last()["body"]["format"] == "json"
    schema = {"type": "object", "properties": {"greeting": {"type": "string"}}, "required": ["greeting"]}
    client.chat.completions.create(
        model="local", messages=HELLO,
        response_format={"type": "json_schema", "json_schema": {"name": "hello", "schema": schema}})
    assert sim.last()["body"]["format"] == schema
    client.chat.completions.create(model="local", messages=HELLO, response_format={"type": "text"})
    assert "format" not in sim.last()["body"]


def test_api_key_goes_as_bearer(client, sim: SimControl):
    client.chat.completions.create(model="local-keyed", messages=HELLO)
    assert sim.last()["headers"]["authorization"] == "Bearer sk-ollama-proxy-key-42"
    assert MASTER_KEY not in str(sim.last()["headers"])


# -- /api/generate -----------------------------------------------------------------
def test_generate_plain(client, simulator: Process, sim: SimControl):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    completion = client.chat.completions.create(model="local-gen", messages=messages, temperature=0.1)
    received = sim.last()
    assert received["path"] == "/api/generate"
    body = received["body"]
    assert body["prompt"] == "Name a colour." and body["system"] == "Be brief."
    assert body["stream"] is False and body["options"] == {"temperature": 0.1}
    assert "messages" not in body
    upstream = _replay(simulator, received)
    assert completion.choices[0].message.content == upstream["response"]
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == upstream["prompt_eval_count"]
    assert completion.usage.completion_tokens == upstream["eval_count"]


def test_generate_flattens_a_conversation(client, sim: SimControl):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Name a colour."}]
    client.chat.completions.create(model="local-gen", messages=messages)
    prompt = sim.last()["body"]["prompt"]
    assert prompt == "### User:\nHi\n\n### Assistant:\nHello!\n\n### User:\nName a colour.\n\n### Assistant:\n"


def test_generate_stream(client, sim: SimControl):
    full = client.chat.completions.create(model="local-gen", messages=HELLO)
    chunks = _stream_chunks(client, model="local-gen", messages=HELLO, stream_options={"include_usage": True})
    assert sim.last()["body"]["stream"] is True
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_generate_rejects_tools(client, sim: SimControl):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="local-gen", messages=HELLO, tools=[WEATHER])
    assert exc.value.body["param"] == "tools"
    assert sim.stats()["requests"] == 0


# -- embeddings --------------------------------------------------------------------
@pytest.mark.parametrize("model", ["local-embed", "local-embed-chat"])
def test_embeddings_base64_default_and_float(client, simulator: Process, sim: SimControl, model: str):
    texts = ["first text", "second text"]
    default = client.embeddings.create(model=model, input=texts)  # the SDK asks for base64 and decodes it
    received = sim.last()
    assert received["path"] == "/api/embed"
    assert received["body"] == {"model": "nomic-embed-text", "input": texts}
    upstream = _replay(simulator, received)["embeddings"]
    assert [d.index for d in default.data] == [0, 1]
    for got, want in zip(default.data, upstream, strict=True):
        assert got.embedding == list(array("f", want))  # float32 precision, as OpenAI's base64 carries
    assert default.usage.prompt_tokens == default.usage.total_tokens > 0

    floats = client.embeddings.create(model=model, input="first text", encoding_format="float", dimensions=8)
    assert sim.last()["body"] == {"model": "nomic-embed-text", "input": "first text", "dimensions": 8}
    assert len(floats.data[0].embedding) == 8


def test_embeddings_raw_base64_is_little_endian_float32(raw: httpx.Client, simulator: Process, sim: SimControl):
    response = raw.post("/v1/embeddings", json={"model": "local-embed", "input": "abc", "encoding_format": "base64"})
    assert response.status_code == 200
    encoded = response.json()["data"][0]["embedding"]
    assert isinstance(encoded, str)
    decoded = array("f")
    decoded.frombytes(base64.b64decode(encoded))
    assert list(decoded) == list(array("f", _replay(simulator, sim.last())["embeddings"][0]))


# -- errors ------------------------------------------------------------------------
def test_model_not_found_is_404(client, sim: SimControl):
    sim.fault("llama3.1", "404")
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="local", messages=HELLO)
    assert 'model "llama3.1" not found, try pulling it first' in exc.value.body["message"]
    assert exc.value.body["code"] == "model_not_found"


def test_server_error_is_502_and_overload_503(client, sim: SimControl):
    sim.fault("llama3.1", "500")
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="local", messages=HELLO)
    assert exc.value.status_code == 502
    assert "llama runner process has terminated" in exc.value.body["message"]
    sim.fault("llama3.1", "503", retry_after=2)
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="local", messages=HELLO, stream=True)
    assert exc.value.status_code == 503
    assert exc.value.body["code"] == "overloaded"
    assert exc.value.response.headers["retry-after"] == "2"


def test_context_error_is_classified(client, sim: SimControl):
    sim.fault("llama3.1", "400_context")
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="local", messages=HELLO)
    assert exc.value.body["code"] == "context_length_exceeded"


def test_cut_stream_is_an_sdk_error(client, raw: httpx.Client, sim: SimControl):
    sim.fault("flaky", "cut", count=2, cut_after=3)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="local-flaky", messages=HELLO, stream=True):
            pass
    with raw.stream("POST", "/v1/chat/completions",
                    json={"model": "local-flaky", "messages": HELLO, "stream": True}) as response:
        text = "".join(response.iter_text())
    assert "[DONE]" not in text
    assert '"content"' in text  # the lines before the cut were relayed
    assert [e for e in text.split("\n\n") if e][-1].startswith('data: {"error"')


def test_unsupported_param_is_400_or_dropped(client, sim: SimControl):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="local", messages=HELLO, logprobs=True)
    assert exc.value.body["param"] == "logprobs"
    assert sim.stats()["requests"] == 0
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="local", messages=HELLO, n=2)
    assert exc.value.body["param"] == "n"
    assert sim.stats()["requests"] == 0
    # As in LiteLLM, n=1 and user need no drop_params: they ask for nothing Ollama cannot do.
    client.chat.completions.create(model="local", messages=HELLO, n=1, user="alice")
    assert "n" not in sim.last()["body"] and "user" not in sim.last()["body"]
    completion = client.chat.completions.create(model="local-drop", messages=HELLO, logprobs=True, n=3)
    assert len(completion.choices) == 1 and completion.choices[0].message.content
    body = sim.last()["body"]
    assert "logprobs" not in body and "n" not in body


# -- the stream translator on its own ------------------------------------------------
def _provider(cls: type, model: str = "ollama_chat/llama3.1") -> Any:
    config = parse_config({"model_list": [{"model_name": "m", "litellm_params": {"model": model}}]})
    return cls(config.deployments[0])


def _lines(*objs: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(o) + b"\n" for o in objs)


RECORDED = _lines(
    {"model": "llama3.1", "created_at": "2024-08-07T03:57:33.03Z", "message": {"role": "assistant",
                                                                               "content": "Hel"}, "done": False},
    {"model": "llama3.1", "created_at": "2024-08-07T03:57:33.04Z", "message": {"role": "assistant",
                                                                               "content": "lo ☃"}, "done": False},
    {"model": "llama3.1", "created_at": "2024-08-07T03:57:33.05Z", "message": {"role": "assistant", "content": "",
     "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}, "done": False},
    {"model": "llama3.1", "created_at": "2024-08-07T03:57:33.06Z", "message": {"role": "assistant", "content": ""},
     "done_reason": "stop", "done": True, "prompt_eval_count": 11, "eval_count": 4},
)


def _events(out: bytes) -> list[Any]:
    return [json.loads(e[6:]) if e != b"data: [DONE]" else "DONE" for e in out.split(b"\n\n") if e]


def _strip_ids(events: list[Any]) -> list[Any]:
    for e in events:
        if isinstance(e, dict):
            e.pop("id"), e.pop("created")
            for c in e.get("choices", []):
                for tc in c["delta"].get("tool_calls") or []:
                    tc.pop("id", None)
    return events


def test_translator_handles_any_split():
    provider = _provider(OllamaChatProvider)
    whole = provider.chat_stream({"stream_options": {"include_usage": True}})
    expected = _strip_ids(_events(whole.feed(RECORDED)))
    assert whole.complete and whole.usage["prompt_tokens"] == 11 and whole.usage["completion_tokens"] == 4
    assert expected[-1] == "DONE"
    assert [e["choices"][0]["finish_reason"] for e in expected[:-2]][-1] == "tool_calls"
    for size in (1, 2, 7, 64):
        t = provider.chat_stream({"stream_options": {"include_usage": True}})
        out = b"".join(t.feed(RECORDED[i:i + size]) for i in range(0, len(RECORDED), size))
        assert t.complete
        assert _strip_ids(_events(out)) == expected


def test_translator_error_line_is_an_error_event_not_complete():
    t = _provider(OllamaGenerateProvider, "ollama/llama3.1").chat_stream({})
    out = t.feed(_lines({"model": "llama3.1", "response": "Hi", "done": False}))
    out += t.feed(b'{"error":"an error was encountered while running the model: unexpected EOF"}\n')
    events = _events(out)
    assert events[1]["choices"][0]["delta"] == {"content": "Hi"}
    assert events[-1]["error"]["type"] == "upstream_error"
    assert "unexpected EOF" in events[-1]["error"]["message"]
    assert not t.complete
    assert t.feed(_lines({"model": "llama3.1", "response": "", "done": True})) == b""


def test_thinking_becomes_reasoning_content():
    provider = _provider(OllamaChatProvider)
    body, usage = provider.chat_response(orjson.dumps({
        "model": "qwen3", "message": {"role": "assistant", "content": "42", "thinking": "6 times 7"},
        "done": True, "done_reason": "stop", "prompt_eval_count": 5, "eval_count": 9}))
    message = json.loads(body)["choices"][0]["message"]
    assert message["content"] == "42" and message["reasoning_content"] == "6 times 7"
    assert usage["total_tokens"] == 14
    t = provider.chat_stream({})
    out = t.feed(_lines({"message": {"role": "assistant", "content": "", "thinking": "hmm"}, "done": False},
                        {"message": {"role": "assistant", "content": "42"}, "done": False}))
    deltas = [e["choices"][0]["delta"] for e in _events(out)]
    assert deltas == [{"role": "assistant", "content": ""}, {"reasoning_content": "hmm"}, {"content": "42"}]


def test_bad_upstream_body_is_502():
    provider = _provider(OllamaChatProvider)
    with pytest.raises(ProxyError) as exc:
        provider.chat_response(b"<html>oops</html>")
    assert exc.value.status == 502 and exc.value.code == "upstream_bad_response"


def test_simulator_model_list_and_shapes():
    sim = run_in_thread(models="llama3.1,nomic-embed-text")
    try:
        http = httpx.Client(base_url=sim.base_url, timeout=10)
        missing = http.post("/api/chat", json={"model": "mistral", "messages": HELLO})
        assert missing.status_code == 404
        assert missing.json() == {"error": 'model "mistral" not found, try pulling it first'}
        assert [m["name"] for m in http.get("/api/tags").json()["models"]] == ["llama3.1:latest",
                                                                               "nomic-embed-text:latest"]
        assert "version" in http.get("/api/version").json()
        with http.stream("POST", "/api/chat", json={"model": "llama3.1:latest", "messages": HELLO}) as response:
            assert response.headers["content-type"] == "application/x-ndjson"
            lines = [json.loads(line) for line in response.iter_lines() if line]
        assert all(not line["done"] for line in lines[:-1]) and lines[-1]["done"] is True
        assert lines[-1]["done_reason"] == "stop" and lines[-1]["eval_count"] > 0
        for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_duration"):
            assert isinstance(lines[-1][key], int)
        assert lines[0]["created_at"].endswith("Z")
        bad = http.post("/api/chat", json={"model": "llama3.1", "stream": False,
                                           "messages": [{"role": "user", "content": "x", "images": ["%%%"]}]})
        assert bad.status_code == 400 and "base64" in bad.json()["error"]
    finally:
        sim.close()
