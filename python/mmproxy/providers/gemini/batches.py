"""Gemini's batch mode behind OpenAI's Batch API: the client's chat lines become inline generateContent
requests, the batch's inlined responses become OpenAI batch output lines with chat completions in them.

Facts of the wire format (Google's Gemini API documentation): ``POST …/models/{model}:batchGenerateContent``
with ``{"batch": {"display_name", "input_config": {"requests": {"requests": [{"request", "metadata"}]}}}}``
answers a long-running operation named ``batches/{id}``; ``GET …/batches/{id}`` shows ``metadata.state``
(``BATCH_STATE_PENDING``, ``_RUNNING``, ``_SUCCEEDED``, ``_FAILED``, ``_CANCELLED``, ``_EXPIRED``) and
``metadata.batchStats``, and once ``done`` carries ``response.inlinedResponses.inlinedResponses``: one
``{"response"}`` or ``{"error"}`` per request, in request order and without the request's metadata, so lines
are matched to their ``custom_id`` by position; ``POST …/batches/{id}:cancel`` cancels.
"""

from __future__ import annotations

from typing import Any

import orjson

from mmproxy.errors import ProxyError
from mmproxy.providers.batches import ENDPOINT, Fetch, UpstreamBatches, epoch, provider_request
from mmproxy.providers.gemini.adapter import GeminiProvider

_STATES = {"BATCH_STATE_SUCCEEDED": "completed", "BATCH_STATE_FAILED": "failed",
           "BATCH_STATE_CANCELLED": "cancelled", "BATCH_STATE_EXPIRED": "expired"}
# google.rpc.Code (an inlined error is a google.rpc.Status: code, message, details) -> HTTP status and name.
_RPC = {1: (499, "CANCELLED"), 3: (400, "INVALID_ARGUMENT"), 4: (504, "DEADLINE_EXCEEDED"), 5: (404, "NOT_FOUND"),
        7: (403, "PERMISSION_DENIED"), 8: (429, "RESOURCE_EXHAUSTED"), 9: (400, "FAILED_PRECONDITION"),
        11: (400, "OUT_OF_RANGE"), 13: (500, "INTERNAL"), 14: (503, "UNAVAILABLE"), 16: (401, "UNAUTHENTICATED")}
_NEVER_RUN = {"cancelled": "batch_cancelled", "expired": "batch_expired", "failed": "batch_failed"}


class GeminiBatches(UpstreamBatches):
    def __init__(self, provider: GeminiProvider, fetch: Fetch) -> None:
        super().__init__(provider, fetch)
        self._gemini = provider

    async def submit(self, lines: list[dict[str, Any]], name: str, metadata: dict[str, Any] | None
                     ) -> dict[str, Any]:
        requests = [{"request": provider_request(self._gemini, number, line),
                     "metadata": {"key": line["custom_id"]}} for number, line in enumerate(lines, 1)]
        batch = {"display_name": name, "input_config": {"requests": {"requests": requests}}}
        operation = await self.call_json("POST", f"{self._gemini.model_target}:batchGenerateContent",
                                         {"batch": batch})
        return _openai_view(operation)

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        return _openai_view(await self._operation(batch_id))

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        await self.call_json("POST", f"{self._gemini.base_path}/{batch_id}:cancel", {})
        return await self.retrieve(batch_id)

    async def _operation(self, batch_id: str) -> dict[str, Any]:
        return await self.call_json("GET", f"{self._gemini.base_path}/{batch_id}")

    async def results(self, batch: dict[str, Any], custom_ids: list[str]
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        operation = await self._operation(batch["id"])
        status = _openai_view(operation)["status"]
        entries: Any = None
        meta = operation.get("metadata")
        for found in (operation.get("response"), meta.get("output") if isinstance(meta, dict) else None):
            inlined = found.get("inlinedResponses") if isinstance(found, dict) else None
            entries = inlined.get("inlinedResponses") if isinstance(inlined, dict) else None
            if isinstance(entries, list):
                break  # the operation's response; the batch's own output field as the fallback
        entries = entries if isinstance(entries, list) else []
        output: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for index, custom_id in enumerate(custom_ids):
            entry = entries[index] if index < len(entries) and isinstance(entries[index], dict) else None
            line = self._line(index, custom_id, entry, status)
            (output if line["response"] is not None and line["response"]["status_code"] == 200 else errors
             ).append(line)
        return output, errors

    def _line(self, index: int, custom_id: str, entry: dict[str, Any] | None, status: str) -> dict[str, Any]:
        line: dict[str, Any] = {"id": f"batch_req_{index}", "custom_id": custom_id, "response": None, "error": None}
        if entry is None:  # never run: the batch ended first
            never = _NEVER_RUN.get(status, "batch_incomplete")
            line["error"] = {"code": never, "message": f"the request was not run: the batch is {status}"}
        elif isinstance(entry.get("response"), dict):
            try:
                body, _ = self._gemini.chat_response(orjson.dumps(entry["response"]))
            except ProxyError as exc:
                line["error"] = {"code": "upstream_bad_response", "message": exc.args[0]}
                return line
            line["response"] = {"status_code": 200, "request_id": None, "body": orjson.loads(body)}
        else:
            err = entry.get("error")
            err = err if isinstance(err, dict) else {}
            code = err.get("code")
            http, name = _RPC.get(code, (500, "UNKNOWN")) if isinstance(code, int) else (500, "UNKNOWN")
            line["response"] = {"status_code": http, "request_id": None, "body": {"error": {
                "message": str(err.get("message") or "the request failed upstream"), "type": name, "param": None,
                "code": None}}}
        return line


def _openai_view(operation: dict[str, Any]) -> dict[str, Any]:
    """A Gemini batch operation as OpenAI's batch object (the id stays Gemini's ``batches/…`` name)."""
    meta = operation.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    status = _STATES.get(str(meta.get("state")), "in_progress")
    stats = meta.get("batchStats")
    stats = stats if isinstance(stats, dict) else {}

    def count(name: str) -> int:
        try:
            return int(stats.get(name) or 0)
        except (TypeError, ValueError):
            return 0

    end = epoch(meta.get("endTime"))
    return {
        "id": operation.get("name"), "object": "batch", "endpoint": ENDPOINT, "errors": None,
        "completion_window": "24h", "status": status, "created_at": epoch(meta.get("createTime")),
        "in_progress_at": epoch(meta.get("createTime")), "expires_at": None, "finalizing_at": None,
        "completed_at": end if status == "completed" else None, "failed_at": end if status == "failed" else None,
        "cancelled_at": end if status == "cancelled" else None, "expired_at": end if status == "expired" else None,
        "cancelling_at": None,
        "request_counts": {"total": count("requestCount"), "completed": count("successfulRequestCount"),
                           "failed": count("failedRequestCount")},
    }

