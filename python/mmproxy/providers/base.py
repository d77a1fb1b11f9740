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


class Provider(ABC):
    """Adapter for one upstream deployment (its URLs and credentials pre-encoded)."""

    def __init__(self, deployment: Deployment, pool: UpstreamPool) -> None:
        self.deployment = deployment
        self.pool = pool

    @abstractmethod
    def chat_request(self, payload: dict[str, Any]) -> bytes:
        """Complete HTTP/1.1 request bytes for an OpenAI-shaped chat payload."""

    @abstractmethod
    def embeddings_request(self, payload: dict[str, Any]) -> bytes:
        """Complete HTTP/1.1 request bytes for an OpenAI-shaped embeddings payload."""

    @abstractmethod
    def error(self, status: int, body: bytes, retry_after: bytes | None) -> ProxyError:
        """Map an upstream error response to the gateway's error shape."""

