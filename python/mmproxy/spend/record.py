"""What one client request cost and how it went: the unit of the spend ledger and of the metrics.

A handler fills one record as the request moves through auth, routing, cache and upstream attempts, and
hands it to the ledger and the metrics once the client has its answer. Retries, fallbacks and escalations
add to the same record, so the cost of a request includes every attempt it caused.
"""

from __future__ import annotations

import operator
import time

__all__ = ["COLUMNS", "RequestRecord"]


class RequestRecord:
    """Mutable while the request runs; read-only once handed to the ledger."""

    __slots__ = (
        "cache",
        "cache_write_tokens",
        "cached_tokens",
        "completion_tokens",
        "cost_usd",
        "decision",
        "deployment",
        "endpoint",
        "error_code",
        "fallbacks",
        "key_alias",
        "key_hash",
        "latency_ms",
        "model_group",
        "overhead_ms",
        "parent_id",
        "pii",
        "prompt_tokens",
        "provider",
        "request_id",
        "requested_model",
        "retries",
        "rule",
        "saved_usd",
        "started",
        "status",
        "stream",
        "team_id",
        "tier",
        "ttft_ms",
    )

    def __init__(self, request_id: str, endpoint: str) -> None:
        self.request_id = request_id
        self.endpoint = endpoint  # "chat" | "messages" | "embeddings"
        self.started = time.time()  # epoch seconds
        self.key_hash: str | None = None  # sha256 hex of the virtual key; None for the master key or no auth
        self.key_alias: str | None = None
        self.team_id: str | None = None
        self.requested_model = ""
        self.model_group: str | None = None  # the group that answered (after rules and fallbacks)
        self.deployment: str | None = None  # model_info.id of the deployment that answered
        self.provider: str | None = None
        self.tier: str | None = None
        self.rule: str | None = None  # routing rule that matched
        self.stream = False
        self.prompt_tokens = 0  # includes cached and cache-write tokens, as OpenAI counts them
        self.completion_tokens = 0
        self.cached_tokens = 0  # prompt tokens read from the provider's prompt cache
        self.cache_write_tokens = 0  # prompt tokens written to the provider's prompt cache
        self.cost_usd = 0.0  # every attempt's cost
        self.saved_usd = 0.0  # what a gateway cache hit or a provider cache read saved
        self.cache: str | None = None  # "hit" | "semantic-hit" | "miss"; None when caching is off
        self.latency_ms = 0.0  # request received -> last byte sent
        self.ttft_ms: float | None = None  # streams: request received -> first event sent
        self.overhead_ms: float | None = None  # time spent in the gateway itself
        self.status = 200  # HTTP status the client got (a stream cut mid-way keeps its 200 and sets error_code)
        self.error_code: str | None = None
        self.retries = 0  # further attempts within a group
        self.fallbacks = 0  # groups tried after the requested one
        self.decision: str | None = None  # a learned router's or cascade's decision, as JSON text
        self.parent_id: str | None = None  # a virtual model's sub-call: the client request it served
        self.pii: str | None = None  # sensitive data found, as kinds and counts ("card:1,email:2"), never values

    @property
    def succeeded(self) -> bool:
        return self.status < 400 and self.error_code is None

    def row(self) -> tuple[object, ...]:
        """The record in ``COLUMNS`` order, as the ledger stores it."""
        return _ROW(self)


COLUMNS: tuple[str, ...] = (
    "request_id",
    "started",
    "endpoint",
    "key_hash",
    "key_alias",
    "team_id",
    "requested_model",
    "model_group",
    "deployment",
    "provider",
    "tier",
    "rule",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "cost_usd",
    "saved_usd",
    "cache",
    "latency_ms",
    "ttft_ms",
    "overhead_ms",
    "status",
    "error_code",
    "retries",
    "fallbacks",
    "decision",
    "parent_id",
    "pii",
)
"""Ledger column order. ``started`` is stored as a timestamp; the rest keep their Python types."""
_ROW = operator.attrgetter(*COLUMNS)
