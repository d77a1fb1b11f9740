"""Anthropic Messages API: OpenAI chat requests become ``POST /v1/messages`` calls and back, and Anthropic
clients' Messages requests go upstream as they are.

``max_tokens`` is required by Anthropic and optional in OpenAI's API; the messages and tools are mapped in
``messages``, the stream in ``stream``. Request fields that are not OpenAI's (``top_k``, ``thinking``, ...)
pass through into the Anthropic body untouched.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson

from mmproxy.config import Deployment
from mmproxy.errors import ProxyError
from mmproxy.providers.anthropic.errors import error_kind, parse_error
from mmproxy.providers.anthropic.messages import to_anthropic_messages, to_tool, to_tool_choice
from mmproxy.providers.anthropic.stream import FINISH, AnthropicPassthrough, AnthropicStream
from mmproxy.providers.base import (
    OPENAI_PARAMS,
    Provider,
    StreamTranslator,
    bad_upstream_response,
    upstream_error,
)
from mmproxy.providers.chunks import completion, openai_usage, wants_usage
from mmproxy.registry import defaults_for
from mmproxy.upstream.framing import http_request, request_head

ANTHROPIC_VERSION = "2023-06-01"

# ``max_tokens`` for a model the registry does not know: LiteLLM's DEFAULT_ANTHROPIC_CHAT_MAX_TOKENS.
DEFAULT_MAX_TOKENS = 4096


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
            body["tools"] = [to_tool(t, i) for i, t in enumerate(tools)]
            choice = to_tool_choice(payload.get("tool_choice"))
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
        return self.read_answer(body, self._chat_answer)

    def _chat_answer(self, data: dict[str, Any]) -> tuple[bytes, dict[str, Any] | None]:
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
        finish = FINISH.get(data.get("stop_reason") or "end_turn", "stop")
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
        return body, self.read_answer(body, self._message_usage)

    def _message_usage(self, data: dict[str, Any]) -> dict[str, Any]:
        if data.get("type") != "message":
            raise bad_upstream_response(self.deployment.id)
        return _usage(data.get("usage") or {})

    def messages_stream(self) -> StreamTranslator:
        return AnthropicPassthrough(self.deployment, include_usage=False)

    def embeddings_request(self, payload: dict[str, Any]) -> bytes:
        raise _no_embeddings(self.deployment)

    def embeddings_response(self, body: bytes, payload: dict[str, Any]) -> tuple[bytes, dict[str, Any] | None]:
        raise _no_embeddings(self.deployment)

    def error(self, status: int, body: bytes, retry_after: bytes | None) -> ProxyError:
        err_type, message = parse_error(body)
        kind = error_kind(status, err_type, message)
        return upstream_error(self.deployment, status, message, kind, retry_after=retry_after)


def _no_embeddings(deployment: Deployment) -> ProxyError:
    return ProxyError(400, f"{deployment.provider}/{deployment.upstream_model}: Anthropic has no embeddings API",
                      param="model", code="unsupported_endpoint")


def _usage(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage: prompt tokens include cache reads and writes, which Anthropic counts apart."""
    read = usage.get("cache_read_input_tokens") or 0
    created = usage.get("cache_creation_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + read + created
    return openai_usage(prompt, usage.get("output_tokens") or 0, cached=read, cache_creation=created)
