"""Build OpenAI ``chat.completion`` objects and ``chat.completion.chunk`` SSE events.

Shared by every adapter that translates another wire format into OpenAI's, so the
shape clients see is defined once: id, created, model, one choice, ``usage: null``
on every chunk when usage was requested, the usage chunk with ``choices: []``, and
``data: [DONE]``.
"""

from __future__ import annotations

import base64
import os
import sys
import time
from array import array
from collections.abc import Sequence
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


def completion_id() -> str:
    return f"chatcmpl-{os.urandom(12).hex()}"


def openai_usage(
    prompt: int, completion: int, *, cached: int = 0, cache_creation: int | None = None
) -> dict[str, Any]:
    """OpenAI usage; ``prompt`` includes cached tokens, as in OpenAI's own accounting.

    ``cache_creation_input_tokens`` / ``cache_read_input_tokens`` are kept as extra fields
    (LiteLLM does the same) so cost accounting can price cache writes and reads.
    """
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    if cache_creation is not None:
        usage["cache_creation_input_tokens"] = cache_creation
        usage["cache_read_input_tokens"] = cached
    return usage


def completion(
    model: str,
    message: dict[str, Any],
    finish_reason: str | None,
    usage: dict[str, Any] | None,
    *,
    id: str | None = None,
    more: Sequence[tuple[dict[str, Any], str | None]] = (),
) -> bytes:
    """A whole non-streaming ``chat.completion`` body; ``more`` are the choices after the first (n > 1)."""
    choices = []
    for index, (msg, reason) in enumerate(((message, finish_reason), *more)):
        msg.setdefault("role", "assistant")
        msg.setdefault("content", None)
        msg.setdefault("refusal", None)
        choices.append({"index": index, "message": msg, "logprobs": None, "finish_reason": reason})
    return orjson.dumps({
        "id": id or completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    })


class ChunkStream:
    """Emits the events of one translated stream; each method returns ready-to-send SSE bytes."""

    __slots__ = ("_head", "_tail", "id", "include_usage", "model")

    def __init__(self, model: str, include_usage: bool, id: str | None = None) -> None:
        self.id = id or completion_id()
        self.model = model
        self.include_usage = include_usage
        # Every chunk shares its envelope; only the choices part varies.
        envelope = {"id": self.id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        self._head = b"data: " + orjson.dumps(envelope)[:-1] + b',"choices":'
        self._tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"

    def _choice(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._head + b"[" + orjson.dumps(choice) + b"]" + self._tail

    def role(self) -> bytes:
        return self._choice({"role": "assistant", "content": ""})

    def text(self, text: str) -> bytes:
        return self._choice({"content": text})

    def reasoning(self, text: str) -> bytes:
        """Thinking text, under LiteLLM's ``reasoning_content`` delta field."""
        return self._choice({"reasoning_content": text})

    def tool_call(self, index: int, call_id: str | None, name: str | None, arguments: str) -> bytes:
        """A tool-call delta: the first one for ``index`` carries id and name, later ones argument text."""
        call: dict[str, Any] = {"index": index}
        if call_id is not None:
            call["id"] = call_id
            call["type"] = "function"
            call["function"] = {"name": name, "arguments": arguments}
        else:
            call["function"] = {"arguments": arguments}
        return self._choice({"tool_calls": [call]})

    def finish(self, reason: str) -> bytes:
        return self._choice({}, reason)

    def usage(self, usage: dict[str, Any]) -> bytes:
        """The usage chunk (only when the client asked for it with ``stream_options.include_usage``)."""
        if not self.include_usage:
            return b""
        return self._head + b"[],\"usage\":" + orjson.dumps(usage) + b"}\n\n"


def wants_usage(payload: dict[str, Any]) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def embedding_base64(values: Any) -> str:
    """OpenAI's ``encoding_format: base64`` layout: little-endian float32 (the openai SDK asks for it by default)."""
    vector = array("f", values)
    if sys.byteorder == "big":
        vector.byteswap()
    return base64.b64encode(vector.tobytes()).decode("ascii")


def wants_base64(payload: dict[str, Any]) -> bool:
    return payload.get("encoding_format") == "base64"
