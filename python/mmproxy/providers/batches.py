"""One deployment's batch service, in the terms of OpenAI's Batch API, which is what the gateway serves.

Each provider that runs batches implements it in its folder's ``batches`` module (OpenAI's Files and Batch
endpoints, Azure's versions of them, Anthropic's Message Batches, Gemini's batch mode). Whatever the provider,
the gateway gets OpenAI's shapes back: a batch object (``id``, ``status``, ``request_counts``, ...) and output
and error lines (``{"custom_id", "response": {"status_code", "body"}, "error"}``) whose bodies are chat
completions. A client makes the requests; the ``fetch`` it is given sends them, so it holds no connection.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from mmproxy.errors import ProxyError, bad_request
from mmproxy.providers.base import Provider
from mmproxy.upstream.framing import http_request, request_head

# Sends one framed request to the deployment: (status, body, Retry-After header).
Fetch = Callable[[bytes], Awaitable[tuple[int, bytes, bytes | None]]]

# Batch states after which nothing changes upstream: the results there are final.
FINAL = frozenset({"completed", "failed", "cancelled", "expired"})
ENDPOINT = "/v1/chat/completions"


class UpstreamBatches(ABC):
    def __init__(self, provider: Provider, fetch: Fetch) -> None:
        self.provider = provider
        self._fetch = fetch
        self._headers = ["Accept: application/json", *provider.auth_headers()]

    @abstractmethod
    async def submit(self, lines: list[dict[str, Any]], name: str, metadata: dict[str, Any] | None
                     ) -> dict[str, Any]:
        """Start a batch of the client's request lines (model names already the client's); its batch object."""

    @abstractmethod
    async def retrieve(self, batch_id: str) -> dict[str, Any]: ...

    @abstractmethod
    async def cancel(self, batch_id: str) -> dict[str, Any]: ...

    @abstractmethod
    async def results(self, batch: dict[str, Any], custom_ids: list[str]
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A finished batch's output lines and error lines (``custom_ids``: the requests' ids, in order)."""

    async def call(self, method: str, target: str, body: bytes = b"", content_type: str | None = None) -> bytes:
        """One request to the deployment with its own key; an upstream error becomes the gateway's error."""
        provider = self.provider
        headers = self._headers if content_type is None else [f"Content-Type: {content_type}", *self._headers]
        head = request_head(method, target, provider.host, headers)
        status, data, retry_after = await self._fetch(http_request(head, body))
        if status >= 400:
            raise self.provider.error(status, data, retry_after)
        return data

    async def call_json(self, method: str, target: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        body = b"" if payload is None else orjson.dumps(payload)
        data = await self.call(method, target, body, None if payload is None else "application/json")
        return self.provider.load_object(data)


class Translating(Protocol):
    """A provider that builds its own request body for an OpenAI chat payload (Anthropic, Gemini)."""

    def check_params(self, payload: dict[str, Any]) -> None: ...

    def chat_body(self, payload: dict[str, Any]) -> dict[str, Any]: ...


def provider_request(provider: Translating, number: int, line: dict[str, Any]) -> dict[str, Any]:
    """The provider's request for batch line ``number``'s chat body; a 400 naming the line when it cannot be made."""
    body = {k: v for k, v in line["body"].items() if k not in ("stream", "stream_options")}
    try:
        provider.check_params(body)
        return provider.chat_body(body)
    except (ProxyError, KeyError, TypeError, AttributeError) as exc:
        why = exc.args[0] if isinstance(exc, ProxyError) else "body.messages must be a list of chat messages"
        raise bad_request(f"input file line {number}: {why}", param=f"input_file_id (line {number}: body)") from None


def epoch(stamp: Any) -> int | None:
    """Epoch seconds of an RFC 3339 timestamp (as Anthropic and Google write them), or None."""
    if not isinstance(stamp, str):
        return None
    try:
        return int(dt.datetime.fromisoformat(stamp).timestamp())
    except ValueError:
        return None


def parse_lines(data: bytes) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file; a line that is not one is skipped (an upstream's garbage is not ours)."""
    out = []
    for raw in data.splitlines():
        if raw.strip():
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(line, dict):
                out.append(line)
    return out
