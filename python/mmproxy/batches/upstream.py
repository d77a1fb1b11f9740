"""The Files and Batch endpoints of one OpenAI-wire deployment, called with the deployment's own key."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit

import orjson

from mmproxy.errors import ProxyError
from mmproxy.providers.base import http_request
from mmproxy.providers.openai import OpenAIProvider
from mmproxy.server.forwarding import upstream_failure
from mmproxy.upstream.http1 import UpstreamError


class UpstreamBatches:
    def __init__(self, provider: OpenAIProvider) -> None:
        self.provider = provider
        self._base = urlsplit(provider.deployment.api_base).path.rstrip("/")
        self._headers = ["Accept: application/json", *provider.auth_headers()]

    async def _call(self, method: str, operation: str, body: bytes = b"", content_type: str | None = None
                    ) -> bytes:
        provider = self.provider
        headers = self._headers if content_type is None else [f"Content-Type: {content_type}", *self._headers]
        head = provider.request_head(method, provider.endpoint(self._base, operation), headers)
        try:
            exchange = await provider.pool.fetch(http_request(head, body), provider.deployment.timeout)
        except UpstreamError as exc:
            raise upstream_failure(provider.deployment.id, exc) from None
        status, data, retry_after = exchange.status, exchange.body(), exchange.header(b"retry-after")
        exchange.release()
        if status >= 400:
            raise provider.error(status, data, retry_after)
        return data

    async def _json(self, method: str, operation: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        body = b"" if payload is None else orjson.dumps(payload)
        data = await self._call(method, operation, body, None if payload is None else "application/json")
        return self.provider.load_object(data)

    async def upload(self, data: bytes, filename: str) -> str:
        """Upload a batch input file; its upstream id."""
        boundary = secrets.token_hex(16)
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n' \
               f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n' \
               f"Content-Type: application/jsonl\r\n\r\n"
        body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
        raw = await self._call("POST", "files", body, f"multipart/form-data; boundary={boundary}")
        file_id = self.provider.load_object(raw).get("id")
        if not isinstance(file_id, str):
            raise ProxyError(502, f"upstream {self.provider.deployment.id} returned a file without an id",
                             type="upstream_error", code="upstream_bad_response")
        return file_id

    async def create(self, file_id: str, endpoint: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
        payload = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h"}
        if metadata is not None:
            payload["metadata"] = metadata
        return await self._json("POST", "batches", payload)

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        return await self._json("GET", f"batches/{batch_id}")

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        return await self._json("POST", f"batches/{batch_id}/cancel", {})

    async def content(self, file_id: str) -> bytes:
        return await self._call("GET", f"files/{file_id}/content")
