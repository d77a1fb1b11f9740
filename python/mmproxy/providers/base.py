"""The interface every provider adapter implements.

The router and handlers deal in OpenAI-shaped request dicts and raw response
bytes; a provider turns the first into upstream request bytes and maps the
upstream's errors into the gateway's one error shape.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from mmproxy.errors import ProxyError
from mmproxy.headers import header_text
from mmproxy.upstream.framing import origin

if TYPE_CHECKING:  # the config reads the provider registry, which imports this module
    from mmproxy.config import Deployment

T = TypeVar("T")


class StreamTranslator(ABC):
    """Turns a provider's streamed response body into OpenAI ``chat.completion.chunk`` SSE events.

    ``feed`` gets raw body bytes as they arrive (any split) and returns the complete OpenAI
    events they finish, ``b""`` if none; ``complete`` becomes True once the provider's own
    end-of-stream marker has been translated (including ``data: [DONE]``). ``failed``
    becomes True when the translator itself emitted an error event (an upstream error
    inside the stream), so the relay does not add a second one.
    """

    complete: bool = False
    failed: bool = False
    usage: dict[str, Any] | None = None

    @abstractmethod
    def feed(self, data: bytes) -> bytes: ...


class ChainedTranslator(StreamTranslator):
    """Provider wire format → OpenAI SSE → another client-facing format, in one feed."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, inner: StreamTranslator, outer: StreamTranslator) -> None:
        self._inner = inner
        self._outer = outer

    def feed(self, data: bytes) -> bytes:
        middle = self._inner.feed(data)
        return self._outer.feed(middle) if middle else b""

    @property
    def complete(self) -> bool:  # type: ignore[override]
        return self._outer.complete

    @property
    def usage(self) -> dict[str, Any] | None:  # type: ignore[override]
        return self._inner.usage or self._outer.usage

    @property
    def failed(self) -> bool:  # type: ignore[override]
        return self._inner.failed or self._outer.failed


# The request fields OpenAI defines. A translating provider maps a subset (``supported``);
# one it cannot map is a 400 naming it, or dropped when ``drop_params`` is on. Fields outside
# this set are provider-specific extras and pass through to the upstream body unchanged.
OPENAI_PARAMS = frozenset({
    "model", "messages", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens",
    "max_completion_tokens", "n", "presence_penalty", "response_format", "seed", "service_tier", "stop",
    "stream", "stream_options", "temperature", "top_p", "tools", "tool_choice", "parallel_tool_calls", "user",
    "functions", "function_call", "metadata", "store", "reasoning_effort", "modalities", "audio", "prediction",
    "web_search_options",
})


# OpenAI fields that LiteLLM clients send for the gateway's own use (logging, tags): a provider that
# cannot express them never sees them, and it is not an error.
_GATEWAY_FIELDS = frozenset({"metadata"})


class Provider(ABC):
    """Adapter for one upstream deployment: its wire format, URLs and credentials pre-encoded.

    It only makes and reads bytes; sending them is the caller's (``upstream.http1``), so one adapter serves
    the request path, batch clients and tests alike.
    """

    # OpenAI request fields this provider can express; None means all (an OpenAI-wire upstream).
    supported: frozenset[str] | None = None

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.host = origin(deployment.api_base).host_header  # the Host header of every request

    def auth_headers(self) -> list[str]:
        """The headers that carry the deployment's key: a Bearer token, as OpenAI-wire servers (and an Ollama
        behind an authenticating proxy) take it; a provider with its own scheme overrides this."""
        key = self.deployment.api_key
        return [f"Authorization: Bearer {key}"] if key else []

    def check_params(self, payload: dict[str, Any]) -> None:
        """Reject (or, with ``drop_params``, remove) OpenAI fields this provider cannot express."""
        supported = self.supported
        if supported is None:
            return
        for key in [k for k in payload if k in OPENAI_PARAMS and k not in supported]:
            if key in _GATEWAY_FIELDS or self.deployment.drop_params:
                del payload[key]
            else:
                raise ProxyError(
                    400,
                    f"parameter {key!r} is not supported by {self.deployment.provider}/"
                    f"{self.deployment.upstream_model}; set drop_params: true to drop it",
                    param=key,
                    code="unsupported_parameter",
                )

    def load_object(self, body: bytes) -> dict[str, Any]:
        """A successful upstream body as a JSON object; anything else is a bad upstream response."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise bad_upstream_response(self.deployment.id) from None
        if not isinstance(data, dict):
            raise bad_upstream_response(self.deployment.id)
        return data

    def read_answer(self, body: bytes, translate: Callable[[dict[str, Any]], T]) -> T:
        """``translate`` of a successful upstream body's JSON object. A field of another type than the provider's
        API defines (a block that is no object, a count that is text) makes it a bad upstream response (502),
        never an internal error: the body comes from outside."""
        data = self.load_object(body)
        try:
            return translate(data)
        except (AttributeError, TypeError, KeyError, IndexError):
            raise bad_upstream_response(self.deployment.id) from None

    @abstractmethod
    def chat_request(self, payload: dict[str, Any], *, stream_usage: bool = True) -> bytes:
        """Complete HTTP/1.1 request bytes for an OpenAI-shaped chat payload.

        ``stream_usage``: the gateway needs a stream's usage (to price it); an adapter whose upstream
        reports it only on request asks for it.
        """

    @abstractmethod
    def chat_response(self, body: bytes) -> tuple[bytes, dict[str, Any] | None]:
        """A successful upstream chat body as OpenAI ``chat.completion`` JSON, and its usage."""

    def chat_stream(self, payload: dict[str, Any]) -> StreamTranslator | None:
        """A translator for this provider's stream, or None when it already streams OpenAI SSE.

        Called before ``chat_request``, with the client's payload.
        """
        return None

    def messages_request(self, body: dict[str, Any]) -> bytes | None:
        """An Anthropic Messages request sent as is (model rewritten), or None to translate it instead.

        Only a provider that speaks the Messages API natively returns bytes; it then also
        implements ``messages_response`` and ``messages_stream``.
        """
        return None

    def count_tokens_request(self, body: dict[str, Any]) -> bytes | None:
        """An Anthropic ``count_tokens`` request for the provider's own count, or None: the gateway counts."""
        return None

    def messages_response(self, body: bytes) -> tuple[bytes, dict[str, Any] | None]:
        """A passed-through Messages response, unchanged, and its usage in OpenAI's shape."""
        raise NotImplementedError

    def messages_stream(self) -> StreamTranslator:
        """A relay for a passed-through Messages stream: events unchanged, end and usage observed."""
        raise NotImplementedError

    @abstractmethod
    def embeddings_request(self, payload: dict[str, Any]) -> bytes:
        """Complete HTTP/1.1 request bytes for an OpenAI-shaped embeddings payload."""

    @abstractmethod
    def embeddings_response(self, body: bytes, payload: dict[str, Any]) -> tuple[bytes, dict[str, Any] | None]:
        """A successful upstream embeddings body as OpenAI JSON (shaped as ``payload`` asked), and its usage."""

    @abstractmethod
    def error(self, status: int, body: bytes, retry_after: bytes | None) -> ProxyError:
        """Map an upstream error response to the gateway's error shape."""


# Upstream failure classes, the same for every provider: kind -> (status, type, default code).
# Adapters decide the kind from their provider's status and error body; nothing else varies.
UPSTREAM_KINDS: dict[str, tuple[int, str, str]] = {
    "invalid": (400, "invalid_request_error", "invalid_request"),
    "context": (400, "invalid_request_error", "context_length_exceeded"),
    "content_policy": (400, "invalid_request_error", "content_policy_violation"),
    "auth": (401, "authentication_error", "upstream_auth_failed"),
    "permission": (403, "permission_error", "upstream_permission_denied"),
    "not_found": (404, "invalid_request_error", "model_not_found"),
    "rate_limit": (429, "rate_limit_error", "rate_limit_exceeded"),
    "overloaded": (503, "upstream_error", "overloaded"),
    "server": (502, "upstream_error", "upstream_error"),
    "timeout": (504, "upstream_error", "upstream_timeout"),
}


def kind_of_status(status: int) -> str:
    """The failure class an HTTP status implies when the body says nothing more specific."""
    if status in (401,):
        return "auth"
    if status == 403:
        return "permission"
    if status == 404:
        return "not_found"
    if status == 408:
        return "timeout"
    if status == 429:
        return "rate_limit"
    if status in (503, 529):
        return "overloaded"
    if status >= 500:
        return "server"
    return "invalid"


def upstream_error(
    deployment: Deployment,
    status: int,
    message: str | None,
    kind: str,
    *,
    code: str | None = None,
    retry_after: bytes | None = None,
) -> ProxyError:
    """The gateway's error for an upstream failure: status and type by ``kind``, the upstream's words kept.

    When the provider refused the deployment's own credentials, its words and code (OpenAI's ``invalid_api_key``)
    would read as the client's key being wrong, so that error says whose key it is and has the gateway's code
    (``upstream_auth_failed``).
    """
    out_status, err_type, default_code = UPSTREAM_KINDS[kind]
    if kind == "invalid" and 400 <= status < 500:
        out_status = status  # 413, 422... keep the upstream's own verdict on the request
    label = f"upstream {deployment.id} returned HTTP {status}"
    if kind == "auth":
        label += " refusing the gateway's own credentials for it (not the client's API key)"
        code = None
    text = f"{label}: {message}" if message else label
    if deployment.api_key and deployment.api_key in text:
        text = text.replace(deployment.api_key, "[redacted]")
    headers = {"Retry-After": header_text(retry_after.decode("latin-1"), 64)} if retry_after else None
    if kind == "server":
        code = code or f"upstream_{status}"
    return ProxyError(out_status, text, type=err_type, code=code or default_code, headers=headers, kind=kind)


def bad_upstream_response(deployment_id: str) -> ProxyError:
    return ProxyError(502, f"upstream {deployment_id} returned a body that is not a valid response",
                      type="upstream_error", code="upstream_bad_response", kind="server")
