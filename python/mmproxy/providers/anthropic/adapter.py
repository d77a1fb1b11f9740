"""Anthropic Messages API: OpenAI chat requests become ``POST /v1/messages`` calls and back.

What the translation has to bridge: system prompts are a top-level field, ``max_tokens`` is
required, tool calls and results are content blocks (results go in a *user* turn, and a run of
parallel results is one turn), images are ``source`` blocks, and the stream is typed SSE events
(``message_start`` ... ``message_stop``) instead of chunk objects. Request fields that are not
OpenAI's (``top_k``, ``thinking``, ...) pass through into the Anthropic body untouched.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson

from mmproxy.config import Deployment
from mmproxy.errors import ProxyError, error_body
from mmproxy.providers.base import (
    OPENAI_PARAMS,
    UPSTREAM_KINDS,
    Provider,
    StreamTranslator,
    bad_upstream_response,
    kind_of_status,
    upstream_error,
)
from mmproxy.providers.chunks import DONE, ChunkStream, completion, openai_usage, wants_usage
from mmproxy.registry import defaults_for
from mmproxy.upstream.framing import http_request, request_head

ANTHROPIC_VERSION = "2023-06-01"

# ``max_tokens`` for a model the registry does not know: LiteLLM's DEFAULT_ANTHROPIC_CHAT_MAX_TOKENS.
DEFAULT_MAX_TOKENS = 4096

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error type -> gateway failure kind (providers.base.UPSTREAM_KINDS).
_ERROR_KINDS = {
    "invalid_request_error": "invalid",
    "authentication_error": "auth",
    "permission_error": "permission",
    "not_found_error": "not_found",
    "rate_limit_error": "rate_limit",
    "overloaded_error": "overloaded",
    "api_error": "server",
    "timeout_error": "timeout",
}

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def default_max_tokens(model: str) -> int:
    """``max_tokens`` when the client sends none, which Anthropic requires: as LiteLLM does, the model's
    output limit (from the shipped registry data), else a conservative default."""
    shipped = defaults_for(model)
    if shipped is not None and shipped.max_output_tokens:
        return shipped.max_output_tokens
    return DEFAULT_MAX_TOKENS


class AnthropicProvider(Provider):
    supported = frozenset({
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "user",
        "stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls",
    })

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(deployment)
        path = urlsplit(deployment.api_base).path.rstrip("/")
        if not path.endswith("/v1/messages"):  # LiteLLM's rule: api_base is the host root
            path += "/v1/messages"
        self.messages_path = path
        headers = ["content-type: application/json", *self.auth_headers()]
        self._head = request_head("POST", path, self.host, headers)
        self._count_head = request_head("POST", f"{path}/count_tokens", self.host, headers)
        self._max_tokens = default_max_tokens(deployment.upstream_model)

    def check_params(self, payload: dict[str, Any]) -> None:
        # n = 1 is what Anthropic always does; only more choices are inexpressible.
        if payload.get("n") == 1:
            del payload["n"]
        super().check_params(payload)

    def auth_headers(self) -> list[str]:
        key = self.deployment.api_key
        return [f"anthropic-version: {ANTHROPIC_VERSION}", *([f"x-api-key: {key}"] if key else [])]

    def chat_request(self, payload: dict[str, Any], *, stream_usage: bool = True) -> bytes:
        return http_request(self._head, orjson.dumps(self.chat_body(payload)))

    def chat_body(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The Messages API request for an OpenAI-shaped chat payload."""
        system, messages = to_anthropic_messages(payload["messages"])
        body: dict[str, Any] = {"model": self.deployment.upstream_model, "messages": messages}
        if system is not None:
            body["system"] = system
        limit = payload.get("max_completion_tokens")
        if limit is None:
            limit = payload.get("max_tokens")
        body["max_tokens"] = self._max_tokens if limit is None else limit
        for name in ("temperature", "top_p"):
            if payload.get(name) is not None:
                body[name] = payload[name]
        stop = payload.get("stop")
        if stop:
            body["stop_sequences"] = [stop] if isinstance(stop, str) else stop
        if payload.get("user") is not None:
            body["metadata"] = {"user_id": payload["user"]}
        if payload.get("stream") is True:
            body["stream"] = True
        tools = payload.get("tools")
        if tools:
            body["tools"] = [_tool(t, i) for i, t in enumerate(tools)]
            choice = _tool_choice(payload.get("tool_choice"))
            if payload.get("parallel_tool_calls") is False:
                choice = choice or {"type": "auto"}
                if choice["type"] != "none":
                    choice["disable_parallel_tool_use"] = True
            if choice is not None:
                body["tool_choice"] = choice
        for key, value in payload.items():  # provider extras; a mapped field wins over a same-named extra
            if key not in OPENAI_PARAMS and key not in body:
                body[key] = value
        return body

    def chat_response(self, body: bytes) -> tuple[bytes, dict[str, Any] | None]:
        data = self.load_object(body)
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise bad_upstream_response(self.deployment.id)
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        thinking: list[dict[str, Any]] = []
        for block in blocks:
            kind = block.get("type")
            if kind == "text":
                texts.append(block.get("text", ""))
            elif kind == "tool_use":
                calls.append({"id": block.get("id"), "type": "function", "function": {
                    "name": block.get("name"), "arguments": orjson.dumps(block.get("input", {})).decode()}})
            elif kind in ("thinking", "redacted_thinking"):
                thinking.append(block)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
        if calls:
            message["tool_calls"] = calls
        if thinking:
            # LiteLLM's names: the text for display, the signed blocks to send back on the next turn.
            message["reasoning_content"] = "".join(b.get("thinking", "") for b in thinking)
            message["thinking_blocks"] = thinking
        usage = _usage(data.get("usage") or {})
        finish = _FINISH.get(data.get("stop_reason") or "end_turn", "stop")
        model = data.get("model") or self.deployment.upstream_model
        return completion(model, message, finish, usage, id=data.get("id")), usage

    def chat_stream(self, payload: dict[str, Any]) -> StreamTranslator:
        return AnthropicStream(self.deployment, wants_usage(payload))

    def messages_request(self, body: dict[str, Any]) -> bytes:
        body["model"] = self.deployment.upstream_model
        return http_request(self._head, orjson.dumps(body))

    def count_tokens_request(self, body: dict[str, Any]) -> bytes:
        body["model"] = self.deployment.upstream_model
        return http_request(self._count_head, orjson.dumps(body))

    def messages_response(self, body: bytes) -> tuple[bytes, dict[str, Any] | None]:
        data = self.load_object(body)
        if data.get("type") != "message":
            raise bad_upstream_response(self.deployment.id)
        return body, _usage(data.get("usage") or {})

    def messages_stream(self) -> StreamTranslator:
        return AnthropicPassthrough(self.deployment, include_usage=False)

    def embeddings_request(self, payload: dict[str, Any]) -> bytes:
        raise _no_embeddings(self.deployment)

    def embeddings_response(self, body: bytes, payload: dict[str, Any]) -> tuple[bytes, dict[str, Any] | None]:
        raise _no_embeddings(self.deployment)

    def error(self, status: int, body: bytes, retry_after: bytes | None) -> ProxyError:
        err_type, message = _parse_error(body)
        kind = error_kind(status, err_type, message)
        return upstream_error(self.deployment, status, message, kind, retry_after=retry_after)


def error_kind(status: int, err_type: str | None, message: str | None) -> str:
    kind = _ERROR_KINDS.get(err_type or "") or kind_of_status(status)
    if kind == "invalid" and message and "prompt is too long" in message.lower():
        kind = "context"
    return kind


def _parse_error(body: bytes) -> tuple[str | None, str | None]:
    """``{"type": "error", "error": {"type": ..., "message": ...}}`` -> (type, message)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:500].decode("utf-8", "replace").strip()
        return None, text or None
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return None, None
    err_type, message = err.get("type"), err.get("message")
    return (str(err_type) if err_type is not None else None), (str(message) if message is not None else None)


def _no_embeddings(deployment: Deployment) -> ProxyError:
    return ProxyError(400, f"{deployment.provider}/{deployment.upstream_model}: Anthropic has no embeddings API",
                      param="model", code="unsupported_endpoint")


def _usage(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage: prompt tokens include cache reads and writes, which Anthropic counts apart."""
    read = usage.get("cache_read_input_tokens") or 0
    created = usage.get("cache_creation_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + read + created
    return openai_usage(prompt, usage.get("output_tokens") or 0, cached=read, cache_creation=created)


# --- request mapping ------------------------------------------------------------------------------


def _invalid(message: str, param: str) -> ProxyError:
    return ProxyError(400, message, param=param, code="invalid_request")


def to_anthropic_messages(messages: list[dict[str, Any]]) -> tuple[str | list[dict[str, Any]] | None,
                                                                    list[dict[str, Any]]]:
    """OpenAI messages -> (Anthropic ``system``, ``messages``).

    System and developer messages are lifted to ``system``; tool results become ``tool_result``
    blocks in a user turn; consecutive turns of one role are merged so roles alternate.
    """
    system: list[dict[str, Any]] = []
    system_is_text = True
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        role = msg.get("role")
        content = msg.get("content")
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            system_is_text = system_is_text and isinstance(content, str) and "cache_control" not in msg
            blocks = _content_blocks(content, where)
        elif role == "user":
            blocks = _content_blocks(content, where)
        elif role == "assistant":
            blocks = _assistant_blocks(msg, where)
        elif role == "tool":
            role = "user"
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": msg.get("tool_call_id")}
            if content is not None:
                result["content"] = content if isinstance(content, str) else _content_blocks(content, where)
            blocks = [result]
        else:
            raise _invalid(f"{where}: role {role!r} is not supported by Anthropic (use tools/tool messages)",
                           f"{where}.role")
        if not blocks:
            continue
        if "cache_control" in msg:  # LiteLLM's shorthand: the mark applies to the message's last block
            blocks[-1] = {**blocks[-1], "cache_control": msg["cache_control"]}
        if role in ("system", "developer"):
            system.extend(blocks)
        elif out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    for msg in out:  # a lone plain text block is sent in the string shorthand
        blocks = msg["content"]
        if len(blocks) == 1 and blocks[0].keys() == {"type", "text"} and blocks[0]["type"] == "text":
            msg["content"] = blocks[0]["text"]
    if not system:
        return None, out
    if system_is_text:
        return "\n".join(b["text"] for b in system), out
    return system, out


def _content_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]


def _part(part: Any, where: str) -> dict[str, Any]:
    """One OpenAI content part as an Anthropic block; blocks already in Anthropic's shape pass as they are."""
    if not isinstance(part, dict):
        raise _invalid(f"{where} must be an object", where)
    kind = part.get("type")
    if kind == "text":
        block: dict[str, Any] = {"type": "text", "text": part.get("text", "")}
    elif kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            raise _invalid(f"{where}.image_url.url is required", where)
        block = {"type": "image", "source": _source(url, f"{where}.image_url.url", _IMAGE_TYPES)}
    elif kind == "file":
        data = (part.get("file") or {}).get("file_data")
        if not isinstance(data, str):
            raise _invalid(f"{where}: only inline files (file.file_data) can be sent to Anthropic", where)
        block = {"type": "document", "source": _source(data, f"{where}.file.file_data", None)}
    else:
        return part
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _source(url: str, where: str, media_types: frozenset[str] | None) -> dict[str, Any]:
    """A ``data:`` URL becomes a base64 source, an http(s) URL a url source."""
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type:
            raise _invalid(f"{where}: data URLs must be 'data:<media type>;base64,<data>'", where)
        if media_types is not None and media_type not in media_types:
            raise _invalid(f"{where}: image type {media_type!r} is not supported by Anthropic "
                           f"({', '.join(sorted(media_types))})", where)
        return {"type": "base64", "media_type": media_type, "data": data}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise _invalid(f"{where} must be a data: URL or an http(s) URL", where)


def _assistant_blocks(msg: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    thinking = msg.get("thinking_blocks")
    if isinstance(thinking, list):  # must precede the text and tool calls they led to
        blocks.extend(thinking)
    content = msg.get("content")
    if isinstance(content, str):
        if content:  # Anthropic rejects empty text blocks
            blocks.append({"type": "text", "text": content})
    elif content:
        blocks.extend(b for b in _content_blocks(content, where) if b.get("type") != "text" or b.get("text"))
    for j, call in enumerate(msg.get("tool_calls") or ()):
        fn = call.get("function") or {}
        arguments = fn.get("arguments") or "{}"
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            param = f"{where}.tool_calls[{j}].function.arguments"
            raise _invalid(f"{param} must be a JSON object (Anthropic tool input)", param)
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": parsed})
    return blocks


def _tool(tool: Any, index: int) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise _invalid(f"tools[{index}] must be an object", f"tools[{index}]")
    if tool.get("type") != "function":
        return tool  # an Anthropic tool (web search, bash, ...) given in its own shape
    fn = tool.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise _invalid(f"tools[{index}].function.name is required", f"tools[{index}].function")
    out: dict[str, Any] = {"name": fn["name"]}
    if fn.get("description"):
        out["description"] = fn["description"]
    out["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
    if "cache_control" in tool:
        out["cache_control"] = tool["cache_control"]
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
        if isinstance(name, str):
            return {"type": "tool", "name": name}
        if choice.get("type") in ("auto", "any", "tool", "none"):
            return dict(choice)  # already Anthropic's shape
    raise _invalid("tool_choice must be 'auto', 'required', 'none' or {'type': 'function', 'function': "
                   "{'name': ...}}", "tool_choice")


# --- stream translation ---------------------------------------------------------------------------


class AnthropicStream(StreamTranslator):
    """Anthropic's typed SSE events -> OpenAI chunks; the ``data:`` object's ``type`` says it all."""

    __slots__ = ("_buf", "_chunks", "_created", "_deployment", "_input", "_output", "_read", "_tools",
                 "complete", "failed", "include_usage", "usage")

    def __init__(self, deployment: Deployment, include_usage: bool) -> None:
        self._deployment = deployment
        self.include_usage = include_usage
        self._buf = b""
        self._chunks: ChunkStream | None = None
        self._tools: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool call index
        self._input = self._read = self._created = self._output = 0
        self.complete = False
        self.failed = False
        self.usage: dict[str, Any] | None = None

    def feed(self, data: bytes) -> bytes:
        if self.complete or self.failed:
            return b""
        buf = self._buf + data if self._buf else data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            return b""
        self._buf = buf[end + 2:]
        out = [self._event(event) for event in buf[:end].split(b"\n\n")]
        return b"".join(out)

    def _stream(self) -> ChunkStream:
        chunks = self._chunks
        if chunks is None:  # no message_start (not seen in practice): the deployment's model it is
            chunks = self._chunks = ChunkStream(self._deployment.upstream_model, self.include_usage)
        return chunks

    def _event(self, event: bytes) -> bytes:
        if self.complete or self.failed:
            return b""
        start = event.find(b"data:")
        if start < 0:
            return b""  # a comment or an event without data
        try:
            obj = orjson.loads(event[start + 5:])
            kind = obj["type"]
            if kind == "content_block_delta":
                delta = obj["delta"]
                dtype = delta["type"]
                if dtype == "text_delta":
                    return self._stream().text(delta["text"]) if delta["text"] else b""
                if dtype == "input_json_delta":
                    part = delta["partial_json"]
                    return self._stream().tool_call(self._tools[obj["index"]], None, None, part) if part else b""
                if dtype == "thinking_delta":
                    return self._stream().reasoning(delta["thinking"]) if delta["thinking"] else b""
                return b""  # signature_delta, citations_delta
            if kind == "content_block_start":
                block = obj["content_block"]
                if block["type"] == "tool_use":
                    index = self._tools[obj["index"]] = len(self._tools)
                    return self._stream().tool_call(index, block["id"], block["name"], "")
                if block["type"] == "text" and block.get("text"):
                    return self._stream().text(block["text"])
                return b""
            if kind == "message_start":
                message = obj["message"]
                self._chunks = ChunkStream(message.get("model") or self._deployment.upstream_model,
                                           self.include_usage, id=message.get("id"))
                self._count(message.get("usage"))
                return self._chunks.role()
            if kind == "message_delta":
                self._count(obj.get("usage"))
                reason = (obj.get("delta") or {}).get("stop_reason")
                return self._stream().finish(_FINISH.get(reason, "stop")) if reason else b""
            if kind == "message_stop":
                return self._stream().usage(self._finish_usage()) + DONE
            if kind == "error":
                return self._fail(obj.get("error") or {})
            return b""  # ping, content_block_stop, future event types
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return self._fail({"type": "api_error", "message": "unparseable stream event"})

    def _finish_usage(self) -> dict[str, Any]:
        usage = self.usage = openai_usage(self._input + self._read + self._created, self._output,
                                          cached=self._read, cache_creation=self._created)
        self.complete = True
        return usage

    def _count(self, usage: Any) -> None:
        """Anthropic usage counts are cumulative: the latest value of each wins."""
        if not isinstance(usage, dict):
            return
        self._input = usage.get("input_tokens") or self._input
        self._read = usage.get("cache_read_input_tokens") or self._read
        self._created = usage.get("cache_creation_input_tokens") or self._created
        self._output = usage.get("output_tokens") or self._output

    def _fail(self, err: dict[str, Any]) -> bytes:
        """An OpenAI error event for a mid-stream failure; the stream stays incomplete."""
        self.failed = True
        err_type = err.get("type")
        message = err.get("message")
        kind = error_kind(0, str(err_type), str(message) if message is not None else None)
        if kind == "invalid" and err_type not in _ERROR_KINDS:
            kind = "server"  # an unknown mid-stream failure is the upstream's, not the request's
        _, out_type, code = UPSTREAM_KINDS[kind]
        text = f"upstream {self._deployment.id} failed mid-stream: {err_type}: {message}"
        return b"data: " + error_body(text, out_type, code) + b"\n\n"


class AnthropicPassthrough(AnthropicStream):
    """Anthropic client, Anthropic upstream: events go out unchanged; only usage, the end and errors are read."""

    __slots__ = ()

    def _event(self, event: bytes) -> bytes:
        if self.complete or self.failed:
            return b""
        if b"message_" in event or b"error" in event:
            start = event.find(b"data:")
            try:
                obj = orjson.loads(event[start + 5:]) if start >= 0 else {}
            except orjson.JSONDecodeError:
                obj = {}
            kind = obj.get("type") if isinstance(obj, dict) else None
            if kind == "message_start":
                self._count((obj.get("message") or {}).get("usage"))
            elif kind == "message_delta":
                self._count(obj.get("usage"))
            elif kind == "message_stop":
                self._finish_usage()
            elif kind == "error":
                self.failed = True  # relayed as is: the client already has Anthropic's own error event
        return event + b"\n\n"
