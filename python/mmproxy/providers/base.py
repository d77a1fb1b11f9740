"""The interface every provider adapter implements.

The router and handlers deal in OpenAI-shaped request dicts and raw response
bytes; a provider turns the first into upstream request bytes and maps the
upstream's errors into the gateway's one error shape.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from mmproxy.config import Deployment
from mmproxy.errors import ProxyError
from mmproxy.upstream.http1 import UpstreamPool


class StreamTranslator(ABC):
    """Turns a provider's streamed response body into OpenAI ``chat.completion.chunk`` SSE events.

    ``feed`` gets raw body bytes as they arrive (any split) and returns the complete OpenAI
    events they finish, ``b""`` if none; ``complete`` becomes True once the provider's own
    end-of-stream marker has been translated (including ``data: [DONE]``).
    """

    complete: bool = False
    usage: dict[str, Any] | None = None

    @abstractmethod
    def feed(self, data: bytes) -> bytes: ...


class Provider(ABC):
    """Adapter for one upstream deployment (its URLs and credentials pre-encoded)."""

    def __init__(self, deployment: Deployment, pool: UpstreamPool) -> None:
        self.deployment = deployment
        self.pool = pool

    @abstractmethod
    def chat_request(self, payload: dict[str, Any]) -> bytes:
        """Complete HTTP/1.1 request bytes for an OpenAI-shaped chat payload."""

    @abstractmethod
    def chat_response(self, body: bytes) -> tuple[bytes, dict[str, Any] | None]:
        """A successful upstream chat body as OpenAI ``chat.completion`` JSON, and its usage."""

    def chat_stream(self) -> StreamTranslator | None:
        """A translator for this provider's stream, or None when it already streams OpenAI SSE."""
        return None

    @abstractmethod
    def embeddings_request(self, payload: dict[str, Any]) -> bytes:
        """Complete HTTP/1.1 request bytes for an OpenAI-shaped embeddings payload."""

    @abstractmethod
    def embeddings_response(self, body: bytes) -> tuple[bytes, dict[str, Any] | None]:
        """A successful upstream embeddings body as OpenAI JSON, and its usage."""

    @abstractmethod
    def error(self, status: int, body: bytes, retry_after: bytes | None) -> ProxyError:
        """Map an upstream error response to the gateway's error shape."""



def bad_upstream_response(deployment_id: str) -> ProxyError:
    return ProxyError(502, f"upstream {deployment_id} returned a body that is not a valid response",
                      type="upstream_error", code="upstream_bad_response")
