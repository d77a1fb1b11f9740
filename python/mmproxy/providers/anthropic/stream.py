"""Anthropic's typed SSE stream (``message_start`` ... ``message_stop``): translated into OpenAI chunks, or
relayed unchanged to an Anthropic client while its usage, end and errors are read."""

from __future__ import annotations

from typing import Any

import orjson

from mmproxy.config import Deployment
from mmproxy.errors import error_body
from mmproxy.providers.anthropic.errors import ERROR_KINDS, error_kind
from mmproxy.providers.base import UPSTREAM_KINDS, StreamTranslator
from mmproxy.providers.chunks import DONE, ChunkStream, openai_usage

# Anthropic stop_reason -> OpenAI finish_reason, for whole responses and streams alike.
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


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
                return self._stream().finish(FINISH.get(reason, "stop")) if reason else b""
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
        if kind == "invalid" and err_type not in ERROR_KINDS:
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
