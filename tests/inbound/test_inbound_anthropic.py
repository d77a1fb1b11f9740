"""Anthropic Messages API inbound translation: requests to OpenAI, answers and streams back.

Pure-function tests; the produced responses and event streams are also read back
through the real ``anthropic`` SDK (its SSE decoder and ``MessageStream`` accumulator),
served from an in-process httpx transport.
"""

from __future__ import annotations

import random
from typing import Any

import anthropic
import httpx2
import orjson
import pytest

from mmproxy.errors import ProxyError
from mmproxy.inbound.anthropic import (
    OpenAIToAnthropicStream,
    anthropic_error,
    anthropic_usage,
    from_openai,
    stream_error,
    to_openai,
)
from mmproxy.providers.base import StreamTranslator
from mmproxy.providers.chunks import DONE, ChunkStream, completion, openai_usage
from mmproxy.validation import validate_chat

USER_HI = [{"role": "user", "content": "hi"}]


def req(**fields: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet", "max_tokens": 256, "messages": USER_HI, **fields}


# -- requests ---------------------------------------------------------------------------


def test_basic_request_fields() -> None:
    payload = to_openai(req(
        system="Be brief.",
        temperature=0.2,
        top_p=0.9,
        stop_sequences=["END", "STOP"],
        metadata={"user_id": "u-42"},
        service_tier="standard_only",
    ))
    assert payload == {
        "model": "claude-sonnet",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "max_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END", "STOP"],
        "user": "u-42",
    }
    validate_chat(payload)


def test_stream_always_asks_for_usage() -> None:
    payload = to_openai(req(stream=True, stream_options={"include_usage": False}))
    assert payload["stream"] is True
    assert payload["stream_options"] == {"include_usage": True}
    assert "stream_options" not in to_openai(req(stream=False))


def test_system_blocks_join_and_keep_cache_control_on_request() -> None:
    system = [
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": "Long instructions.", "cache_control": {"type": "ephemeral"}},
    ]
    plain = to_openai(req(system=system, cache_control={"type": "ephemeral"}))
    assert plain["messages"][0] == {"role": "system", "content": "You are Claude Code.\nLong instructions."}
    assert "cache_control" not in plain

    kept = to_openai(req(system=system, cache_control={"type": "ephemeral"}), keep_cache_control=True)
    assert kept["messages"][0] == {"role": "system", "content": [
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": "Long instructions.", "cache_control": {"type": "ephemeral"}},
    ]}
    assert kept["cache_control"] == {"type": "ephemeral"}
    assert to_openai(req(system=""))["messages"] == [{"role": "user", "content": "hi"}]
    assert to_openai(req(system=[]))["messages"] == [{"role": "user", "content": "hi"}]


def test_multi_turn_tool_conversation() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "two lookups", "signature": "sig"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome", "units": "c"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
             "content": [{"type": "text", "text": "timeout"}, {"type": "text", "text": "retry later"}]},
            {"type": "text", "text": "Summarise please."},
        ]},
        {"role": "assistant", "content": "Paris is sunny; Rome failed."},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_3"}]},
    ]
    payload = to_openai(req(messages=messages))
    assert payload["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
            {"id": "toolu_2", "type": "function",
             "function": {"name": "weather", "arguments": '{"city":"Rome","units":"c"}'}},
        ]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C, sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: timeout\nretry later"},
        {"role": "user", "content": "Summarise please."},
        {"role": "assistant", "content": "Paris is sunny; Rome failed."},
        {"role": "tool", "tool_call_id": "toolu_3", "content": ""},
    ]
    validate_chat(payload)


def test_assistant_tool_use_only_and_thinking_only_turns() -> None:
    messages = [
        *USER_HI,
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "noargs", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "xyz"}]},
        {"role": "user", "content": "next"},
    ]
    out = to_openai(req(messages=messages))["messages"]
    assert out[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "t1", "type": "function", "function": {"name": "noargs", "arguments": "{}"}}]}
    assert [m["role"] for m in out] == ["user", "assistant", "tool", "user"]


def test_assistant_text_blocks_concatenate() -> None:
    messages = [*USER_HI, {"role": "assistant", "content": [
        {"type": "text", "text": "The answer "}, {"type": "text", "text": "is ("}]}]
    assert to_openai(req(messages=messages))["messages"][-1] == {"role": "assistant", "content": "The answer is ("}


def test_images_and_documents() -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"},
         "title": "spec.pdf"},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain doc"}},
        {"type": "text", "text": "Describe these."},
    ]
    out = to_openai(req(messages=[{"role": "user", "content": content}]))["messages"]
    assert out == [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "file", "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBER"}},
        {"type": "text", "text": "plain doc"},
        {"type": "text", "text": "Describe these."},
    ]}]


def test_tool_result_images_follow_the_tool_messages() -> None:
    messages = [
        *USER_HI,
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "screenshot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "text", "text": "captured"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}},
        ]}]},
    ]
    out = to_openai(req(messages=messages))["messages"]
    assert out[2:] == [
        {"role": "tool", "tool_call_id": "t1", "content": "captured"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}}]},
    ]


def test_cache_control_on_blocks_and_tools_only_when_kept() -> None:
    cc = {"type": "ephemeral"}
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "big context", "cache_control": cc},
    ]}]
    tools = [{"name": "t", "input_schema": {"type": "object"}, "cache_control": cc}]
    plain = to_openai(req(messages=messages, tools=tools))
    assert plain["messages"] == [{"role": "user", "content": "big context"}]
    assert "cache_control" not in plain["tools"][0]
    kept = to_openai(req(messages=messages, tools=tools), keep_cache_control=True)
    assert kept["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "big context", "cache_control": cc}]}]
    assert kept["tools"][0]["cache_control"] == cc


def test_tools_and_tool_choice() -> None:
    tools = [
        {"name": "get_weather", "description": "Weather now", "strict": True,
         "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
        {"type": "custom", "name": "noop", "input_schema": {"type": "object"}},
    ]
    payload = to_openai(req(tools=tools, tool_choice={"type": "any", "disable_parallel_tool_use": True}))
    assert payload["tools"] == [
        {"type": "function", "function": {
            "name": "get_weather", "description": "Weather now",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "strict": True}},
        {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}},
    ]
    assert payload["tool_choice"] == "required"
    assert payload["parallel_tool_calls"] is False
    validate_chat(payload)


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, "auto"),
    ({"type": "any"}, "required"),
    ({"type": "none"}, "none"),
    ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
])
def test_tool_choice_mapping(choice, expected) -> None:
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    payload = to_openai(req(tools=tools, tool_choice=choice))
    assert payload["tool_choice"] == expected
    assert "parallel_tool_calls" not in payload


def test_tool_choice_without_tools_is_not_sent() -> None:
    payload = to_openai(req(tool_choice={"type": "auto", "disable_parallel_tool_use": True}))
    assert "tool_choice" not in payload and "parallel_tool_calls" not in payload


def test_unknown_fields_pass_through_and_output_config_maps() -> None:
    thinking = {"type": "enabled", "budget_tokens": 2048}
    payload = to_openai(req(top_k=40, thinking=thinking, output_config={
        "effort": "max", "format": {"type": "json_schema", "schema": {"type": "object"}}}))
    assert payload["top_k"] == 40
    assert payload["thinking"] == thinking
    assert payload["reasoning_effort"] == "high"
    assert payload["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}}}
    assert "output_config" not in payload


def test_request_is_not_mutated() -> None:
    request = req(system=[{"type": "text", "text": "s"}], tools=[{"name": "t", "input_schema": {"type": "object"}}])
    before = orjson.dumps(request)
    to_openai(request, keep_cache_control=True)
    assert orjson.dumps(request) == before


BAD_REQUESTS = [
    ({"max_tokens": 1, "messages": USER_HI}, "model"),
    ({"model": "m", "messages": USER_HI}, "max_tokens"),
    ({"model": "m", "max_tokens": True, "messages": USER_HI}, "max_tokens"),
    ({"model": "m", "max_tokens": 0, "messages": USER_HI}, "max_tokens"),
    ({"model": "m", "max_tokens": 1}, "messages"),
    ({"model": "m", "max_tokens": 1, "messages": []}, "messages"),
    ({"model": "m", "max_tokens": 1, "messages": ["hi"]}, "messages[0]"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": []}]}, "messages[0].content"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
     "messages[0].content[0].type"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "tool_use", "id": "t", "name": "n", "input": {}}]}]}, "messages[0].content[0].type"),
    ({"model": "m", "max_tokens": 1, "messages": [*USER_HI, {"role": "assistant", "content": [
        {"type": "image", "source": {"type": "url", "url": "u"}}]}]}, "messages[1].content[0].type"),
    ({"model": "m", "max_tokens": 1, "messages": [*USER_HI, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "n", "input": "x"}]}]}, "messages[1].content[0].input"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"text": "no type"}]}]},
     "messages[0].content[0].type"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}, "messages[0].content[0].source"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "content": "x"}]}]}, "messages[0].content[0].tool_use_id"),
    ({"model": "m", "max_tokens": 1, "messages": USER_HI, "system": [{"type": "image"}]}, "system[0].type"),
    ({"model": "m", "max_tokens": 1, "messages": USER_HI, "temperature": "hot"}, "temperature"),
    ({"model": "m", "max_tokens": 1, "messages": USER_HI, "stop_sequences": "END"}, "stop_sequences"),
    ({"model": "m", "max_tokens": 1, "messages": USER_HI, "tools": [
        {"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
    ({"model": "m", "max_tokens": 1, "messages": USER_HI, "tools": [{"name": "t"}]}, "tools[0].input_schema"),
    ({"model": "m", "max_tokens": 1, "messages": USER_HI, "tool_choice": {"type": "tool"}}, "tool_choice.name"),
    ({"model": "m", "max_tokens": 1, "messages": USER_HI, "tool_choice": {"type": "some"}}, "tool_choice.type"),
]


@pytest.mark.parametrize(("request_body", "param"), BAD_REQUESTS)
def test_invalid_requests_name_the_field(request_body, param) -> None:
    with pytest.raises(ProxyError) as info:
        to_openai(request_body)
    assert info.value.status == 400
    assert info.value.param == param
    assert param.split(".")[0].split("[")[0] in info.value.message


# -- whole responses --------------------------------------------------------------------


def sdk(body: bytes | list[bytes], status: int = 200, content_type: str = "text/event-stream") -> anthropic.Anthropic:
    """A real SDK client whose every request is answered with ``body`` (a list: sent in those pieces)."""
    content = iter(body) if isinstance(body, list) else body

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, content=content, headers={"content-type": content_type})

    return anthropic.Anthropic(api_key="sk-test", base_url="http://mmproxy.test", max_retries=0,
                               http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def test_text_completion_to_message() -> None:
    body = completion("gpt-4o", {"content": "Hello there."}, "stop",
                      openai_usage(120, 7, cached=100, cache_creation=15))
    message = orjson.loads(from_openai(body, "claude-sonnet"))
    assert message["id"].startswith("msg_")
    assert message == {
        "id": message["id"], "type": "message", "role": "assistant", "model": "claude-sonnet",
        "content": [{"type": "text", "text": "Hello there."}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 7, "cache_creation_input_tokens": 15,
                  "cache_read_input_tokens": 100},
    }
    got = sdk(from_openai(body, "claude-sonnet"), content_type="application/json").messages.create(
        model="claude-sonnet", max_tokens=10, messages=USER_HI)
    assert got.content[0].type == "text" and got.content[0].text == "Hello there."
    assert (got.usage.input_tokens, got.usage.cache_read_input_tokens) == (5, 100)


def test_parallel_tool_calls_to_tool_use_blocks() -> None:
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "time", "arguments": ""}},
        {"id": "call_c", "type": "function", "function": {"name": "bad", "arguments": '{"city": "Ro'}},
        {"id": "call_d", "type": "function", "function": {"name": "list", "arguments": "[1, 2]"}},
    ]
    body = completion("m", {"content": "Checking.", "tool_calls": calls}, "tool_calls", openai_usage(50, 20))
    message = orjson.loads(from_openai(body, "claude"))
    assert message["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_a", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_b", "name": "time", "input": {}},
        {"type": "tool_use", "id": "call_c", "name": "bad", "input": {"_raw_arguments": '{"city": "Ro'}},
        {"type": "tool_use", "id": "call_d", "name": "list", "input": {"_raw_arguments": "[1, 2]"}},
    ]
    assert message["stop_reason"] == "tool_use"
    got = sdk(from_openai(body, "claude"), content_type="application/json").messages.create(
        model="claude", max_tokens=10, messages=USER_HI)
    assert [b.type for b in got.content] == ["text", "tool_use", "tool_use", "tool_use", "tool_use"]
    assert got.content[1].input == {"city": "Paris"}


@pytest.mark.parametrize(("finish", "stop_reason"), [
    ("stop", "end_turn"),
    ("length", "max_tokens"),
    ("tool_calls", "tool_use"),
    ("function_call", "tool_use"),
    ("content_filter", "refusal"),
    (None, "end_turn"),
    ("something_new", "end_turn"),
])
def test_every_stop_reason(finish, stop_reason) -> None:
    body = completion("m", {"content": "x"}, finish, None)
    assert orjson.loads(from_openai(body, "c"))["stop_reason"] == stop_reason


def test_stop_with_tool_calls_is_tool_use_and_refusal_is_text() -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    body = completion("m", {"content": None, "tool_calls": calls}, "stop", None)
    message = orjson.loads(from_openai(orjson.loads(body), "c"))
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 0}
    refused = orjson.loads(from_openai(completion("m", {"refusal": "I can't help with that."}, "stop", None), "c"))
    assert refused["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert refused["stop_reason"] == "refusal"
    empty = orjson.loads(from_openai(completion("m", {"content": ""}, "stop", None), "c"))
    assert empty["content"] == []


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"choices": []}', b'{"choices": [{"index": 0}]}'])
def test_bad_completion_is_502(body) -> None:
    with pytest.raises(ProxyError) as info:
        from_openai(body, "c")
    assert info.value.status == 502 and info.value.kind == "server"


def test_usage_without_cache_fields() -> None:
    assert anthropic_usage({"prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34}) == {
        "input_tokens": 30, "output_tokens": 4, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    assert anthropic_usage(openai_usage(30, 4, cached=10))["input_tokens"] == 20


# -- streams ----------------------------------------------------------------------------


def events(sse: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in sse.split(b"\n\n"):
        if not block:
            continue
        name_line, data_line = block.split(b"\n")
        assert name_line.startswith(b"event: ") and data_line.startswith(b"data: ")
        name, data = name_line[7:].decode(), orjson.loads(data_line[6:])
        assert data["type"] == name
        out.append((name, data))
    return out


def check_sequence(evs: list[tuple[str, dict[str, Any]]]) -> None:
    """Anthropic's event grammar: start, ping, blocks opened in index order one at a time, delta, stop."""
    names = [n for n, _ in evs]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("message_start") == names.count("message_delta") == names.count("message_stop") == 1
    open_index, next_index, kind = None, 0, None
    for name, data in evs[2:-2]:
        if name == "content_block_start":
            assert open_index is None, "a block opened before the previous one closed"
            assert data["index"] == next_index
            open_index, kind = next_index, data["content_block"]["type"]
            next_index += 1
        elif name == "content_block_delta":
            assert data["index"] == open_index
            assert data["delta"]["type"] == ("text_delta" if kind == "text" else "input_json_delta")
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        else:
            raise AssertionError(f"unexpected {name} inside the message")
    assert open_index is None


def openai_stream(parts: list[tuple[str, Any]], finish: str | None, usage: dict[str, Any] | None) -> bytes:
    cs = ChunkStream("gpt-4o", include_usage=True)
    out = [cs.role()]
    for kind, value in parts:
        if kind == "text":
            out.append(cs.text(value))
        else:
            out.append(cs.tool_call(*value))
    if finish:
        out.append(cs.finish(finish))
    if usage:
        out.append(cs.usage(usage))
    out.append(DONE)
    return b"".join(out)


TEXT_AND_TOOLS = openai_stream([
    ("text", "I'll look "), ("text", "both up. ✓"),
    ("tool", (0, "call_p", "weather", "")), ("tool", (0, None, None, '{"city":')),
    ("tool", (0, None, None, '"Paris"}')),
    ("tool", (1, "call_r", "weather", '{"city":"Rome"}')),
], "tool_calls", openai_usage(300, 42, cached=256))


def translate(raw: bytes, pieces: list[int] | None = None, **kwargs: Any) -> tuple[bytes, OpenAIToAnthropicStream]:
    translator = OpenAIToAnthropicStream("claude-sonnet", id="msg_fixed", **kwargs)
    if pieces is None:
        return translator.feed(raw), translator
    out, at = [], 0
    for size in pieces:
        out.append(translator.feed(raw[at:at + size]))
        at += size
    out.append(translator.feed(raw[at:]))
    return b"".join(out), translator


def random_pieces(total: int, rng: random.Random) -> list[int]:
    pieces = []
    while total > 0:
        size = rng.randint(1, 40)
        pieces.append(size)
        total -= size
    return pieces


def test_stream_text_then_parallel_tool_calls() -> None:
    out, translator = translate(TEXT_AND_TOOLS)
    assert isinstance(translator, StreamTranslator)
    assert translator.complete and not translator.failed
    assert translator.usage == openai_usage(300, 42, cached=256)
    evs = events(out)
    check_sequence(evs)
    starts = [d["content_block"] for n, d in evs if n == "content_block_start"]
    assert starts == [
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "call_p", "name": "weather", "input": {}},
        {"type": "tool_use", "id": "call_r", "name": "weather", "input": {}},
    ]
    delta = evs[-2][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"] == {"input_tokens": 44, "output_tokens": 42, "cache_creation_input_tokens": 0,
                              "cache_read_input_tokens": 256}
    assert evs[0][1]["message"]["id"] == "msg_fixed"
    assert evs[0][1]["message"]["model"] == "claude-sonnet"


def test_stream_any_split_gives_the_same_events() -> None:
    whole, _ = translate(TEXT_AND_TOOLS)
    rng = random.Random(1234)
    for _ in range(30):
        out, translator = translate(TEXT_AND_TOOLS, random_pieces(len(TEXT_AND_TOOLS), rng))
        assert out == whole and translator.complete
    out, translator = translate(TEXT_AND_TOOLS, [1] * len(TEXT_AND_TOOLS))
    assert out == whole and translator.complete


def test_stream_read_by_the_sdk_message_stream() -> None:
    out, _ = translate(TEXT_AND_TOOLS, input_tokens=290)
    pieces = [out[i:i + 7] for i in range(0, len(out), 7)]  # the SDK reassembles events across reads
    with sdk(pieces).messages.stream(model="claude-sonnet", max_tokens=100, messages=USER_HI) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == "I'll look both up. ✓"
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[1].input == {"city": "Paris"}
    assert message.content[2].input == {"city": "Rome"}
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens, message.usage.cache_read_input_tokens) == (
        44, 42, 256)


def test_stream_raw_events_through_sdk_create() -> None:
    raw = openai_stream([("text", "Hi")], "length", openai_usage(9, 1))
    out, _ = translate(raw)
    seen = [e.type for e in sdk(out).messages.create(model="c", max_tokens=1, messages=USER_HI, stream=True)]
    assert seen == ["message_start", "content_block_start", "content_block_delta", "content_block_stop",
                    "message_delta", "message_stop"]  # the SDK drops ping


@pytest.mark.parametrize(("finish", "stop_reason"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal"),
    (None, "end_turn"),
])
def test_stream_stop_reasons(finish, stop_reason) -> None:
    out, translator = translate(openai_stream([("text", "x")], finish, openai_usage(3, 1)))
    assert translator.complete
    assert events(out)[-2][1]["delta"]["stop_reason"] == stop_reason


def test_stream_stop_finish_after_tool_calls_is_tool_use() -> None:
    out, _ = translate(openai_stream([("tool", (0, "c1", "f", "{}"))], "stop", None))
    evs = events(out)
    check_sequence(evs)
    assert evs[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_stream_text_after_tool_opens_a_new_block() -> None:
    out, _ = translate(openai_stream([("text", "a"), ("tool", (0, "c1", "f", "{}")), ("text", "b")], "stop", None))
    evs = events(out)
    check_sequence(evs)
    assert [d["content_block"]["type"] for n, d in evs if n == "content_block_start"] == ["text", "tool_use", "text"]


def test_stream_without_usage_keeps_the_start_estimate() -> None:
    raw = openai_stream([("text", "ok")], "stop", None)
    out, translator = translate(raw, input_tokens=17)
    assert translator.usage is None
    evs = events(out)
    assert evs[0][1]["message"]["usage"]["input_tokens"] == 17
    assert evs[-2][1]["usage"] == {"output_tokens": 0}
    with sdk(out).messages.stream(model="c", max_tokens=5, messages=USER_HI) as stream:
        assert stream.get_final_message().usage.input_tokens == 17


def test_stream_tool_calls_reusing_index_zero_with_new_ids() -> None:
    raw = openai_stream([("tool", (0, "c1", "a", '{"x":1}')), ("tool", (0, "c2", "b", '{"y":2}'))], "tool_calls", None)
    out, _ = translate(raw)
    evs = events(out)
    check_sequence(evs)
    with sdk(out).messages.stream(model="c", max_tokens=5, messages=USER_HI) as stream:
        message = stream.get_final_message()
    assert [(b.id, b.name, b.input) for b in message.content] == [("c1", "a", {"x": 1}), ("c2", "b", {"y": 2})]


def test_stream_tolerates_crlf_comments_and_no_space_after_data() -> None:
    chunk = orjson.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                          "choices": [{"index": 0, "delta": {"content": "hey"}, "finish_reason": None}]})
    finish = orjson.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                           "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    raw = b": keep-alive\r\n\r\ndata:" + chunk + b"\r\n\r\ndata: " + finish + b"\r\n\r\ndata: [DONE]\r\n\r\n"
    whole, translator = translate(raw)
    assert translator.complete
    evs = events(whole)
    check_sequence(evs)
    assert [d["delta"]["text"] for n, d in evs if n == "content_block_delta"] == ["hey"]
    split, _ = translate(raw, [1] * len(raw))
    assert split == whole


def test_stream_done_alone_is_an_empty_message() -> None:
    out, translator = translate(DONE)
    assert translator.complete
    assert [n for n, _ in events(out)] == ["message_start", "ping", "message_delta", "message_stop"]


def test_stream_error_event() -> None:
    cs = ChunkStream("m", True)
    err = b'data: {"error": {"message": "boom upstream", "type": "server_error", "code": null}}\n\n'
    out, translator = translate(cs.role() + cs.text("partial") + err + cs.finish("stop") + DONE)
    assert not translator.complete and translator.failed
    evs = events(out)
    assert evs[-1] == ("error", {"type": "error", "error": {"type": "api_error", "message": "boom upstream"}})
    assert "message_stop" not in [n for n, _ in evs]
    assert translator.feed(DONE) == b""  # nothing after a failure
    with pytest.raises(anthropic.APIStatusError) as info:
        with sdk(out).messages.stream(model="c", max_tokens=5, messages=USER_HI) as stream:
            stream.get_final_message()
    assert "boom upstream" in str(info.value)


def test_stream_error_kinds() -> None:
    rate = b'data: {"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"}}\n\n'
    out, _ = translate(rate)
    assert events(out) == [("error", {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})]
    out, translator = translate(b"data: {not json\n\n")
    assert translator.failed and events(out)[-1][1]["error"]["type"] == "api_error"
    out, translator = translate(b'data: {"choices": [{"delta": "oops"}]}\n\n')
    assert translator.failed and events(out)[-1][0] == "error"


def test_cut_stream_is_not_complete() -> None:
    cut = TEXT_AND_TOOLS[: TEXT_AND_TOOLS.index(b'"finish_reason":"tool_calls"') - 10]
    out, translator = translate(cut)
    assert not translator.complete and not translator.failed
    names = [n for n, _ in events(out)]
    assert "message_stop" not in names and "message_delta" not in names
    # Finished but no [DONE]: still not complete.
    out, translator = translate(TEXT_AND_TOOLS[: -len(DONE)])
    assert not translator.complete
    assert "message_stop" not in [n for n, _ in events(out)]


def test_nothing_after_completion() -> None:
    translator = OpenAIToAnthropicStream("c")
    translator.feed(openai_stream([("text", "x")], "stop", None))
    assert translator.complete
    assert translator.feed(openai_stream([("text", "again")], "stop", None)) == b""


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(("exc", "error_type"), [
    (ProxyError(400, "bad field", param="x"), "invalid_request_error"),
    (ProxyError(400, "no such model", code="model_not_found"), "not_found_error"),
    (ProxyError(401, "invalid API key", type="authentication_error"), "authentication_error"),
    (ProxyError(403, "nope"), "permission_error"),
    (ProxyError(404, "no route"), "not_found_error"),
    (ProxyError(413, "too big", code="request_too_large"), "request_too_large"),
    (ProxyError(422, "unprocessable"), "invalid_request_error"),
    (ProxyError(429, "slow", kind="rate_limit"), "rate_limit_error"),
    (ProxyError(503, "busy", kind="overloaded"), "overloaded_error"),
    (ProxyError(400, "too long", kind="context"), "invalid_request_error"),
    (ProxyError(404, "gone", kind="not_found"), "not_found_error"),
    (ProxyError(502, "upstream broke", kind="server"), "api_error"),
    (ProxyError(504, "slow upstream", kind="timeout"), "timeout_error"),
    (ProxyError(500, "internal gateway error", type="server_error"), "api_error"),
])
def test_anthropic_error_types(exc, error_type) -> None:
    assert orjson.loads(anthropic_error(exc)) == {"type": "error", "error": {"type": error_type,
                                                                            "message": exc.message}}


def test_anthropic_error_read_by_sdk() -> None:
    body = anthropic_error(ProxyError(429, "slow down", kind="rate_limit"), request_id="req_1")
    assert orjson.loads(body)["request_id"] == "req_1"
    with pytest.raises(anthropic.RateLimitError) as info:
        sdk(body, status=429, content_type="application/json").messages.create(
            model="c", max_tokens=5, messages=USER_HI)
    assert info.value.body["error"]["message"] == "slow down"


def test_stream_error_helper() -> None:
    assert events(stream_error("cut", "overloaded_error")) == [
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "cut"}})]
