"""OpenAI-shaped errors: the one error shape every client of the gateway sees."""

from __future__ import annotations

import orjson


class ProxyError(Exception):
    """An error that becomes an OpenAI-shaped HTTP response.

    Raised anywhere on the request path; the handler layer turns it into
    ``{"error": {"message", "type", "param", "code"}}`` with ``status``. ``kind`` is the
    provider-independent class of an upstream failure (see ``providers.base.UPSTREAM_KINDS``),
    which is what retry and fallback decisions look at.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def bad_request(message: str, *, param: str | None = None, code: str = "invalid_request") -> ProxyError:
    return ProxyError(400, message, param=param, code=code)


def auth_error(message: str) -> ProxyError:
    return ProxyError(401, message, type="authentication_error", code="invalid_api_key")
