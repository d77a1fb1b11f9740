"""One deployment's batch service, in the terms of OpenAI's Batch API, which is what the gateway serves.

Each provider that runs batches implements it: ``openai_batches`` (the Files and Batch endpoints of an
OpenAI-wire deployment) and ``anthropic_batches`` (Anthropic's Message Batches). Whatever the provider, the
handlers get OpenAI's shapes back: a batch object (``id``, ``status``, ``request_counts``, ...) and output and
error lines (``{"custom_id", "response": {"status_code", "body"}, "error"}``) whose bodies are chat completions.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from typing import Any, Protocol

import orjson

from mmproxy.errors import ProxyError, bad_request
from mmproxy.providers import Provider
from mmproxy.providers.base import http_request
from mmproxy.upstream import fetch_whole

# Batch states after which nothing changes upstream: the results there are final.
FINAL = frozenset({"completed", "failed", "cancelled", "expired"})
ENDPOINT = "/v1/chat/completions"


class UpstreamBatches(ABC):
    def __init__(self, provider: Provider, auth: list[str]) -> None:
        self.provider = provider
        self._headers = ["Accept: application/json", *auth]

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
        head = provider.request_head(method, target, headers)
        deployment = provider.deployment
        status, data, retry_after = await fetch_whole(provider.pool, http_request(head, body), deployment.timeout,
                                                      deployment.id)
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


def batches_for(provider: Provider) -> UpstreamBatches | None:
    """The deployment's batch service, or None when its provider runs no batches the gateway can drive."""
    from mmproxy.batches.anthropic_batches import AnthropicBatches
    from mmproxy.batches.gemini_batches import GeminiBatches
    from mmproxy.batches.openai_batches import OpenAIBatches
    from mmproxy.providers.anthropic import AnthropicProvider
    from mmproxy.providers.gemini import GeminiProvider
    from mmproxy.providers.openai import OpenAIProvider

    if type(provider) is OpenAIProvider:
        return OpenAIBatches(provider)
    if type(provider) is AnthropicProvider:
        return AnthropicBatches(provider)
    if type(provider) is GeminiProvider:
        return GeminiBatches(provider)
    return None


def epoch(stamp: Any) -> int | None:
    """Epoch seconds of an RFC 3339 timestamp (as Anthropic and Google write them), or None."""
    if not isinstance(stamp, str):
        return None
    try:
        return int(dt.datetime.fromisoformat(stamp).timestamp())
    except ValueError:
        return None
