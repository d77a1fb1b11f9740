"""Property-based tests of request validation and every translator, in process (no I/O to mock: they are pure).

Two kinds of property:

* Hostile bodies — generated *near* valid shapes (right keys with wrong types or values, nested junk, huge, empty
  and unicode strings, deep nesting): every step a client's body goes through before it leaves the gateway
  (``parse_json_object``, the client API's ``parse``, the token count, each provider's ``check_params`` and
  request, the client-shape answer and stream) returns, or raises a 4xx ``ProxyError`` naming the field. Any
  other exception would be a 500. Upstream bodies and stream events are junk from outside too: a provider's
  answer translation returns or raises a 502, and a stream translator never raises (it runs in the socket
  callback).
* Valid requests — what must survive translation does: message order, roles and text, tool calls, max tokens.

Derandomized and small (``max_examples``), so CI replays the same cases in a few seconds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmproxy import tokens
from mmproxy.config import parse_config
from mmproxy.errors import ProxyError
from mmproxy.inbound import anthropic as anthropic_inbound
from mmproxy.inbound import responses as responses_inbound
from mmproxy.pipeline.apis import ClientAPI
from mmproxy.pipeline.apis.chat import ChatCompletions
from mmproxy.pipeline.apis.embeddings import Embeddings
from mmproxy.pipeline.apis.messages import Messages
from mmproxy.pipeline.apis.responses import Responses
from mmproxy.providers import adapter
from mmproxy.providers.anthropic.adapter import AnthropicProvider
from mmproxy.providers.base import Provider
from mmproxy.validation import MAX_DEPTH, parse_json_object

FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
FEW = settings(FAST, max_examples=25)
HOSTILE = settings(FAST, max_examples=200)

# -- strategies: JSON junk, valid requests, and valid requests with a few parts broken -----------------------------
TEXT = (st.text(max_size=12) | st.sampled_from(["", " ", "\u0000", "\u202e🙂\ufeff", "null", "{}", "[]"])
        | st.integers(100, 3000).map(lambda n: "x" * n))
HUGE = st.integers(10**4, 10**5).map(lambda n: "\u00e9" * n)
FIELDS = ["model", "messages", "role", "content", "type", "text", "tools", "tool_calls", "function", "name",
          "arguments", "input", "id", "tool_use_id", "call_id", "source", "image_url", "url", "max_tokens",
          "stream", "metadata", "system", "tool_choice", "output", "format", "schema", "parameters", "stop"]
LEAF = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
        | TEXT)
JUNK = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5), inner, max_size=3),
                    max_leaves=10)
# A value of another JSON type than the one expected, most often a plain one (a guard that checks the type
# catches it all, one that reads the value without checking does not).
WRONG = (st.sampled_from([None, 0, -1, 5, 2**64 - 1, 0.5, True, "", "x", [], [5], ["x"], {}, {"type": 5}]) | JUNK
         | HUGE)
MODEL = st.just("m")


def _paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*at, index))


@st.composite
def near(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid body with one to four nodes replaced by junk, deleted, or given a junk sibling."""
    body = copy.deepcopy(draw(valid))

    def wrong() -> Any:
        return copy.deepcopy(draw(WRONG))  # sampled values are shared objects: never change one in place

    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(list(_paths(body))))
        parent: Any = body
        for step in path[:-1]:
            parent = parent[step]
        target = parent[path[-1]] if path else body
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "add" or not path:
            if isinstance(target, dict):
                target[draw(st.sampled_from(FIELDS))] = wrong()
            elif isinstance(target, list):
                target.append(wrong())
        elif action == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = wrong()
    return body


def _nested(depth: int) -> bytes:
    return b'{"model":"m","metadata":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"


# OpenAI chat requests
TOOL_CALL = st.builds(lambda i, name, args: {"id": f"call_{i}", "type": "function",
                                             "function": {"name": name, "arguments": orjson.dumps(args).decode()}},
                      st.integers(0, 99), st.sampled_from(["get_weather", "search"]),
                      st.dictionaries(st.sampled_from(["city", "q"]), TEXT, max_size=2))
CHAT_PART = (st.builds(lambda t: {"type": "text", "text": t}, TEXT)
             | st.sampled_from([{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}},
                                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]))
CHAT_MESSAGE = st.one_of(
    st.builds(lambda role, content: {"role": role, "content": content}, st.sampled_from(["system", "user"]),
              TEXT | st.lists(CHAT_PART, min_size=1, max_size=3)),
    st.builds(lambda content, calls: {"role": "assistant", "content": content, **({"tool_calls": calls} if calls
                                                                                   else {})},
              TEXT | st.none(), st.lists(TOOL_CALL, max_size=2)),
    st.builds(lambda i, content: {"role": "tool", "tool_call_id": f"call_{i}", "content": content},
              st.integers(0, 99), TEXT),
)
FUNCTION_TOOL = st.just({"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}})
CHAT = st.fixed_dictionaries(
    {"model": MODEL, "messages": st.lists(CHAT_MESSAGE, min_size=1, max_size=5)},
    optional={"max_tokens": st.integers(1, 10**6), "temperature": st.floats(0, 2), "stream": st.booleans(),
              "stop": TEXT | st.lists(TEXT, max_size=2), "tools": st.lists(FUNCTION_TOOL, min_size=1, max_size=1),
              "tool_choice": st.sampled_from(["auto", "none", "required"]), "user": TEXT,
              "response_format": st.sampled_from([{"type": "json_object"}, {"type": "text"}]),
              "stream_options": st.just({"include_usage": True}), "n": st.just(1), "seed": st.integers(0, 10)})




@st.composite
def conversation(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Chat turns every provider takes: an optional system prompt, then rounds of a user turn and an answer that
    is text or tool calls followed by their results."""
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(TEXT)})
    for round_ in range(draw(st.integers(1, 3))):
        words = TEXT.filter(bool)  # a conversation of nothing but empty turns is refused by Gemini
        messages.append({"role": "user", "content": draw(words | st.lists(words.map(
            lambda t: {"type": "text", "text": t}), min_size=1, max_size=2))})
        if draw(st.booleans()):
            messages.append({"role": "assistant", "content": draw(TEXT)})
            continue
        calls = [{**call, "id": f"call_{round_}_{k}"} for k, call in enumerate(draw(st.lists(TOOL_CALL, min_size=1,
                                                                                             max_size=2)))]
        messages.append({"role": "assistant", "content": None, "tool_calls": calls})
        # Prose results: Gemini sends a result that is JSON text as the JSON value, by design.
        messages += [{"role": "tool", "tool_call_id": c["id"], "content": draw(TEXT.filter(_prose))} for c in calls]
    return messages


def _prose(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return True
    return False


PORTABLE_CHAT = st.fixed_dictionaries({"model": MODEL, "messages": conversation()}, optional={
    "max_tokens": st.integers(1, 10**6), "temperature": st.floats(0, 1), "stream": st.booleans(),
    "stop": st.lists(TEXT.filter(bool), min_size=1, max_size=2), "user": TEXT})

# Anthropic Messages requests
A_TEXT = st.builds(lambda t: {"type": "text", "text": t}, TEXT)
A_TOOL_USE = st.builds(lambda i, name, args: {"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": args},
                       st.integers(0, 99), st.sampled_from(["get_weather", "search"]),
                       st.dictionaries(st.sampled_from(["city", "q"]), TEXT, max_size=2))
A_RESULT = st.builds(lambda i, text: {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": text},
                     st.integers(0, 99), TEXT)
A_USER = st.builds(lambda content: {"role": "user", "content": content},
                   TEXT | st.lists(A_TEXT, min_size=1, max_size=3) | st.lists(A_RESULT, min_size=1, max_size=2))
A_ASSISTANT = st.builds(lambda content: {"role": "assistant", "content": content},
                        TEXT | st.lists(A_TEXT | A_TOOL_USE, min_size=1, max_size=3))
A_TOOL = st.just({"name": "get_weather",
                  "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}})
MESSAGES = st.fixed_dictionaries(
    {"model": MODEL, "max_tokens": st.integers(1, 10**6), "messages": st.lists(A_USER | A_ASSISTANT, min_size=1,
                                                                                  max_size=5)},
    optional={"system": TEXT | st.lists(A_TEXT, min_size=1, max_size=2), "temperature": st.floats(0, 1),
              "stop_sequences": st.lists(TEXT, max_size=2), "stream": st.booleans(),
              "tools": st.lists(A_TOOL, min_size=1, max_size=1),
              "tool_choice": st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "none"},
                                              {"type": "tool", "name": "get_weather"}]),
              "metadata": st.builds(lambda u: {"user_id": u}, TEXT)})

# OpenAI Responses requests
R_PART = st.builds(lambda kind, t: {"type": kind, "text": t}, st.sampled_from(["input_text", "output_text"]), TEXT)
R_ITEM = st.one_of(
    st.builds(lambda role, content: {"type": "message", "role": role, "content": content},
              st.sampled_from(["user", "assistant", "system", "developer"]),
              TEXT | st.lists(R_PART, min_size=1, max_size=2)),
    st.builds(lambda i, args: {"type": "function_call", "call_id": f"call_{i}", "name": "get_weather",
                               "arguments": orjson.dumps(args).decode()},
              st.integers(0, 99), st.dictionaries(st.just("city"), TEXT, max_size=1)),
    st.builds(lambda i, out: {"type": "function_call_output", "call_id": f"call_{i}", "output": out},
              st.integers(0, 99), TEXT),
)
RESPONSES = st.fixed_dictionaries(
    {"model": MODEL, "input": TEXT | st.lists(R_ITEM, min_size=1, max_size=5)},
    optional={"instructions": TEXT, "max_output_tokens": st.integers(1, 10**6), "stream": st.booleans(),
              "tools": st.just([{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]),
              "tool_choice": st.sampled_from(["auto", "none", "required", {"type": "function", "name": "x"}]),
              "text": st.sampled_from([{"format": {"type": "json_object"}},
                                       {"format": {"type": "json_schema", "name": "o", "schema": {}}}]),
              "metadata": st.dictionaries(st.text(max_size=5), TEXT, max_size=2), "temperature": st.floats(0, 1)})
EMBEDDINGS = st.fixed_dictionaries({"model": MODEL, "input": TEXT.filter(bool) | st.lists(
    TEXT | st.integers(0, 10**5), min_size=1, max_size=3)})


# -- the providers, one deployment of each adapter ----------------------------------------------------------------
def _providers() -> dict[str, Provider]:
    entries = {
        "openai": {"model": "openai/gpt-4o", "api_base": "http://127.0.0.1:9/v1", "api_key": "sk-x"},
        "azure": {"model": "azure/gpt-4o", "api_base": "http://127.0.0.1:9", "api_key": "k", "api_version": "2024"},
        "anthropic": {"model": "anthropic/claude-sonnet-4-5", "api_base": "http://127.0.0.1:9", "api_key": "k"},
        "gemini": {"model": "gemini/gemini-2.0-flash", "api_base": "http://127.0.0.1:9", "api_key": "k"},
        "ollama_chat": {"model": "ollama_chat/llama3", "api_base": "http://127.0.0.1:9"},
        "ollama": {"model": "ollama/llama3", "api_base": "http://127.0.0.1:9"},
    }
    config = parse_config({"model_list": [{"model_name": name, "litellm_params": params}
                                          for name, params in entries.items()]})
    return {d.model_name: adapter(d) for d in config.deployments}


PROVIDERS = _providers()
CHAT_COMPLETION = orjson.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "hi", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
     "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
CHAT_STREAM = (b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"hi"}}]}\n\n'
               b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","function":'
               b'{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}\n\n'
               b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\ndata: [DONE]\n\n')


def _refused(exc: ProxyError) -> None:
    """A refusal the client can act on: a 4xx that names the field."""
    assert 400 <= exc.status < 500, (exc.status, exc.message)
    assert isinstance(exc.param, str) and exc.param, exc.message


def _through_gateway(api: ClientAPI, body: dict[str, Any]) -> None:
    """What the gateway does with a client's body short of sending it: parse, count, then per provider the
    parameter check, the upstream request and stream translator, and the client-shape answer and stream."""
    raw = orjson.dumps(body)
    try:
        inbound = api.parse(parse_json_object(raw), raw)
    except ProxyError as exc:
        _refused(exc)
        return
    if not api.chat:
        for provider in PROVIDERS.values():
            try:
                provider.embeddings_request(dict(inbound.body))
            except ProxyError as exc:
                _refused(exc)
        return
    assert inbound.chat is not None
    tokens.count_chat(inbound.chat_bytes(), "gpt-4o")
    for provider in PROVIDERS.values():
        payload = dict(inbound.chat)
        try:
            provider.check_params(payload)
            provider.chat_stream(payload)
            provider.chat_request(payload)
        except ProxyError as exc:
            _refused(exc)
    if isinstance(api, Messages):
        PROVIDERS["anthropic"].messages_request(dict(body))
    orjson.loads(api.from_chat(inbound, CHAT_COMPLETION))
    stream = api.chat_stream(inbound)
    if stream is not None:
        assert stream.feed(CHAT_STREAM)
        assert stream.complete


@pytest.mark.parametrize(("api", "valid"), [
    (ChatCompletions(), CHAT), (Messages(), MESSAGES), (Responses(), RESPONSES), (Embeddings(), EMBEDDINGS),
], ids=["chat", "messages", "responses", "embeddings"])
def test_hostile_bodies_are_served_or_refused_naming_the_field(api: ClientAPI, valid: Any) -> None:
    @HOSTILE
    @given(body=near(valid))
    def check(body: dict[str, Any]) -> None:
        _through_gateway(api, body)

    check()


@pytest.mark.parametrize(("api", "valid"), [
    (ChatCompletions(), CHAT), (Messages(), MESSAGES), (Responses(), RESPONSES), (Embeddings(), EMBEDDINGS),
], ids=["chat", "messages", "responses", "embeddings"])
def test_valid_bodies_are_served(api: ClientAPI, valid: Any) -> None:
    @FEW
    @given(body=valid)
    def check(body: dict[str, Any]) -> None:
        raw = orjson.dumps(body)
        api.parse(parse_json_object(raw), raw)  # no refusal
        _through_gateway(api, body)

    check()


@FAST
@given(raw=st.one_of(
    st.binary(max_size=64),
    JUNK.map(orjson.dumps),
    st.integers(1, 2 * MAX_DEPTH).map(_nested),
    st.integers(1, 600).map(lambda n: b"[" * n + b"]" * n),
    st.integers(250, 1100).map(_nested),
))
def test_parse_json_object_returns_an_object_or_a_400(raw: bytes) -> None:
    try:
        body = parse_json_object(raw)
    except ProxyError as exc:
        assert exc.status == 400 and exc.code in ("invalid_request", "invalid_json"), exc.message
        return
    assert isinstance(body, dict)
    orjson.dumps(body)  # what the gateway reads it can write again (ledger, translations, echoes)


# -- upstream answers and streams ------------------------------------------------------------------------------
ANSWER_SHAPES = st.sampled_from([
    {"choices": [{"message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}]},
    {"type": "message", "content": [{"type": "text", "text": "x"}], "usage": {"input_tokens": 1}},
    {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}], "usageMetadata": {}},
    {"message": {"role": "assistant", "content": "x"}, "done": True, "prompt_eval_count": 1},
    {"response": "x", "done": True},
    {"data": [{"embedding": [0.1], "index": 0}], "embedding": {"values": [0.1]}, "embeddings": [[0.1]]},
])
EVENT_LINE = st.one_of(
    near(ANSWER_SHAPES).map(lambda chunk: b"data: " + orjson.dumps(chunk)),
    near(ANSWER_SHAPES).map(orjson.dumps),
    st.sampled_from([b"data: [DONE]", b"event: error", b": ping", b"data: {", b"data:", b"\r"]),
    st.binary(max_size=16),
)


@FAST
@given(body=near(ANSWER_SHAPES).map(orjson.dumps) | st.binary(max_size=32))
def test_upstream_answers_translate_or_are_a_502(body: bytes) -> None:
    for name, provider in PROVIDERS.items():
        translations: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [(provider.chat_response, (body,))]
        if name == "anthropic":
            translations.append((provider.messages_response, (body,)))
        else:
            translations.append((provider.embeddings_response, (body, {"model": "m", "input": "x"})))
        for translate, args in translations:
            try:
                translate(*args)
            except ProxyError as exc:
                assert exc.status == 502, (name, exc.status, exc.message)


@FAST
@given(events=st.lists(EVENT_LINE, max_size=6), pieces=st.integers(1, 8))
def test_stream_translators_never_raise(events: list[bytes], pieces: int) -> None:
    data = b"\n\n".join(events) + b"\n\n"
    split = -(-len(data) // pieces)  # the events arrive in this many reads, cut anywhere
    translators = [p.chat_stream({"stream": True, "stream_options": {"include_usage": True}})
                   for p in PROVIDERS.values()]
    translators += [PROVIDERS["anthropic"].messages_stream(), anthropic_inbound.OpenAIToAnthropicStream("m"),
                    responses_inbound.ChatToResponsesStream({"model": "m"})]
    for translator in translators:
        if translator is None:
            continue
        for start in range(0, len(data), split):
            translator.feed(data[start:start + split])


# -- what survives translation ------------------------------------------------------------------------------------
def _anthropic_items(messages: list[dict[str, Any]], system: Any) -> list[tuple[Any, ...]]:
    """A Messages conversation as what must survive: system text, then per block in order its role and text,
    tool call (id, name, input) or tool result (id, text)."""
    items: list[tuple[Any, ...]] = []
    text = system if isinstance(system, str) else "\n".join(b["text"] for b in system or ())
    if text:
        items.append(("system", text))
    for message in messages:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for block in blocks:
            if block["type"] == "text":
                items.append((message["role"], block["text"]))
            elif block["type"] == "tool_use":
                items.append(("tool_use", block["id"], block["name"], block["input"]))
            else:
                items.append(("tool_result", block["tool_use_id"], block["content"]))
    return _joined(items)


def _joined(items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Adjacent texts of one role as one: a translation may merge turns or blocks (assistant text joins with "",
    tool-call text moves before the calls), the words and their order may not change."""
    out: list[tuple[Any, ...]] = []
    for item in items:
        if item[0] in ("user", "assistant") and out and out[-1][0] == item[0]:
            out[-1] = (item[0], out[-1][1] + item[1])
        else:
            out.append(item)
    return [item for item in out if item[0] not in ("user", "assistant") or item[1]]


def _assistant_first(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Assistant turns with their text before their tool calls, as OpenAI's message shape orders them."""
    out = []
    for message in messages:
        content = message["content"]
        if message["role"] == "assistant" and isinstance(content, list):
            content = [b for b in content if b["type"] == "text"] + [b for b in content if b["type"] == "tool_use"]
        out.append({**message, "content": content})
    return out


@FAST
@given(request=MESSAGES)
def test_messages_through_chat_and_back_keep_the_conversation(request: dict[str, Any]) -> None:
    chat = anthropic_inbound.to_openai(request)
    assert chat["max_tokens"] == request["max_tokens"]
    provider = PROVIDERS["anthropic"]
    assert isinstance(provider, AnthropicProvider)
    back = provider.chat_body(chat)
    assert back["max_tokens"] == request["max_tokens"]
    expected = _anthropic_items(_assistant_first(request["messages"]), request.get("system"))
    assert _anthropic_items(back["messages"], back.get("system")) == expected
    if request.get("tools"):
        assert [t["name"] for t in back["tools"]] == [t["name"] for t in request["tools"]]


def _chat_items(messages: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    items: list[tuple[Any, ...]] = []
    for message in messages:
        content = message.get("content")
        text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content or ())
        role = message["role"]
        if role == "tool":
            items.append(("tool", message["tool_call_id"], text))
            continue
        items.append(("system" if role == "developer" else role, text))
        for call in message.get("tool_calls") or ():
            items.append(("call", call["id"], call["function"]["name"], orjson.loads(call["function"]["arguments"])))
    return [item for item in items if item[0] in ("tool", "call") or item[1]]


@FAST
@given(request=RESPONSES)
def test_responses_to_chat_keeps_the_conversation(request: dict[str, Any]) -> None:
    chat = responses_inbound.to_chat(request)
    assert chat.get("max_tokens") == request.get("max_output_tokens")
    items = request["input"]
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    expected: list[tuple[Any, ...]] = []
    if "instructions" in request:
        expected.append(("system", request["instructions"]))
    for item in items:
        if item["type"] == "message":
            content = item["content"]
            text = content if isinstance(content, str) else "".join(p["text"] for p in content)
            expected.append(("system" if item["role"] == "developer" else item["role"], text))
        elif item["type"] == "function_call":
            expected.append(("call", item["call_id"], item["name"], orjson.loads(item["arguments"])))
        else:
            expected.append(("tool", item["call_id"], item["output"]))
    assert _chat_items(chat["messages"]) == [item for item in expected if item[0] in ("tool", "call") or item[1]]


@FAST
@given(request=PORTABLE_CHAT)
def test_every_provider_request_keeps_texts_tool_calls_and_max_tokens(request: dict[str, Any]) -> None:
    texts = {t for m in request["messages"] for t in _texts(m.get("content")) if t}
    names = {c["function"]["name"] for m in request["messages"] for c in m.get("tool_calls") or ()}
    for name, provider in PROVIDERS.items():
        payload = dict(request)
        provider.check_params(payload)
        body = orjson.loads(provider.chat_request(payload).partition(b"\r\n\r\n")[2])
        strings = [leaf for leaf in _leaves(body) if isinstance(leaf, str)]
        # Within some string: Ollama's generate endpoint flattens the conversation, tool calls too, into a prompt.
        assert all(any(text in s for s in strings) for text in texts | names), name
        if "max_tokens" in request:
            assert request["max_tokens"] in [n for n in _leaves(body) if type(n) is int], name


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [p["text"] for p in content or () if p.get("type") == "text"]


def _leaves(value: Any) -> Iterator[Any]:
    """Every value in a JSON document that is not an object or a list."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


@FAST
@given(text=TEXT, calls=st.lists(TOOL_CALL, max_size=2, unique_by=lambda c: c["id"]))
def test_answers_keep_text_and_tool_calls_across_shapes(text: str, calls: list[dict[str, Any]]) -> None:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = calls
    completion = orjson.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                               "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    anthropic = anthropic_inbound.from_openai(completion, "m")
    provider = PROVIDERS["anthropic"]
    back = orjson.loads(provider.chat_response(anthropic)[0])["choices"][0]["message"]
    assert (back["content"] or "") == text
    assert [(c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in
            back.get("tool_calls") or ()] == [(c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"]))
                                              for c in calls]
    response = orjson.loads(responses_inbound.from_chat(completion, {"model": "m"}))
    said = [p["text"] for item in response["output"] if item["type"] == "message" for p in item["content"]]
    assert "".join(said) == text
    assert [(i["call_id"], i["name"], i["arguments"]) for i in response["output"] if i["type"] == "function_call"] \
        == [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls]
