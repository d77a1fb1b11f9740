"""The dashboard's live request log: each finished request, pushed to open pages.

A request pays for this only while a page is watching: ``publish`` is one truth test when nobody is, and a
plain tuple of the record's values when somebody is (the page formats them; the access log's formatted fields
cost ten times more). Each watcher has a bounded queue; a watcher that falls behind loses the oldest lines
(counted and shown), never slows the requests. Keys are never in a line: a key shows as its alias, else the start
of its hash. Prompts are not either, unless the operator asks for them (``general_settings.ui_log_prompts``):
then a line carries the start of the request's last user message. With ``--workers N`` a page watches the worker
its connection reached.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from mmproxy.pipeline.apis import Inbound, last_user_text
from mmproxy.spend.record import RequestRecord

LINE = ("started", "status", "model", "deployment", "latency_ms", "ttft_ms", "tokens_in", "tokens_out", "cost_usd",
        "cache", "key", "error", "prompt")
"""What each line's values are, in order (the page reads them by position)."""

Line = tuple[Any, ...]
_BACKLOG = 2000  # lines a watcher may fall behind by before the oldest are dropped
_PROMPT_CHARS = 300  # of a prompt shown, when the operator shows prompts


class Watcher:
    """One open live page: the lines it has not yet been sent, and whose they may be."""

    def __init__(self, key_hash: str | None) -> None:
        self.key_hash = key_hash  # None: the master key sees every request
        self.lines: deque[Line] = deque(maxlen=_BACKLOG)
        self.dropped = 0
        self.ready = asyncio.Event()

    def take(self) -> tuple[list[Line], int]:
        lines, dropped = list(self.lines), self.dropped
        self.lines.clear()
        self.dropped = 0
        self.ready.clear()
        return lines, dropped


class LiveLog:
    def __init__(self, prompts: bool = False) -> None:
        self.watchers: set[Watcher] = set()
        self.closed = False
        self.prompts = prompts

    def close(self) -> None:
        """Shutting down: every watcher's feed ends now, so open pages do not hold up a graceful shutdown."""
        self.closed = True
        for watcher in self.watchers:
            watcher.ready.set()

    def publish(self, record: RequestRecord, inbound: Inbound | None = None) -> None:
        if not self.watchers:
            return
        line: Line | None = None
        for watcher in self.watchers:
            if watcher.key_hash is not None and watcher.key_hash != record.key_hash:
                continue
            if line is None:
                line = (record.started, record.status, record.requested_model, record.deployment,
                        record.latency_ms, record.ttft_ms, record.prompt_tokens, record.completion_tokens,
                        record.cost_usd, record.cache, record.key_alias or (record.key_hash or "")[:12] or None,
                        record.error_code, self._prompt(inbound))
            if len(watcher.lines) == _BACKLOG:
                watcher.dropped += 1
            watcher.lines.append(line)
            watcher.ready.set()

    def _prompt(self, inbound: Inbound | None) -> str | None:
        if not self.prompts or inbound is None or inbound.chat is None:
            return None
        return last_user_text(inbound.chat.get("messages") or [])[:_PROMPT_CHARS] or None
