"""Google Gemini (Generative Language API ``v1beta``): OpenAI chat and embeddings on Gemini's wire format.

JSON schemas are sent as ``parametersJsonSchema`` (tools) and ``responseJsonSchema`` (``response_format:
json_schema``): both take JSON Schema as OpenAI clients write it, where the older ``parameters``/``responseSchema``
take an OpenAPI subset that rejects e.g. ``additionalProperties``, which strict OpenAI schemas always carry.
Request fields that are not OpenAI's pass through to the Gemini body unchanged (``safetySettings``,
``cachedContent``, ...); ``top_k`` goes to ``generationConfig.topK`` as in LiteLLM. The mapping itself is in
``request``, ``response`` and ``stream``.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from mmproxy import tokens
from mmproxy.config import Deployment
from mmproxy.errors import ProxyError, bad_request
from mmproxy.providers.base import (
    Provider,
    StreamTranslator,
    bad_upstream_response,
    kind_of_status,
    upstream_error,
)
from mmproxy.providers.chunks import (
    completion,
    embedding_base64,
    wants_base64,
    wants_usage,
)
from mmproxy.providers.gemini.request import generate_body
from mmproxy.providers.gemini.response import to_choice, to_usage
from mmproxy.providers.gemini.stream import GeminiStream
from mmproxy.upstream.framing import http_request, request_head

# ``user`` is accepted and not sent: it only feeds OpenAI's abuse monitoring, and rejecting it would
# break clients that always send it.
_SUPPORTED = frozenset({
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "max_tokens",
    "max_completion_tokens", "stop", "n", "seed", "presence_penalty", "frequency_penalty",
    "response_format", "tools", "tool_choice", "user",
})
# Google status string -> failure class; the HTTP status decides when the body has none.
_KIND_BY_GOOGLE_STATUS = {
    "INVALID_ARGUMENT": "invalid",
    "FAILED_PRECONDITION": "invalid",
    "OUT_OF_RANGE": "invalid",
    "UNAUTHENTICATED": "auth",
    "PERMISSION_DENIED": "permission",
    "NOT_FOUND": "not_found",
    "RESOURCE_EXHAUSTED": "rate_limit",
    "UNAVAILABLE": "overloaded",
    "INTERNAL": "server",
    "DEADLINE_EXCEEDED": "timeout",
}

class GeminiProvider(Provider):
    supported = _SUPPORTED

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(deployment)
        self.base_path = base_path = urlsplit(deployment.api_base).path.rstrip("/")
        model = deployment.upstream_model
        # "gemini/gemini-2.0-flash" names models/gemini-2.0-flash; a full resource name is kept.
        self._resource = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
        self.model_target = target = f"{base_path}/{quote(self._resource, safe='/')}"
        headers = ["Content-Type: application/json", *self.auth_headers()]
        self._generate_head = request_head("POST", f"{target}:generateContent", self.host, headers)
        self._stream_head = request_head("POST", f"{target}:streamGenerateContent?alt=sse", self.host, headers)
        self._embed_head = request_head("POST", f"{target}:batchEmbedContents", self.host, headers)

    def auth_headers(self) -> list[str]:
        key = self.deployment.api_key
        return [f"x-goog-api-key: {key}"] if key else []

    # -- chat ------------------------------------------------------------------------
    def chat_request(self, payload: dict[str, Any], *, stream_usage: bool = True) -> bytes:
        head = self._stream_head if payload.get("stream") is True else self._generate_head
        return http_request(head, orjson.dumps(generate_body(payload)))

    def chat_body(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The generateContent request for an OpenAI-shaped chat payload."""
        return generate_body(payload)

    def chat_response(self, body: bytes) -> tuple[bytes, dict[str, Any] | None]:
        return self.read_answer(body, self._chat_answer)

    def _chat_answer(self, data: dict[str, Any]) -> tuple[bytes, dict[str, Any] | None]:
        usage = to_usage(data.get("usageMetadata"))
        response_id = data.get("responseId")
        chat_id = f"chatcmpl-{response_id}" if isinstance(response_id, str) and response_id else None
        model = self.deployment.upstream_model
        candidates = data.get("candidates")
        if not candidates:
            feedback = data.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                return completion(model, {"content": ""}, "content_filter", usage, id=chat_id), usage
            raise bad_upstream_response(self.deployment.id)
        if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
            raise bad_upstream_response(self.deployment.id)
        ordered = sorted(candidates, key=lambda c: c.get("index") or 0)
        choices = [to_choice(candidate) for candidate in ordered]
        (message, reason), more = choices[0], choices[1:]
        return completion(model, message, reason, usage, id=chat_id, more=more), usage

    def chat_stream(self, payload: dict[str, Any]) -> StreamTranslator:
        n = payload.get("n")
        if n is not None and n > 1:
            raise bad_request(f"n > 1 is not supported with stream for {self.deployment.provider}", param="n")
        return GeminiStream(self.deployment.upstream_model, wants_usage(payload))

    # -- embeddings ------------------------------------------------------------------
    def embeddings_request(self, payload: dict[str, Any]) -> bytes:
        raw = payload["input"]
        texts = [raw] if isinstance(raw, str) else raw
        if not all(isinstance(text, str) for text in texts):
            raise bad_request("'input' must be text for Gemini embeddings; token arrays are not supported",
                              param="input")
        encoding = payload.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise bad_request("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
        common: dict[str, Any] = {"model": self._resource}
        dimensions = payload.get("dimensions")
        if dimensions is not None:
            if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
                raise bad_request("'dimensions' must be a positive integer", param="dimensions")
            common["outputDimensionality"] = dimensions
        task_type = payload.get("task_type")
        if isinstance(task_type, str):
            common["taskType"] = task_type
        requests = [{**common, "content": {"parts": [{"text": text}]}} for text in texts]
        return http_request(self._embed_head, orjson.dumps({"requests": requests}))

    def embeddings_response(self, body: bytes, payload: dict[str, Any]) -> tuple[bytes, dict[str, Any] | None]:
        """OpenAI's embeddings list. Gemini reports no usage: ``prompt_tokens`` is the o200k estimate
        (``mmproxy.tokens.count``) of the input texts."""
        data = self.load_object(body)
        embeddings = data.get("embeddings")
        if not isinstance(embeddings, list):
            raise bad_upstream_response(self.deployment.id)
        as_base64 = wants_base64(payload)
        texts = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
        prompt_tokens = sum(tokens.count(text) for text in texts)
        out = []
        for index, item in enumerate(embeddings):
            values = item.get("values") if isinstance(item, dict) else None
            if not isinstance(values, list):
                raise bad_upstream_response(self.deployment.id)
            out.append({"object": "embedding", "index": index,
                        "embedding": embedding_base64(values) if as_base64 else values})
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        result = {"object": "list", "data": out, "model": self.deployment.upstream_model, "usage": usage}
        return orjson.dumps(result), usage

    # -- errors ----------------------------------------------------------------------
    def error(self, status: int, body: bytes, retry_after: bytes | None) -> ProxyError:
        message, google_status, details = _parse_error(body)
        kind = _KIND_BY_GOOGLE_STATUS.get(google_status or "") or kind_of_status(status)
        lowered = (message or "").lower()
        if kind in ("invalid", "permission"):
            # A bad key is 400 INVALID_ARGUMENT (reason API_KEY_INVALID); a missing one 403 PERMISSION_DENIED.
            if "api key" in lowered or any(d.get("reason") == "API_KEY_INVALID" for d in details):
                kind = "auth"
            elif status == 400 and ("input token count" in lowered or "exceeds the maximum number of tokens"
                                    in lowered):
                kind = "context"
        if kind == "rate_limit" and retry_after is None:
            retry_after = _retry_delay(details)
        return upstream_error(self.deployment, status, message, kind, retry_after=retry_after)


# -- errors ----------------------------------------------------------------------------
def _parse_error(body: bytes) -> tuple[str | None, str | None, list[dict[str, Any]]]:
    """(message, Google status string, details) of ``{"error": {code, message, status, details}}``."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:500].decode("utf-8", "replace").strip()
        return (text or None), None, []
    if isinstance(data, list) and data:  # the JSON-array stream form wraps the error in a list
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return None, None, []
    message = err.get("message")
    google_status = err.get("status")
    details = err.get("details")
    return (
        str(message) if message is not None else None,
        google_status if isinstance(google_status, str) else None,
        [d for d in details if isinstance(d, dict)] if isinstance(details, list) else [],
    )


def _retry_delay(details: list[dict[str, Any]]) -> bytes | None:
    """Whole seconds (rounded up) of a ``google.rpc.RetryInfo`` detail's ``retryDelay`` ("37s", "0.5s")."""
    for detail in details:
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                seconds = float(delay[:-1])
            except ValueError:
                return None
            if math.isfinite(seconds) and seconds >= 0:
                return str(math.ceil(seconds)).encode()
    return None


__all__ = ["GeminiProvider"]
