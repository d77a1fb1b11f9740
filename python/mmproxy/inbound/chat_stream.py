"""Reading OpenAI ``chat.completion.chunk`` SSE (any split) for translators that speak another API to the client.

Why a base class: the gateway answers the Anthropic Messages API and OpenAI's Responses API from chat streams of
any provider; both need the same careful reading (partial events, CRLF, multi-line data, ``[DONE]``, an error
event instead of chunks, a malformed chunk that must end the stream and never the relay, which runs in the
socket callback) and differ only in what a chunk becomes.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import orjson

from mmproxy.providers.base import StreamTranslator


class ChatChunkTranslator(StreamTranslator):
    """``feed`` OpenAI chat SSE in, the client's API out. ``complete`` once ``[DONE]`` was translated, ``failed``
    once an error event was emitted; ``usage`` is the OpenAI usage seen, for cost accounting."""

    def __init__(self) -> None:
        self.complete = False
        self.failed = False
        self.usage: dict[str, Any] | None = None
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        if self.complete or self.failed:
            return b""
        if self._pending:
            data = self._pending + data
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")  # a lone trailing \r waits in _pending for its \n
        end = data.rfind(b"\n\n")
        if end < 0:
            self._pending = data
            return b""
        self._pending = data[end + 2:]
        out: list[bytes] = []
        for event in data[:end].split(b"\n\n"):
            payload: bytes | None
            if event[:6] == b"data: " and b"\n" not in event:
                payload = event[6:]
            else:
                payload = _data_of(event)
                if payload is None:
                    continue  # a comment or an event without data
            if payload[:6] == b"[DONE]":
                self._done(out)
                break
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                self._fail(out, "upstream sent a stream event that is not JSON", "api_error")
                break
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk and "choices" not in chunk:
                self._error(out, chunk["error"])
                break
            try:
                self._chunk(chunk, out)
            except (AttributeError, TypeError, IndexError, KeyError):
                self._fail(out, "upstream sent a stream event that is not a chat completion chunk", "api_error")
                break
        return b"".join(out)

    @abstractmethod
    def _chunk(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        """One chat chunk (a dict; any field may be missing or malformed)."""

    @abstractmethod
    def _done(self, out: list[bytes]) -> None:
        """``[DONE]``: finish the client's stream and set ``complete``."""

    @abstractmethod
    def _fail(self, out: list[bytes], message: str, kind: str) -> None:
        """Emit the client API's error event and set ``failed``; ``kind`` is Anthropic's error type name."""

    def _error(self, out: list[bytes], error: Any) -> None:
        """An upstream error event in place of chunks."""
        message = error.get("message") if isinstance(error, dict) else error
        kind = "api_error"
        if isinstance(error, dict):
            if error.get("type") == "rate_limit_error" or error.get("code") == "rate_limit_exceeded":
                kind = "rate_limit_error"
            elif error.get("code") == "overloaded":
                kind = "overloaded_error"
        self._fail(out, str(message) if message else "upstream stream error", kind)


def _data_of(event: bytes) -> bytes | None:
    """The data of a multi-line SSE event (``data:`` lines joined), None when it has none."""
    lines = [
        line[6:] if line[5:6] == b" " else line[5:]
        for line in event.split(b"\n")
        if line[:5] == b"data:"
    ]
    return b"\n".join(lines) if lines else None
