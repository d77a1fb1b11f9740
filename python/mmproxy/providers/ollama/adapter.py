"""Ollama's native API: ``ollama_chat/<model>`` → ``/api/chat``, ``ollama/<model>`` → ``/api/generate``.

Ollama is the local tier (no key by default). Its wire format differs from OpenAI's in ways
that bite: it streams unless told ``stream: false``, sampling settings live in ``options``,
images are bare base64 strings, tool-call arguments are objects, and streams are NDJSON
(one JSON object per line, the last with ``done: true`` and the token counts).
"""

from __future__ import annotations

import os
from abc import abstractmethod
from typing import Any, ClassVar
from urllib.parse import urlsplit

import orjson

from mmproxy.config import Deployment
from mmproxy.errors import ProxyError, bad_request, error_body
from mmproxy.providers.base import (
    OPENAI_PARAMS,
    Provider,
    StreamTranslator,
    bad_upstream_response,
    kind_of_status,
    upstream_error,
)
from mmproxy.providers.chunks import (
    DONE,
    ChunkStream,
    completion,
    embedding_base64,
    openai_usage,
    wants_base64,
    wants_usage,
)
from mmproxy.upstream.framing import http_request, request_head

# OpenAI sampling fields and their names inside Ollama's ``options``.
_OPTIONS = (
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("seed", "seed"),
    ("presence_penalty", "presence_penalty"),
    ("frequency_penalty", "frequency_penalty"),
    ("max_tokens", "num_predict"),
    ("max_completion_tokens", "num_predict"),  # after max_tokens: the newer name wins
)
# ``user`` (an end-user id for OpenAI's abuse monitoring) is accepted and not sent, and ``n`` only as 1,
# as LiteLLM does for providers without them.
_GENERATE_PARAMS = frozenset({
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "seed", "stop", "max_tokens",
    "max_completion_tokens", "presence_penalty", "frequency_penalty", "response_format", "user", "n",
})
_CHAT_PARAMS = _GENERATE_PARAMS | {"tools", "tool_choice"}
# OpenAI embeddings fields; anything else (truncate, keep_alive, options) is Ollama's and passes through.
_EMBED_PARAMS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
_CONTEXT_HINTS = ("context length", "context window", "context size", "exceeds the context")

# The embeddings request and response hooks run in the same handler task, so the client's
# encoding_format travels from one to the other in a context variable instead of shared state.


def _call_id() -> str:
    return f"call_{os.urandom(12).hex()}"


def _arguments(value: Any) -> str:
    """Ollama sends tool arguments as an object; OpenAI clients expect a compact JSON string."""
    return value if isinstance(value, str) else orjson.dumps(value if value is not None else {}).decode()


class _OllamaProvider(Provider):
    """What ``/api/chat`` and ``/api/generate`` share: options, format, streaming, embeddings, errors."""

    operation: ClassVar[str]  # "chat" or "generate"

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(deployment)
        base_path = urlsplit(deployment.api_base).path.rstrip("/")
        headers = ["Content-Type: application/json", "Accept: application/json, application/x-ndjson",
                   *self.auth_headers()]
        self._chat_head = request_head("POST", f"{base_path}/api/{self.operation}", self.host, headers)
        self._embed_head = request_head("POST", f"{base_path}/api/embed", self.host, headers)

    # -- chat ------------------------------------------------------------------------
    def chat_request(self, payload: dict[str, Any], *, stream_usage: bool = True) -> bytes:
        if payload.get("n", 1) != 1 and not self.deployment.drop_params:
            raise ProxyError(400, f"n={payload['n']} is not supported by {self.deployment.provider}/"
                             f"{self.deployment.upstream_model} (one choice per request); set drop_params: true "
                             "to get one", param="n", code="unsupported_parameter")
        body: dict[str, Any] = {"model": self.deployment.upstream_model}
        self.add_prompt(body, payload)
        # Ollama streams unless told otherwise, so a non-streaming request must say so.
        body["stream"] = payload.get("stream") is True
        options = payload.get("options")
        options = dict(options) if isinstance(options, dict) else {}
        for field, name in _OPTIONS:
            value = payload.get(field)
            if value is not None:
                options[name] = value
        stop = payload.get("stop")
        if stop is not None:
            options["stop"] = [stop] if isinstance(stop, str) else stop
        if options:
            body["options"] = options
        fmt = _format(payload.get("response_format"))
        if fmt is not None:
            body["format"] = fmt
        for key, value in payload.items():
            if key not in OPENAI_PARAMS and key not in body and key != "options":
                body[key] = value  # Ollama's own fields: keep_alive, think, raw, ...
        return http_request(self._chat_head, orjson.dumps(body))

    @abstractmethod
    def add_prompt(self, body: dict[str, Any], payload: dict[str, Any]) -> None:
        """Put the conversation into ``body`` in this endpoint's shape."""

    @abstractmethod
    def reply(self, data: dict[str, Any]) -> tuple[Any, Any, Any]:
        """(content, thinking, tool_calls) of a response object or stream line."""

    def chat_response(self, body: bytes) -> tuple[bytes, dict[str, Any] | None]:
        data = self.load_object(body)
        text, thinking, calls = self.reply(data)
        message: dict[str, Any] = {"role": "assistant", "content": text if isinstance(text, str) else None}
        if thinking:
            message["reasoning_content"] = thinking
        finish = "length" if data.get("done_reason") == "length" else "stop"
        if calls:
            message["tool_calls"] = [_openai_call(call) for call in calls]
            message["content"] = text or None
            finish = "tool_calls"
        usage = openai_usage(_count(data, "prompt_eval_count"), _count(data, "eval_count"))
        model = data.get("model") or self.deployment.upstream_model
        return completion(model, message, finish, usage), usage

    def chat_stream(self, payload: dict[str, Any]) -> StreamTranslator:
        return OllamaStream(self, wants_usage(payload))

    # -- embeddings ------------------------------------------------------------------
    def embeddings_request(self, payload: dict[str, Any]) -> bytes:
        raw = payload.get("input")
        if not (isinstance(raw, str) or (isinstance(raw, list) and all(isinstance(x, str) for x in raw))):
            raise bad_request("Ollama embeds text only: 'input' must be a string or a list of strings",
                              param="input")
        fmt = payload.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise bad_request("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
        body: dict[str, Any] = {"model": self.deployment.upstream_model, "input": raw}
        if payload.get("dimensions") is not None:
            body["dimensions"] = payload["dimensions"]
        for key, value in payload.items():
            if key not in _EMBED_PARAMS:
                body[key] = value
        return http_request(self._embed_head, orjson.dumps(body))

    def embeddings_response(self, body: bytes, payload: dict[str, Any]) -> tuple[bytes, dict[str, Any] | None]:
        data = self.load_object(body)
        vectors = data.get("embeddings")
        if not isinstance(vectors, list):
            raise bad_upstream_response(self.deployment.id)
        as_base64 = wants_base64(payload)
        items = [
            {"object": "embedding", "index": i, "embedding": embedding_base64(vec) if as_base64 else vec}
            for i, vec in enumerate(vectors)
        ]
        tokens = _count(data, "prompt_eval_count")
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        out = {"object": "list", "data": items, "model": data.get("model") or self.deployment.upstream_model,
               "usage": usage}
        return orjson.dumps(out), usage

    # -- errors ----------------------------------------------------------------------
    def error(self, status: int, body: bytes, retry_after: bytes | None) -> ProxyError:
        message = _error_message(body)
        kind = kind_of_status(status)
        if kind == "invalid" and message is not None and any(h in message.lower() for h in _CONTEXT_HINTS):
            kind = "context"
        return upstream_error(self.deployment, status, message, kind, retry_after=retry_after)


class OllamaChatProvider(_OllamaProvider):
    """``ollama_chat/<model>``: messages, images and tools map onto ``/api/chat`` one to one."""

    operation = "chat"
    supported = _CHAT_PARAMS

    def add_prompt(self, body: dict[str, Any], payload: dict[str, Any]) -> None:
        messages = payload["messages"]
        names: dict[str, str] = {}  # tool_call_id -> function name, for tool results
        out = []
        for i, msg in enumerate(messages):
            role = msg.get("role")
            if role == "developer":
                role = "system"
            elif role == "function":  # the legacy shape of a tool result
                role = "tool"
            text, images = _content(msg.get("content"), f"messages[{i}].content")
            item: dict[str, Any] = {"role": role, "content": text}
            if images:
                item["images"] = images
            calls = msg.get("tool_calls")
            if role == "assistant" and calls:
                item["tool_calls"] = [_ollama_call(call, f"messages[{i}].tool_calls[{j}]", names)
                                      for j, call in enumerate(calls)]
            if role == "tool":
                call_id = msg.get("tool_call_id")
                name = msg.get("name") or (names.get(call_id) if isinstance(call_id, str) else None)
                if name:
                    item["tool_name"] = name
            out.append(item)
        body["messages"] = out
        tools = payload.get("tools")
        if tools:
            choice = payload.get("tool_choice")
            if choice is None or choice == "auto":
                body["tools"] = tools
            elif choice != "none":  # "none": leave the tools out, the model cannot call them
                if not self.deployment.drop_params:
                    raise ProxyError(
                        400,
                        f"tool_choice {choice!r} is not supported by ollama_chat/{self.deployment.upstream_model}"
                        " (only 'auto' and 'none'); set drop_params: true to fall back to 'auto'",
                        param="tool_choice", code="unsupported_parameter")
                body["tools"] = tools

    def reply(self, data: dict[str, Any]) -> tuple[Any, Any, Any]:
        message = data.get("message")
        if not isinstance(message, dict):
            return None, None, None
        return message.get("content"), message.get("thinking"), message.get("tool_calls")


class OllamaGenerateProvider(_OllamaProvider):
    """``ollama/<model>``: the conversation flattened into ``prompt`` (+ ``system``), as LiteLLM does."""

    operation = "generate"
    supported = _GENERATE_PARAMS

    def add_prompt(self, body: dict[str, Any], payload: dict[str, Any]) -> None:
        system: list[str] = []
        turns: list[tuple[str, str]] = []
        images: list[str] = []
        for i, msg in enumerate(payload["messages"]):
            role = msg.get("role")
            text, found = _content(msg.get("content"), f"messages[{i}].content")
            images += found
            if role in ("system", "developer"):
                system.append(text)
                continue
            speaker = "Assistant" if role == "assistant" else "User"  # tool results read as user turns
            if role == "assistant" and msg.get("tool_calls"):
                text += "Tool Calls: " + orjson.dumps(msg["tool_calls"]).decode()
            if turns and turns[-1][0] == speaker:
                turns[-1] = (speaker, turns[-1][1] + "\n" + text)
            else:
                turns.append((speaker, text))
        if len(turns) == 1 and turns[0][0] == "User":
            prompt = turns[0][1]  # a single question needs no transcript around it
        else:
            prompt = "".join(f"### {speaker}:\n{text}\n\n" for speaker, text in turns) + "### Assistant:\n"
        body["prompt"] = prompt
        if system:
            body["system"] = "\n\n".join(system)
        if images:
            body["images"] = images

    def reply(self, data: dict[str, Any]) -> tuple[Any, Any, Any]:
        return data.get("response"), data.get("thinking"), None


class OllamaStream(StreamTranslator):
    """NDJSON lines → OpenAI chunks; the ``done: true`` line carries the finish reason and token counts."""

    __slots__ = ("_buffer", "_chunks", "_provider", "_started", "_tools", "complete", "failed", "usage")

    def __init__(self, provider: _OllamaProvider, include_usage: bool) -> None:
        self._provider = provider
        self._chunks = ChunkStream(provider.deployment.upstream_model, include_usage)
        self._buffer = b""
        self._started = False
        self.failed = False
        self._tools = 0
        self.complete = False
        self.usage: dict[str, Any] | None = None

    def feed(self, data: bytes) -> bytes:
        if self.complete or self.failed:
            return b""
        if self._buffer:
            data = self._buffer + data
        end = data.rfind(b"\n")
        if end < 0:
            self._buffer = data
            return b""
        self._buffer = data[end + 1:]
        if data.find(b"\n", 0, end) < 0:  # the common case: one line per read
            return self._line(data[:end])
        out = []
        for line in data[:end].split(b"\n"):
            out.append(self._line(line))
            if self.complete or self.failed:
                break
        return b"".join(out)

    def _line(self, line: bytes) -> bytes:
        if not line or line.isspace():
            return b""
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return self._fail("sent a stream line that is not JSON")
        if not isinstance(obj, dict):
            return self._fail("sent a stream line that is not a JSON object")
        error = obj.get("error")
        if error is not None:
            return self._fail(f"failed mid-stream: {error}")
        chunks = self._chunks
        out = b""
        if not self._started:
            self._started = True
            out = chunks.role()
        text, thinking, calls = self._provider.reply(obj)
        if thinking:
            out += chunks.reasoning(thinking)
        if text:
            out += chunks.text(text)
        if calls:
            for call in calls:
                fn = call.get("function") or {}
                out += chunks.tool_call(self._tools, call.get("id") or _call_id(), fn.get("name"),
                                        _arguments(fn.get("arguments")))
                self._tools += 1
        if obj.get("done") is True:
            if self._tools:
                finish = "tool_calls"
            else:
                finish = "length" if obj.get("done_reason") == "length" else "stop"
            usage = self.usage = openai_usage(_count(obj, "prompt_eval_count"), _count(obj, "eval_count"))
            out += chunks.finish(finish) + chunks.usage(usage) + DONE
            self.complete = True
        return out

    def _fail(self, what: str) -> bytes:
        """An OpenAI error event; the stream stays incomplete so the client never sees [DONE]."""
        self.failed = True
        deployment = self._provider.deployment
        message = f"upstream {deployment.id} {what}"
        if deployment.api_key and deployment.api_key in message:
            message = message.replace(deployment.api_key, "[redacted]")
        return b"data: " + error_body(message, "upstream_error", "upstream_error") + b"\n\n"


# -- request conversion ---------------------------------------------------------------
def _content(content: Any, where: str) -> tuple[str, list[str]]:
    """Message text and base64 images from OpenAI content (a string or a list of parts)."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text") or ""))
        elif kind == "image_url":
            images.append(_image(part.get("image_url"), f"{where}[{j}].image_url"))
        else:
            raise bad_request(f"{where}[{j}]: content part type {kind!r} is not supported by Ollama",
                              param=f"{where}[{j}]")
    return "\n".join(texts), images


def _image(spec: Any, where: str) -> str:
    url = spec.get("url") if isinstance(spec, dict) else spec
    if isinstance(url, str) and url.startswith("data:"):
        meta, sep, data = url.partition(",")
        if sep and meta.endswith(";base64") and data:
            return data
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        raise bad_request(f"{where}: Ollama takes images inline only; send a base64 data URL "
                          "(data:image/png;base64,...) instead of an http(s) URL", param=f"{where}.url")
    raise bad_request(f"{where}: expected a base64 data URL (data:image/png;base64,...)", param=f"{where}.url")


def _ollama_call(call: Any, where: str, names: dict[str, str]) -> dict[str, Any]:
    """An OpenAI assistant tool call as Ollama's ``{function: {name, arguments: <object>}}``."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise bad_request(f"{where}: expected {{'id', 'type': 'function', 'function': {{'name', 'arguments'}}}}",
                          param=where)
    args = fn.get("arguments") or "{}"
    if isinstance(args, str):
        try:
            args = orjson.loads(args)
        except orjson.JSONDecodeError:
            raise bad_request(f"{where}.function.arguments is not valid JSON",
                              param=f"{where}.function.arguments") from None
    if not isinstance(args, dict):
        raise bad_request(f"{where}.function.arguments must be a JSON object", param=f"{where}.function.arguments")
    if isinstance(call.get("id"), str):
        names[call["id"]] = fn["name"]
    return {"function": {"name": fn["name"], "arguments": args}}


def _format(response_format: Any) -> Any:
    """OpenAI ``response_format`` as Ollama's ``format``: "json" or the JSON schema itself."""
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            return schema
        raise bad_request("response_format.json_schema.schema must be a JSON schema object",
                          param="response_format.json_schema.schema")
    raise bad_request("response_format.type must be 'text', 'json_object' or 'json_schema'",
                      param="response_format.type")


# -- response conversion --------------------------------------------------------------
def _openai_call(call: Any) -> dict[str, Any]:
    fn = call.get("function") if isinstance(call, dict) else None
    fn = fn if isinstance(fn, dict) else {}
    call_id = call.get("id") if isinstance(call, dict) else None
    return {"id": call_id or _call_id(), "type": "function",
            "function": {"name": fn.get("name"), "arguments": _arguments(fn.get("arguments"))}}


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    return value if isinstance(value, int) else 0


def _error_message(body: bytes) -> str | None:
    """Ollama errors are ``{"error": "..."}``; proxies in front of it may send other shapes."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", "replace").strip() or None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        err = err.get("message")
    return str(err) if err is not None else None
