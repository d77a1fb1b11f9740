"""The text of a cached answer, whatever API shape it was kept in, and the equivalence of two answers.

The verified semantic cache compares the answer a similar prompt got with the fresh answer of an explored
request, and the answers of neighbouring entries with each other. The cache keeps bodies as the client got
them (chat completions, Messages or Responses; whole or as the relayed stream), so the text is read back
from any of the six shapes.

Equivalence is pluggable (``cache_params.answer_equivalence``):

- ``exact``: the normalised short forms must match (``mmproxy.smart.agreement.short_answer``: labels, numbers,
  option letters, stated final answers, JSON values in canonical form); free text must match once
  lower-cased with whitespace collapsed, which two samples of free text rarely do.
- ``embedding``: short answers exactly, free text by the cosine of the two answers' embeddings.
- ``judge``: short answers exactly, free text by a judge model asked whether both answers serve the question
  (the consensus judge's grouping prompt; the call is routed, limited and billed like any request, see
  ``mmproxy.pipeline.caching``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import numpy as np
import orjson

from mmproxy.smart.agreement import grouper_prompt, judged_votes, short_answer, states_final

__all__ = ["Embedded", "Equivalence", "Exact", "Judged", "answer_key", "answer_text"]

_SHORT_WORDS = 12  # longer answers are free text unless they state a final answer or are JSON


def answer_text(body: bytes, stream: bool) -> str | None:
    """The assistant text of a chat completion, Messages or Responses answer (``stream``: its SSE events as
    relayed); None when the body holds no text answer (a tool call, an error, another shape)."""
    if not stream:
        try:
            return _whole_text(orjson.loads(body))
        except orjson.JSONDecodeError:
            return None
    parts: list[str] = []
    for line in body.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if not data or data == b"[DONE]":
            continue
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict):
            piece = _delta_text(event)
            if piece:
                parts.append(piece)
    return "".join(parts) if parts else None


def _whole_text(document: Any) -> str | None:
    if not isinstance(document, dict):
        return None
    choices = document.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):  # chat completion
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else None
    if document.get("type") == "message" and isinstance(document.get("content"), list):  # Messages
        texts = [b.get("text") for b in document["content"] if isinstance(b, dict) and b.get("type") == "text"]
        return "".join(t for t in texts if isinstance(t, str)) or None
    output = document.get("output")
    if isinstance(output, list):  # Responses
        texts = [part.get("text") for item in output if isinstance(item, dict) and item.get("type") == "message"
                 for part in item.get("content") or () if isinstance(part, dict) and part.get("type") == "output_text"]
        return "".join(t for t in texts if isinstance(t, str)) or None
    return None


def _delta_text(event: dict[str, Any]) -> str | None:
    choices = event.get("choices")
    if isinstance(choices, list):  # chat chunk
        if choices and isinstance(choices[0], dict):
            delta = choices[0].get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            return content if isinstance(content, str) else None
        return None
    kind = event.get("type")
    if kind == "content_block_delta":  # Messages
        delta = event.get("delta")
        text = delta.get("text") if isinstance(delta, dict) and delta.get("type") == "text_delta" else None
        return text if isinstance(text, str) else None
    if kind == "response.output_text.delta":  # Responses
        delta = event.get("delta")
        return delta if isinstance(delta, str) else None
    return None


def _short(text: str) -> str | None:
    stripped = text.strip()
    if len(stripped.split()) > _SHORT_WORDS and stripped[:1] not in ("{", "[") and not states_final(text):
        return None
    return short_answer(text)


def answer_key(text: str) -> str:
    """A short key equal for answers that ``exact`` equivalence takes as the same: the neighbours of a cached
    prompt agree when their keys do."""
    short = _short(text)
    if short is not None:
        return "s:" + short
    normalised = " ".join(text.lower().split())
    return "t:" + hashlib.blake2b(normalised.encode(), digest_size=12).hexdigest()


class Equivalence(Protocol):
    async def same(self, question: str, cached: str, fresh: str) -> bool:
        """Whether the ``cached`` answer serves ``question`` as well as the ``fresh`` one."""


class Exact:
    async def same(self, question: str, cached: str, fresh: str) -> bool:
        return answer_key(cached) == answer_key(fresh)


class Embedded:
    """Short answers exactly; free text when the two answers' embeddings are at least ``threshold`` apart in
    cosine (the local embedder: the bound holds for its model)."""

    def __init__(self, embed: Callable[[str], Awaitable[np.ndarray]], threshold: float) -> None:
        self._embed, self.threshold = embed, threshold

    async def same(self, question: str, cached: str, fresh: str) -> bool:
        a, b = _short(cached), _short(fresh)
        if a is not None or b is not None:
            return a == b
        u, v = await self._embed(cached), await self._embed(fresh)
        return float(np.dot(u, v)) >= self.threshold


class Judged:
    """Short answers exactly; free text by a judge model. ``ask`` sends chat messages to the judge and returns
    its reply (the gateway routes and bills it); a judge that fails or answers something unreadable counts
    as "not the same", so a doubtful outcome never opens the cache wider."""

    def __init__(self, ask: Callable[[list[dict[str, str]]], Awaitable[str]]) -> None:
        self._ask = ask

    async def same(self, question: str, cached: str, fresh: str) -> bool:
        a, b = _short(cached), _short(fresh)
        if a is not None or b is not None:
            return a == b
        try:
            reply = await self._ask(grouper_prompt(question, [cached, fresh]))
        except Exception:  # any failure of the judge is a "no", never the request's error
            return False
        votes = judged_votes(reply, 2)  # the consensus judge's grouping: both answers in one group
        return votes is not None and votes[0] == 1.0
