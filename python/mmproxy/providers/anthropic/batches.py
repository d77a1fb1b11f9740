"""Anthropic's Message Batches behind OpenAI's Batch API: the client's chat lines become Messages requests,
Anthropic's results become OpenAI batch output lines with chat completions in them.

Facts of the wire format (Anthropic's documentation): ``POST /v1/messages/batches`` with ``{"requests":
[{"custom_id", "params"}]}``; the batch has a ``processing_status`` (``in_progress``, ``canceling``, ``ended``)
and ``request_counts`` (``processing``, ``succeeded``, ``errored``, ``canceled``, ``expired``); once ended, its
``results_url`` serves JSONL lines ``{"custom_id", "result": {"type": "succeeded", "message"} | {"type":
"errored", "error"} | {"type": "canceled"} | {"type": "expired"}}``. A ``custom_id`` there must match
``[A-Za-z0-9_-]{1,64}``, so a line whose id does not is refused before anything goes upstream.
"""

from __future__ import annotations

import re
import secrets
from typing import Any
from urllib.parse import urlsplit

import orjson

from mmproxy.errors import ProxyError, bad_request
from mmproxy.providers.anthropic.adapter import AnthropicProvider
from mmproxy.providers.batches import ENDPOINT, Fetch, UpstreamBatches, epoch, parse_lines, provider_request

_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_STATUS_OF_ERROR = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
                    "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429,
                    "api_error": 500, "overloaded_error": 529}


class AnthropicBatches(UpstreamBatches):
    def __init__(self, provider: AnthropicProvider, fetch: Fetch) -> None:
        super().__init__(provider, fetch)
        self._anthropic = provider
        self._base = f"{provider.messages_path}/batches"

    async def submit(self, lines: list[dict[str, Any]], name: str, metadata: dict[str, Any] | None
                     ) -> dict[str, Any]:
        requests = [{"custom_id": line["custom_id"], "params": self._params(number, line)}
                    for number, line in enumerate(lines, 1)]
        return _openai_view(await self.call_json("POST", self._base, {"requests": requests}))

    def _params(self, number: int, line: dict[str, Any]) -> dict[str, Any]:
        if not _CUSTOM_ID.fullmatch(line["custom_id"]):
            raise bad_request(f"input file line {number}: custom_id must match [A-Za-z0-9_-]{{1,64}} for a batch "
                              "on an Anthropic deployment", param=f"input_file_id (line {number}: custom_id)")
        return provider_request(self._anthropic, number, line)

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        return _openai_view(await self.call_json("GET", f"{self._base}/{batch_id}"))

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        return _openai_view(await self.call_json("POST", f"{self._base}/{batch_id}/cancel", {}))

    async def results(self, batch: dict[str, Any], custom_ids: list[str]
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        raw = await self.call_json("GET", f"{self._base}/{batch['id']}")
        url = raw.get("results_url")
        if not isinstance(url, str) or not url:
            return [], []
        # The URL's path on the deployment's own origin: the fetch (and key) serve only that host.
        output: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for line in parse_lines(await self.call("GET", urlsplit(url).path)):
            custom_id, result = line.get("custom_id"), line.get("result")
            if not isinstance(custom_id, str) or not isinstance(result, dict):
                continue
            converted = self._line(custom_id, result)
            (output if converted["error"] is None and converted["response"]["status_code"] == 200
             else errors).append(converted)
        return output, errors

    def _line(self, custom_id: str, result: dict[str, Any]) -> dict[str, Any]:
        line: dict[str, Any] = {"id": f"batch_req_{secrets.token_hex(12)}", "custom_id": custom_id,
                                "response": None, "error": None}
        kind = result.get("type")
        if kind == "succeeded" and isinstance(result.get("message"), dict):
            message = result["message"]
            try:
                body, _ = self._anthropic.chat_response(orjson.dumps(message))
            except ProxyError as exc:
                line["error"] = {"code": "upstream_bad_response", "message": exc.args[0]}
                return line
            line["response"] = {"status_code": 200, "request_id": message.get("id"), "body": orjson.loads(body)}
        elif kind == "errored":
            outer = result.get("error")
            err = outer.get("error") if isinstance(outer, dict) else None
            err = err if isinstance(err, dict) else {}
            err_type = str(err.get("type") or "api_error")
            line["response"] = {"status_code": _STATUS_OF_ERROR.get(err_type, 500), "request_id": None, "body": {
                "error": {"message": str(err.get("message") or "the request failed upstream"), "type": err_type,
                          "param": None, "code": None}}}
        else:  # canceled or expired: never run
            never = "batch_expired" if kind == "expired" else "batch_cancelled"
            line["error"] = {"code": never, "message": f"the request was not run: the batch was {kind}"}
        return line


def _openai_view(batch: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic message batch as OpenAI's batch object (the id stays Anthropic's: the job maps it)."""
    counts = batch.get("request_counts")
    counts = counts if isinstance(counts, dict) else {}

    def count(name: str) -> int:
        value = counts.get(name)
        return value if isinstance(value, int) else 0

    failed = count("errored") + count("canceled") + count("expired")
    total = count("processing") + count("succeeded") + failed
    state = batch.get("processing_status")
    if state == "ended":
        if batch.get("cancel_initiated_at"):
            status = "cancelled"
        elif total and count("expired") == total:
            status = "expired"
        else:
            status = "completed"
    else:
        status = "cancelling" if state == "canceling" else "in_progress"
    return {
        "id": batch.get("id"), "object": "batch", "endpoint": ENDPOINT, "errors": None, "completion_window": "24h",
        "status": status, "created_at": epoch(batch.get("created_at")), "in_progress_at": epoch(
            batch.get("created_at")), "expires_at": epoch(batch.get("expires_at")),
        "completed_at": epoch(batch.get("ended_at")) if status == "completed" else None,
        "cancelling_at": epoch(batch.get("cancel_initiated_at")),
        "cancelled_at": epoch(batch.get("ended_at")) if status == "cancelled" else None,
        "expired_at": epoch(batch.get("ended_at")) if status == "expired" else None,
        "failed_at": None, "finalizing_at": None,
        "request_counts": {"total": total, "completed": count("succeeded"), "failed": failed},
    }

