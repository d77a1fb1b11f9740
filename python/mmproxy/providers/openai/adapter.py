"""OpenAI and every server that speaks its wire format.

The request is forwarded with only ``model`` rewritten, so fields the gateway
does not know about still reach the upstream unchanged.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson

from mmproxy.config import Deployment
from mmproxy.errors import ProxyError
from mmproxy.providers.base import Provider, kind_of_status, upstream_error
from mmproxy.providers.chunks import wants_usage
from mmproxy.upstream.framing import http_request, request_head


class OpenAIProvider(Provider):
    def __init__(self, deployment: Deployment) -> None:
        super().__init__(deployment)
        self.base_path = base_path = urlsplit(deployment.api_base).path.rstrip("/")
        headers = ["Content-Type: application/json", "Accept: application/json, text/event-stream"]
        headers += self.auth_headers()
        self._chat_head = request_head("POST", self.endpoint(base_path, "chat/completions"), self.host, headers)
        self._embed_head = request_head("POST", self.endpoint(base_path, "embeddings"), self.host, headers)

    def endpoint(self, base_path: str, operation: str) -> str:
        """Request target of ``operation``: LiteLLM appends it to ``api_base``."""
        return f"{base_path}/{operation}"

    def chat_request(self, payload: dict[str, Any], *, stream_usage: bool = True) -> bytes:
        payload["model"] = self.deployment.upstream_model
        if stream_usage and payload.get("stream") is True and not wants_usage(payload):
            # Every stream is priced from the upstream's own usage; the relay drops the usage chunk
            # again for a client that did not ask for it.
            options = payload.get("stream_options")
            payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        return http_request(self._chat_head, orjson.dumps(payload))

    def chat_response(self, body: bytes) -> tuple[bytes, dict[str, Any] | None]:
        return body, self._usage(body)

    def embeddings_response(self, body: bytes, payload: dict[str, Any]) -> tuple[bytes, dict[str, Any] | None]:
        return body, self._usage(body)

    def _usage(self, body: bytes) -> dict[str, Any] | None:
        """Check the body is JSON (the client must not get garbage as a 200) and take its usage."""
        usage = self.load_object(body).get("usage")
        return usage if isinstance(usage, dict) else None

    def embeddings_request(self, payload: dict[str, Any]) -> bytes:
        payload["model"] = self.deployment.upstream_model
        return http_request(self._embed_head, orjson.dumps(payload))

    def error(self, status: int, body: bytes, retry_after: bytes | None) -> ProxyError:
        message, code, _ = _parse_error(body)
        kind = kind_of_status(status)
        if code == "context_length_exceeded" or (
            status == 400 and message is not None and "maximum context length" in message
        ):
            kind = "context"
        elif code == "content_filter" or code == "content_policy_violation":
            kind = "content_policy"
        return upstream_error(self.deployment, status, message, kind, code=code, retry_after=retry_after)


def _parse_error(body: bytes) -> tuple[str | None, str | None, str | None]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:500].decode("utf-8", "replace").strip()
        return (text or None), None, None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        message = err.get("message")
        code = err.get("code")
        err_type = err.get("type")
        return (
            str(message) if message is not None else None,
            str(code) if code is not None else None,
            str(err_type) if err_type is not None else None,
        )
    if isinstance(err, str):
        return err, None, None
    return None, None, None
