"""Anthropic's error bodies and types as the gateway's failure kinds, for whole responses and mid-stream events."""

from __future__ import annotations

import orjson

from mmproxy.providers.base import kind_of_status

# Anthropic error type -> gateway failure kind (providers.base.UPSTREAM_KINDS).
ERROR_KINDS = {
    "invalid_request_error": "invalid",
    "authentication_error": "auth",
    "permission_error": "permission",
    "not_found_error": "not_found",
    "rate_limit_error": "rate_limit",
    "overloaded_error": "overloaded",
    "api_error": "server",
    "timeout_error": "timeout",
}


def error_kind(status: int, err_type: str | None, message: str | None) -> str:
    kind = ERROR_KINDS.get(err_type or "") or kind_of_status(status)
    if kind == "invalid" and message and "prompt is too long" in message.lower():
        kind = "context"
    return kind


def parse_error(body: bytes) -> tuple[str | None, str | None]:
    """``{"type": "error", "error": {"type": ..., "message": ...}}`` -> (type, message)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:500].decode("utf-8", "replace").strip()
        return None, text or None
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return None, None
    err_type, message = err.get("type"), err.get("message")
    return (str(err_type) if err_type is not None else None), (str(message) if message is not None else None)
