"""Gemini candidates and usage as OpenAI's shapes, for whole responses and stream events alike.

Gemini has no tool-call ids: calls get ``call_<hex>`` ids, and a ``thoughtSignature`` (Gemini 3 requires it back
on the next turn) rides in the id as ``call_<hex>__thought__<signature>``. Thought summaries (``thought: true``
parts) become ``reasoning_content``, as in LiteLLM.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from mmproxy.providers.chunks import openai_usage

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}


THOUGHT = "__thought__"


# -- response translation --------------------------------------------------------------

def to_choice(candidate: dict[str, Any]) -> tuple[dict[str, Any], str]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts or ():
        text = part.get("text")
        if text is not None:
            (thoughts if part.get("thought") else texts).append(text)
        elif (call := part.get("functionCall")) is not None:
            calls.append({"id": to_call_id(part.get("thoughtSignature")), "type": "function",
                          "function": {"name": call.get("name"), "arguments": to_arguments(call)}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if thoughts:  # thought summaries (thinkingConfig.includeThoughts), as LiteLLM exposes them
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    return message, to_finish_reason(candidate.get("finishReason") or "STOP", bool(calls))


def to_finish_reason(reason: str, called: bool) -> str:
    mapped = _FINISH.get(reason, "stop")
    return "tool_calls" if called and mapped == "stop" else mapped


def to_call_id(signature: Any) -> str:
    call_id = f"call_{os.urandom(12).hex()}"
    return f"{call_id}{THOUGHT}{signature}" if isinstance(signature, str) and signature else call_id


def to_arguments(call: dict[str, Any]) -> str:
    return orjson.dumps(call.get("args") or {}).decode()


def to_usage(meta: Any) -> dict[str, Any] | None:
    """OpenAI usage of ``usageMetadata``: thinking counts as completion, tool-use prompt as prompt."""
    if not isinstance(meta, dict):
        return None
    thoughts = meta.get("thoughtsTokenCount") or 0
    prompt = (meta.get("promptTokenCount") or 0) + (meta.get("toolUsePromptTokenCount") or 0)
    usage = openai_usage(prompt, (meta.get("candidatesTokenCount") or 0) + thoughts,
                         cached=meta.get("cachedContentTokenCount") or 0)
    if thoughts:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return usage
