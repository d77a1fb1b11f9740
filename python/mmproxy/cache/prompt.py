"""Automatic Anthropic prompt-cache breakpoints, placed on prefixes this gateway has seen before.

Anthropic caches a prompt prefix only up to a ``cache_control`` breakpoint, bills writing it at 1.25x the
input price and reading it at 0.1x. A breakpoint on a prefix that never comes back is a 25% surcharge, so
the planner marks only prefixes that an earlier request already sent: the Rust prefix hashes (one per
message, tools included) identify them in a bounded LRU set. Two marks at most: the end of the system
prompt (stable by design) and the deepest earlier prefix of the conversation, which is what the next turn
of a chat re-sends. Requests that carry their own ``cache_control`` are left as the client wrote them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson

from mmproxy import hashing, tokens

_EPHEMERAL = {"type": "ephemeral"}
_SYSTEM_ROLES = ("system", "developer")


def min_cacheable_tokens(model: str) -> int:
    """Anthropic's minimum prefix length: shorter prefixes are never cached (and a mark there is wasted)."""
    if "haiku-4" in model:
        return 4096
    if "haiku" in model:
        return 2048
    return 1024


class PromptCachePlanner:
    def __init__(self, capacity: int = 100_000) -> None:
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._capacity = capacity

    def plan(self, raw: bytes, payload: dict[str, Any], model: str) -> list[int]:
        """Mark ``payload`` (OpenAI shape) in place; the indexes of the marked messages."""
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages or _has_marks(payload):
            return []
        try:
            hashes = hashing.prefix_hashes(raw)
        except ValueError:
            return []
        seen = self._seen
        minimum = min_cacheable_tokens(model)
        tools = payload.get("tools")
        total = tokens.count(orjson.dumps(tools).decode()) if tools else 0
        cumulative = []
        for message in messages:
            total += _message_tokens(message)
            cumulative.append(total)
        marks: list[int] = []
        system_end = -1
        while system_end + 1 < len(messages) and _role(messages[system_end + 1]) in _SYSTEM_ROLES:
            system_end += 1
        if system_end >= 0 and hashes[system_end] in seen and cumulative[system_end] >= minimum:
            marks.append(system_end)
        for index in range(len(messages) - 2, system_end, -1):  # never the final message: it is new
            if hashes[index] in seen:
                if cumulative[index] >= minimum:
                    marks.append(index)
                break
        for value in hashes:
            seen[value] = None
            seen.move_to_end(value)
        while len(seen) > self._capacity:
            seen.popitem(last=False)
        if marks:
            messages = payload["messages"] = list(messages)  # the client's list stays as it was, for retries
            for index in marks:
                messages[index] = {**messages[index], "cache_control": _EPHEMERAL}
        return marks


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, dict) else None


def _message_tokens(message: Any) -> int:
    if not isinstance(message, dict):
        return 0
    content = message.get("content")
    if isinstance(content, str):
        return tokens.count(content) + 4
    if isinstance(content, list):
        text = " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        return tokens.count(text) + 4
    return 4


def _has_marks(payload: dict[str, Any]) -> bool:
    if "cache_control" in payload:
        return True
    for message in payload["messages"]:
        if not isinstance(message, dict):
            continue
        if "cache_control" in message:
            return True
        content = message.get("content")
        if isinstance(content, list) and any(isinstance(p, dict) and "cache_control" in p for p in content):
            return True
    tools = payload.get("tools")
    return isinstance(tools, list) and any(isinstance(t, dict) and "cache_control" in t for t in tools)
