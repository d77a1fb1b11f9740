"""Anthropic Messages API (``POST /v1/messages``) served by any configured model.

``to_openai`` turns a Messages request into the OpenAI chat payload every provider
adapter takes; ``from_openai`` and ``OpenAIToAnthropicStream`` turn the OpenAI answer
back into Anthropic's ``message`` object and event stream; ``anthropic_error`` gives
errors Anthropic's shape. Pure translation, no I/O.

Where the two formats do not line up:

* Usage. OpenAI reports usage at the end of a stream, Anthropic in ``message_start``.
  ``message_start`` carries the caller's estimate of the input tokens (0 without one);
  ``message_delta.usage`` carries the final ``input_tokens``, ``output_tokens``,
  ``cache_read_input_tokens`` and ``cache_creation_input_tokens``, which Anthropic defines
  as cumulative totals that replace the ``message_start`` figures (the SDK does exactly that).
* ``input_tokens`` excludes cache reads and writes (Anthropic's meaning). OpenAI's
  ``prompt_tokens`` includes both, as LiteLLM counts them (cache writes only appear
  through the ``cache_creation_input_tokens`` extension, see ``chunks.openai_usage``).
* A ``stop`` finish is ``end_turn``: OpenAI does not say whether a stop sequence ended it.
  A ``stop`` finish that produced tool calls is ``tool_use`` (some servers report it so).
* Tool-call arguments that are not a JSON object become ``{"_raw_arguments": "<text>"}``
  in a whole answer, so nothing is silently lost and the tool's schema check fails
  visibly; a stream forwards the argument text verbatim as ``partial_json``.
* ``thinking``/``redacted_thinking`` blocks in assistant history are dropped: OpenAI
  messages cannot carry them. The ``thinking`` request option passes through.
* Images inside a ``tool_result`` move to the user message after the tool messages
  (OpenAI tool messages carry text only); an errored result's text starts ``Error: ``.
* Text blocks join with ``"\\n"`` in ``system`` and ``tool_result``, with ``""`` in an
  assistant turn (they are pieces of one reply); several user blocks stay content parts.
* ``cache_control`` is dropped unless ``keep_cache_control``: OpenAI-wire upstreams may
  reject the unknown field, while an upstream adapter that honours it on content parts and
  tools (LiteLLM's convention for Anthropic) keeps prompt caching working with it.
"""

from __future__ import annotations

import os
from typing import Any, TypeGuard

import orjson

from mmproxy.errors import ProxyError, bad_request
from mmproxy.inbound.chat_stream import ChatChunkTranslator

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# Request fields translated (or deliberately dropped) here; all others pass through.
_HANDLED = frozenset({
    "model", "messages", "system", "max_tokens", "temperature", "top_p", "stop_sequences", "stream",
    "tools", "tool_choice", "metadata", "output_config", "service_tier", "cache_control", "stream_options",
})
_EFFORT = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}


def message_id() -> str:
    return f"msg_{os.urandom(12).hex()}"


def _tool_use_id() -> str:
    return f"toolu_{os.urandom(12).hex()}"


# -- request: Anthropic -> OpenAI ---------------------------------------------------------


def to_openai(request: dict[str, Any], *, keep_cache_control: bool = False) -> dict[str, Any]:
    """An OpenAI chat payload for an Anthropic Messages request; ``ProxyError`` 400 naming a bad field."""
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string", param="model")
    max_tokens = request.get("max_tokens")
    if not _is_int(max_tokens) or max_tokens < 1:
        raise bad_request("'max_tokens' is required and must be a positive integer", param="max_tokens")
    raw_messages = request.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise bad_request("'messages' is required and must be a non-empty list", param="messages")

    convert = _Converter(keep_cache_control)
    messages: list[dict[str, Any]] = []
    system = request.get("system")
    if system is not None:
        convert.system(system, messages)
    for i, message in enumerate(raw_messages):
        convert.message(message, f"messages[{i}]", messages)

    payload: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    for name in ("temperature", "top_p"):
        value = request.get(name)
        if value is not None:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise bad_request(f"'{name}' must be a number", param=name)
            payload[name] = value
    stops = request.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise bad_request("'stop_sequences' must be a list of strings", param="stop_sequences")
        if stops:
            payload["stop"] = stops
    stream = request.get("stream")
    if stream is not None:
        if not isinstance(stream, bool):
            raise bad_request("'stream' must be a boolean", param="stream")
        payload["stream"] = stream
        if stream:
            # The Anthropic events end with usage, so the OpenAI stream must carry it.
            payload["stream_options"] = {"include_usage": True}
    tools = request.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise bad_request("'tools' must be a list", param="tools")
        if tools:
            payload["tools"] = [convert.tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    choice = request.get("tool_choice")
    if choice is not None:
        openai_choice, parallel = _tool_choice(choice)
        if tools:  # OpenAI rejects tool_choice and parallel_tool_calls without tools
            payload["tool_choice"] = openai_choice
            if not parallel:
                payload["parallel_tool_calls"] = False
    metadata = request.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise bad_request("'metadata' must be an object", param="metadata")
        user = metadata.get("user_id")
        if isinstance(user, str) and user:
            payload["user"] = user
    output = request.get("output_config")
    if output is not None:
        _output_config(output, payload)
    if keep_cache_control and "cache_control" in request:
        payload["cache_control"] = request["cache_control"]
    # ``service_tier`` is dropped: Anthropic's values (auto, standard_only) mean nothing to OpenAI.
    for key, value in request.items():
        if key not in _HANDLED:
            payload[key] = value  # top_k, thinking, ...: the provider adapter decides
    return payload


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _tool_choice(choice: Any) -> tuple[Any, bool]:
    """OpenAI ``tool_choice`` and whether parallel tool calls stay allowed."""
    if not isinstance(choice, dict):
        raise bad_request("'tool_choice' must be an object with a 'type'", param="tool_choice")
    kind = choice.get("type")
    value: Any
    if kind == "auto":
        value = "auto"
    elif kind == "any":
        value = "required"
    elif kind == "none":
        value = "none"
    elif kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request("'tool_choice.name' is required when tool_choice.type is 'tool'",
                              param="tool_choice.name")
        value = {"type": "function", "function": {"name": name}}
    else:
        raise bad_request("'tool_choice.type' must be one of auto, any, tool, none", param="tool_choice.type")
    return value, choice.get("disable_parallel_tool_use") is not True


def _output_config(output: Any, payload: dict[str, Any]) -> None:
    if not isinstance(output, dict):
        raise bad_request("'output_config' must be an object", param="output_config")
    effort = output.get("effort")
    if effort is not None:
        if effort not in _EFFORT:
            raise bad_request("'output_config.effort' must be one of low, medium, high, xhigh, max",
                              param="output_config.effort")
        payload["reasoning_effort"] = _EFFORT[effort]
    fmt = output.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
            raise bad_request("'output_config.format' must be {\"type\": \"json_schema\", \"schema\": {...}}",
                              param="output_config.format")
        payload["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}


class _Converter:
    """Message and tool conversion; carries the one option that shapes content parts."""

    __slots__ = ("keep_cache",)

    def __init__(self, keep_cache_control: bool) -> None:
        self.keep_cache = keep_cache_control

    def _cache(self, block: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
        if self.keep_cache:
            cache = block.get("cache_control")
            if cache is not None:
                part["cache_control"] = cache
        return part

    def _collapse(self, parts: list[dict[str, Any]], joiner: str | None) -> str | list[dict[str, Any]]:
        """A plain string when the parts are all text without cache marks and ``joiner`` allows joining."""
        if all(p["type"] == "text" and "cache_control" not in p for p in parts):
            if len(parts) == 1:
                return str(parts[0]["text"])
            if joiner is not None:
                return joiner.join(p["text"] for p in parts)
        return parts

    def system(self, system: Any, out: list[dict[str, Any]]) -> None:
        if isinstance(system, str):
            if system:
                out.append({"role": "system", "content": system})
            return
        if not isinstance(system, list):
            raise bad_request("'system' must be a string or a list of text blocks", param="system")
        parts = []
        for i, block in enumerate(system):
            where = f"system[{i}]"
            if _block_type(block, where) != "text":
                raise bad_request(f"{where}.type must be 'text'", param=f"{where}.type")
            parts.append(self.text(block, where))
        if parts:
            out.append({"role": "system", "content": self._collapse(parts, "\n")})

    def message(self, message: Any, where: str, out: list[dict[str, Any]]) -> None:
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object", param=where)
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise bad_request(f"{where}.role must be 'user' or 'assistant'", param=f"{where}.role")
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
        elif not isinstance(content, list):
            raise bad_request(f"{where}.content must be a string or a list of content blocks",
                              param=f"{where}.content")
        elif role == "user":
            self.user(content, where, out)
        else:
            self.assistant(content, where, out)

    def user(self, blocks: list[Any], where: str, out: list[dict[str, Any]]) -> None:
        if not blocks:
            raise bad_request(f"{where}.content must not be empty", param=f"{where}.content")
        results: list[dict[str, Any]] = []
        result_images: list[dict[str, Any]] = []
        parts: list[dict[str, Any]] = []
        for j, block in enumerate(blocks):
            at = f"{where}.content[{j}]"
            kind = _block_type(block, at)
            if kind == "text":
                parts.append(self.text(block, at))
            elif kind == "image":
                parts.append(self.image(block, at))
            elif kind == "document":
                parts.append(self.document(block, at))
            elif kind == "tool_result":
                results.append(self.tool_result(block, at, result_images))
            else:
                raise bad_request(f"{at}.type {kind!r} is not supported in a user message "
                                  "(text, image, document, tool_result)", param=f"{at}.type")
        # OpenAI wants tool messages right after the assistant's tool calls, so they go first.
        out.extend(results)
        parts = result_images + parts
        if parts:
            out.append({"role": "user", "content": self._collapse(parts, None)})

    def assistant(self, blocks: list[Any], where: str, out: list[dict[str, Any]]) -> None:
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for j, block in enumerate(blocks):
            at = f"{where}.content[{j}]"
            kind = _block_type(block, at)
            if kind == "text":
                parts.append(self.text(block, at))
            elif kind == "tool_use":
                calls.append(_tool_call(block, at))
            elif kind not in ("thinking", "redacted_thinking"):
                raise bad_request(f"{at}.type {kind!r} is not supported in an assistant message "
                                  "(text, tool_use, thinking)", param=f"{at}.type")
        if not parts and not calls:
            return  # nothing OpenAI can carry (only thinking, or empty)
        message: dict[str, Any] = {"role": "assistant", "content": self._collapse(parts, "") if parts else None}
        if calls:
            message["tool_calls"] = calls
        out.append(message)

    def text(self, block: dict[str, Any], where: str) -> dict[str, Any]:
        text = block.get("text")
        if not isinstance(text, str):
            raise bad_request(f"{where}.text must be a string", param=f"{where}.text")
        return self._cache(block, {"type": "text", "text": text})

    def image(self, block: dict[str, Any], where: str) -> dict[str, Any]:
        source = block.get("source")
        kind = source.get("type") if isinstance(source, dict) else None
        if kind == "base64":
            media, data = source.get("media_type"), source.get("data")  # type: ignore[union-attr]
            if not isinstance(media, str) or not isinstance(data, str):
                raise bad_request(f"{where}.source needs string 'media_type' and 'data'", param=f"{where}.source")
            url = f"data:{media};base64,{data}"
        elif kind == "url":
            url = source.get("url")  # type: ignore[union-attr]
            if not isinstance(url, str):
                raise bad_request(f"{where}.source.url must be a string", param=f"{where}.source.url")
        else:
            raise bad_request(f"{where}.source must be a base64 or url image source", param=f"{where}.source")
        return self._cache(block, {"type": "image_url", "image_url": {"url": url}})

    def document(self, block: dict[str, Any], where: str) -> dict[str, Any]:
        source = block.get("source")
        kind = source.get("type") if isinstance(source, dict) else None
        data = source.get("data") if isinstance(source, dict) else None
        if kind == "text" and isinstance(data, str):
            return self._cache(block, {"type": "text", "text": data})
        if kind == "base64" and isinstance(data, str):
            media = source.get("media_type") or "application/pdf"  # type: ignore[union-attr]
            title = block.get("title")
            file = {"filename": title if isinstance(title, str) and title else "document.pdf",
                    "file_data": f"data:{media};base64,{data}"}
            return self._cache(block, {"type": "file", "file": file})
        raise bad_request(f"{where}.source must be a base64 or text document source", param=f"{where}.source")

    def tool_result(self, block: dict[str, Any], where: str, images: list[dict[str, Any]]) -> dict[str, Any]:
        call_id = block.get("tool_use_id")
        if not isinstance(call_id, str) or not call_id:
            raise bad_request(f"{where}.tool_use_id must be a non-empty string", param=f"{where}.tool_use_id")
        content = block.get("content")
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):
            texts = []
            for k, item in enumerate(content):
                at = f"{where}.content[{k}]"
                kind = _block_type(item, at)
                if kind == "text":
                    texts.append(self.text(item, at)["text"])
                elif kind == "image":
                    images.append(self.image(item, at))
                else:
                    raise bad_request(f"{at}.type {kind!r} is not supported in a tool_result (text, image)",
                                      param=f"{at}.type")
            text = "\n".join(texts)
        else:
            raise bad_request(f"{where}.content must be a string or a list of blocks", param=f"{where}.content")
        if block.get("is_error") is True:
            text = f"Error: {text}" if text else "Error"
        part = self._cache(block, {"type": "text", "text": text})
        return {"role": "tool", "tool_call_id": call_id, "content": self._collapse([part], None)}

    def tool(self, tool: Any, where: str) -> dict[str, Any]:
        if not isinstance(tool, dict):
            raise bad_request(f"{where} must be an object", param=where)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise bad_request(f"{where}.type {kind!r}: Anthropic server tools cannot run on this model; "
                              "only custom tools (name, description, input_schema) are supported",
                              param=f"{where}.type")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request(f"{where}.name must be a non-empty string", param=f"{where}.name")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise bad_request(f"{where}.input_schema must be a JSON schema object", param=f"{where}.input_schema")
        function: dict[str, Any] = {"name": name}
        description = tool.get("description")
        if isinstance(description, str) and description:
            function["description"] = description
        function["parameters"] = schema
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        return self._cache(tool, {"type": "function", "function": function})


def _block_type(block: Any, where: str) -> Any:
    if not isinstance(block, dict):
        raise bad_request(f"{where} must be a content block object", param=where)
    kind = block.get("type")
    if not isinstance(kind, str):
        raise bad_request(f"{where}.type is required", param=f"{where}.type")
    return kind


def _tool_call(block: dict[str, Any], where: str) -> dict[str, Any]:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not call_id:
        raise bad_request(f"{where}.id must be a non-empty string", param=f"{where}.id")
    if not isinstance(name, str) or not name:
        raise bad_request(f"{where}.name must be a non-empty string", param=f"{where}.name")
    if not isinstance(arguments, dict):
        raise bad_request(f"{where}.input must be an object", param=f"{where}.input")
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(arguments).decode()}}


# -- response: OpenAI -> Anthropic --------------------------------------------------------


def anthropic_usage(usage: Any) -> dict[str, int]:
    """Anthropic usage from OpenAI usage (cache-inclusive ``prompt_tokens``, see the module doc)."""
    if not isinstance(usage, dict):
        return {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    prompt = usage.get("prompt_tokens")
    output = usage.get("completion_tokens")
    cached = usage.get("cache_read_input_tokens")
    if not _is_int(cached):
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
    created = usage.get("cache_creation_input_tokens")
    cached = cached if _is_int(cached) else 0
    created = created if _is_int(created) else 0
    prompt = prompt if _is_int(prompt) else 0
    return {
        "input_tokens": max(prompt - cached - created, 0),
        "output_tokens": output if _is_int(output) else 0,
        "cache_creation_input_tokens": created,
        "cache_read_input_tokens": cached,
    }


def _bad_completion() -> ProxyError:
    return ProxyError(502, "upstream returned a body that is not a chat completion", type="upstream_error",
                      code="upstream_bad_response", kind="server")


def _arguments(raw: Any) -> Any:
    if isinstance(raw, dict):
        return raw
    if raw is None or raw == "":
        return {}
    try:
        parsed = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        parsed = None
    return parsed if isinstance(parsed, dict) else {"_raw_arguments": raw}


def from_openai(completion: bytes | dict[str, Any], model: str) -> bytes:
    """An Anthropic ``message`` body for an OpenAI ``chat.completion``; ``model`` is the name the client asked for."""
    if isinstance(completion, (bytes, bytearray, memoryview)):
        try:
            completion = orjson.loads(completion)
        except orjson.JSONDecodeError:
            raise _bad_completion() from None
    if not isinstance(completion, dict):
        raise _bad_completion()
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _bad_completion()
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise _bad_completion()
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, list):  # some servers answer in content parts
        text = "".join(p.get("text") or "" for p in text if isinstance(p, dict))
    refusal = message.get("refusal")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    elif isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    for call in message.get("tool_calls") or ():
        if not isinstance(call, dict):
            continue
        function = call.get("function")
        if not isinstance(function, dict):
            function = {}
        content.append({
            "type": "tool_use",
            "id": call.get("id") or _tool_use_id(),
            "name": function.get("name") or "",
            "input": _arguments(function.get("arguments")),
        })
    finish = choice.get("finish_reason")
    if refusal and not text:
        stop_reason = "refusal"
    elif finish in (None, "stop") and content and content[-1]["type"] == "tool_use":
        stop_reason = "tool_use"
    else:
        stop_reason = "end_turn" if finish is None else _STOP_REASONS.get(finish, "end_turn")
    return orjson.dumps({
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": anthropic_usage(completion.get("usage")),
    })


# -- stream: OpenAI SSE -> Anthropic SSE --------------------------------------------------


def _event(name: bytes, body: dict[str, Any]) -> bytes:
    return b"event: %b\ndata: %b\n\n" % (name, orjson.dumps(body))


_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_TEXT_START = b'event: content_block_start\ndata: {"type":"content_block_start","index":%d,' \
              b'"content_block":{"type":"text","text":""}}\n\n'
_TEXT_DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,' \
              b'"delta":{"type":"text_delta","text":%b}}\n\n'
_JSON_DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,' \
              b'"delta":{"type":"input_json_delta","partial_json":%b}}\n\n'
_BLOCK_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'


def stream_error(message: str, error_type: str = "api_error") -> bytes:
    """An Anthropic ``error`` event, for a stream that fails after it started."""
    return _event(b"error", {"type": "error", "error": {"type": error_type, "message": message}})


class OpenAIToAnthropicStream(ChatChunkTranslator):
    """OpenAI ``chat.completion.chunk`` SSE in (any split), Anthropic Messages SSE out.

    Event order: ``message_start``, ``ping``, then per content block ``content_block_start``,
    deltas, ``content_block_stop`` (blocks indexed in order, one open at a time), then
    ``message_delta`` and ``message_stop`` when the OpenAI stream reaches ``[DONE]``
    (``complete`` turns True then). An OpenAI error event becomes an Anthropic ``error``
    event and ends the translation with ``complete`` False (``failed`` True). ``usage``
    is the OpenAI usage seen, for cost accounting.
    """

    def __init__(self, model: str, *, input_tokens: int = 0, id: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.id = id or message_id()
        self.input_tokens = input_tokens
        self._started = False
        self._next = 0  # index of the next content block
        self._text = -1  # index of the open text block, -1 if none
        self._tool = -1  # index of the open tool_use block, -1 if none
        self._tools: dict[Any, tuple[int, Any]] = {}  # OpenAI tool-call index -> (block index, call id)
        self._had_tools = False
        self._finish: str | None = None

    def _chunk(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        if not self._started:
            self._start(out)
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
        choices = chunk.get("choices")
        if not choices:
            return
        choice = choices[0]
        delta = choice.get("delta")
        if delta:
            text = delta.get("content") or delta.get("refusal")
            if text:
                index = self._text
                if index < 0:
                    index = self._open_text(out)
                out.append(_TEXT_DELTA % (index, orjson.dumps(text)))
            calls = delta.get("tool_calls")
            if calls:
                for call in calls:
                    self._tool_delta(call, out)
        finish = choice.get("finish_reason")
        if finish:
            self._finish = finish
            self._close(out)

    def _start(self, out: list[bytes]) -> None:
        self._started = True
        message: dict[str, Any] = {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }
        out.append(_event(b"message_start", {"type": "message_start", "message": message}))
        out.append(_PING)

    def _close(self, out: list[bytes]) -> None:
        if self._text >= 0:
            out.append(_BLOCK_STOP % self._text)
            self._text = -1
        elif self._tool >= 0:
            out.append(_BLOCK_STOP % self._tool)
            self._tool = -1

    def _open_text(self, out: list[bytes]) -> int:
        self._close(out)
        index = self._text = self._next
        self._next += 1
        out.append(_TEXT_START % index)
        return index

    def _tool_delta(self, call: dict[str, Any], out: list[bytes]) -> None:
        key = call.get("index")
        if key is None:
            key = call.get("id") or len(self._tools)
        function = call.get("function") or {}
        call_id = call.get("id")
        known = self._tools.get(key)
        if known is not None and (not call_id or call_id == known[1]):
            index = known[0]
        else:
            # A new call; a new id at a known index too (servers that send every call as index 0).
            self._close(out)
            call_id = call_id or _tool_use_id()
            index = self._tool = self._next
            self._tools[key] = (index, call_id)
            self._next += 1
            self._had_tools = True
            block: dict[str, Any] = {"type": "tool_use", "id": call_id, "name": function.get("name") or "", "input": {}}
            out.append(_event(b"content_block_start",
                              {"type": "content_block_start", "index": index, "content_block": block}))
        # A fragment for an earlier, already closed call (interleaved calls, which OpenAI does not
        # send) still goes to that call's block: the SDK accumulates by index, nothing is lost.
        arguments = function.get("arguments")
        if arguments:
            out.append(_JSON_DELTA % (index, orjson.dumps(arguments)))

    def _done(self, out: list[bytes]) -> None:
        if not self._started:
            self._start(out)
        self._close(out)
        finish = self._finish
        if finish in (None, "stop") and self._had_tools:
            stop_reason = "tool_use"
        else:
            stop_reason = _STOP_REASONS.get(finish or "stop", "end_turn")
        usage: dict[str, int]
        if self.usage is not None:
            usage = anthropic_usage(self.usage)
        else:
            usage = {"output_tokens": 0}  # unknown: the SDK keeps message_start's input figures
        out.append(_event(b"message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": usage,
        }))
        out.append(_STOP)
        self.complete = True

    def _fail(self, out: list[bytes], message: str, kind: str) -> None:
        out.append(stream_error(message, kind))
        self.failed = True



# -- errors -------------------------------------------------------------------------------

_KIND_TYPES = {
    "invalid": "invalid_request_error",
    "context": "invalid_request_error",
    "content_policy": "invalid_request_error",
    "auth": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "rate_limit": "rate_limit_error",
    "overloaded": "overloaded_error",
    "server": "api_error",
    "timeout": "timeout_error",
}
_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(exc: ProxyError) -> str:
    """Anthropic's error ``type`` for a gateway error: by upstream failure kind, else by status."""
    if exc.kind in _KIND_TYPES:
        return _KIND_TYPES[exc.kind]
    if exc.code == "model_not_found":
        return "not_found_error"
    found = _STATUS_TYPES.get(exc.status)
    if found is not None:
        return found
    return "api_error" if exc.status >= 500 else "invalid_request_error"


def anthropic_error(exc: ProxyError, request_id: str | None = None) -> bytes:
    """Anthropic's error body ``{"type": "error", "error": {"type", "message"}}`` for ``exc``."""
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type(exc), "message": exc.message}}
    if request_id is not None:
        body["request_id"] = request_id
    return orjson.dumps(body)
