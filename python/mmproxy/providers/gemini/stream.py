"""Gemini's SSE stream of GenerateContentResponse events as OpenAI chunks."""

from __future__ import annotations

from typing import Any

import orjson

from mmproxy.providers.base import StreamTranslator
from mmproxy.providers.chunks import DONE, ChunkStream
from mmproxy.providers.gemini.response import to_arguments, to_call_id, to_finish_reason, to_usage


class GeminiStream(StreamTranslator):
    """Gemini SSE (``data: <GenerateContentResponse>`` events, CRLF or LF framed) to OpenAI chunks.

    Gemini sends no terminator: the stream is over after the event carrying ``finishReason`` (or a
    ``promptFeedback.blockReason``). That event is translated into the finish chunk, the usage chunk and
    ``[DONE]``, and only then is ``complete`` set. Usage is the last ``usageMetadata`` seen up to it
    (Gemini puts one on every event, the full counts on the last); a later event can only update
    ``usage`` for cost accounting, since the client already has ``[DONE]``.
    """

    __slots__ = ("_broken", "_buf", "_chunks", "_include_usage", "_meta", "_model", "_sep", "_tools",
                 "complete", "usage")

    def __init__(self, model: str, include_usage: bool) -> None:
        self._model = model
        self._include_usage = include_usage
        self._buf = b""
        self._sep: bytes | None = None
        self._chunks: ChunkStream | None = None
        self._meta: Any = None
        self._tools = 0
        self._broken = False
        self.complete = False
        self.usage: dict[str, Any] | None = None

    def feed(self, data: bytes) -> bytes:
        buf = self._buf + data if self._buf else data
        sep = self._sep
        if sep is None:
            newline = buf.find(b"\n")
            if newline < 0:
                self._buf = buf
                return b""
            sep = self._sep = b"\r\n\r\n" if newline and buf[newline - 1] == 13 else b"\n\n"
        out: list[bytes] = []
        start = 0
        while (end := buf.find(sep, start)) >= 0:
            if start != end and not self._broken:
                try:
                    self._event(buf[start:end], out)
                except (AttributeError, TypeError, IndexError, KeyError):  # an event that is no GenerateContent
                    self._broken = True  # answer: stop, as for one that is not JSON
            start = end + len(sep)
        self._buf = buf[start:]
        return b"".join(out)

    def _event(self, block: bytes, out: list[bytes]) -> None:
        if block.startswith(b"data:") and b"\n" not in block:
            payload = block[5:]
        else:  # several lines: comments, other fields, or a data value split over lines
            lines = [line[5:].strip() for line in block.splitlines() if line.startswith(b"data:")]
            if not lines:
                return
            payload = b"\n".join(lines)
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict) or "error" in event:
            self._broken = True  # stop here: no [DONE], so the client is told the stream broke
            return
        meta = event.get("usageMetadata")
        if meta is not None:
            self._meta = meta
        if self.complete:
            if meta is not None:
                self.usage = to_usage(meta)
            return
        chunks = self._chunks
        if chunks is None:
            response_id = event.get("responseId")
            chat_id = f"chatcmpl-{response_id}" if isinstance(response_id, str) and response_id else None
            chunks = self._chunks = ChunkStream(self._model, self._include_usage, chat_id)
            out.append(chunks.role())
        finish = None
        candidates = event.get("candidates")
        if candidates:
            candidate = candidates[0]
            content = candidate.get("content")
            if content:
                for part in content.get("parts") or ():
                    text = part.get("text")
                    if text is not None:
                        if text:
                            out.append(chunks.reasoning(text) if part.get("thought") else chunks.text(text))
                    elif (call := part.get("functionCall")) is not None:
                        out.append(chunks.tool_call(self._tools, to_call_id(part.get("thoughtSignature")),
                                                    call.get("name"), to_arguments(call)))
                        self._tools += 1
            finish = candidate.get("finishReason")
            if finish:
                finish = to_finish_reason(finish, self._tools > 0)
        else:
            feedback = event.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                finish = "content_filter"
        if finish:
            out.append(chunks.finish(finish))
            usage = to_usage(self._meta)
            if usage is not None:
                self.usage = usage
                out.append(chunks.usage(usage))
            out.append(DONE)
            self.complete = True
