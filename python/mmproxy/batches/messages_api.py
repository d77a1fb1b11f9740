"""Anthropic's Message Batches API in front of any batch-capable deployment (Anthropic or OpenAI-wire).

Why through OpenAI's terms: the gateway's batch machinery (jobs, upstreams, collecting results once, pricing each
line at the batch discount) speaks OpenAI's Batch API, and every upstream implements it (``upstream``). So each
request's ``params`` is translated to a chat body as ``POST /v1/messages`` does for non-Anthropic models, the batch
runs as any gateway batch, and its output and error lines are translated back into Anthropic's result lines
(``succeeded`` with the message, ``errored`` with the error, ``canceled``, ``expired``). All requests of a batch
must name one model (a gateway batch runs on one deployment); Anthropic allows mixing, the gateway refuses it
with a 400 naming the request.
"""

from __future__ import annotations

import builtins
import datetime as dt
import re
from typing import Any

import orjson
from aiohttp import web

from mmproxy.batches.api import BatchAPI
from mmproxy.batches.jobs import Job
from mmproxy.errors import ProxyError, bad_request
from mmproxy.inbound import anthropic as anthropic_inbound
from mmproxy.pipeline.call import Call
from mmproxy.providers.batches import ENDPOINT, FINAL, parse_lines
from mmproxy.validation import query_int, refuse_upstream_override

_BASE = "/v1/messages/batches"
_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_LIST = 1000
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}


def _json(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _stamp(epoch: Any) -> str | None:
    if not isinstance(epoch, (int, float)):
        return None
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class MessageBatchAPI:
    def __init__(self, batches: BatchAPI) -> None:
        self._batches = batches
        self._pipeline = batches.pipeline

    async def create(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        caller = await self._pipeline.authorize(request, call)
        body, _ = await self._pipeline.read_json(request)
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise bad_request("requests: a non-empty list of {custom_id, params} is required", param="requests")
        lines: list[dict[str, Any]] = []
        seen: set[str] = set()
        model: str | None = None
        for i, item in enumerate(requests):
            where = f"requests.{i}"
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id) or custom_id in seen:
                raise bad_request(f"{where}.custom_id: must match [A-Za-z0-9_-]{{1,64}} and be unique in the batch",
                                  param=f"{where}.custom_id")
            params = item.get("params")
            if not isinstance(params, dict) or params.get("stream") is True:
                raise bad_request(f"{where}.params: a Messages request without stream is required",
                                  param=f"{where}.params")
            refuse_upstream_override(params, f"{where}.params.")
            try:
                chat = anthropic_inbound.to_openai(params)
            except ProxyError as exc:
                raise bad_request(f"{where}.params: {exc.message}", param=f"{where}.params.{exc.param or ''}"
                                  .rstrip(".")) from None
            if model is not None and chat["model"] != model:
                raise bad_request(f"{where}.params.model: {chat['model']!r} differs from {model!r}; a batch through "
                                  "the gateway uses one model", param=f"{where}.params.model")
            model = chat["model"]
            seen.add(custom_id)
            lines.append({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": chat})
        assert model is not None
        job = await self._batches.start(caller, call, model, lines, None, input_file_id="", api="anthropic")
        return _json(self._view(job, request))

    async def list(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        caller = await self._pipeline.authorize(request, call)
        limit = query_int(request.query.get("limit"), "limit", 20, _MAX_LIST)
        jobs = self._batches.visible(caller, "anthropic")
        after = request.query.get("after_id")
        if after is not None:
            ids = [j.id for j in jobs]
            jobs = jobs[ids.index(after) + 1:] if after in ids else []
        page = jobs[:limit]
        data = [self._view(j, request) for j in page]
        return _json({"data": data, "has_more": len(jobs) > len(page), "first_id": data[0]["id"] if data else None,
                      "last_id": data[-1]["id"] if data else None})

    async def item(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """``GET /v1/messages/batches/{id}``, ``GET …/{id}/results`` and ``POST …/{id}/cancel``."""
        caller = await self._pipeline.authorize(request, call)
        ident, _, action = request.path.removeprefix(f"{_BASE}/").partition("/")
        route = (request.method, action)
        if route == ("GET", ""):
            return _json(self._view(await self._batches.refresh(caller, ident, "anthropic"), request))
        if route == ("GET", "results"):
            job = await self._batches.refresh(caller, ident, "anthropic")
            if not job.collected:
                raise bad_request(f"message batch {ident!r} is still processing; its results are not ready")
            return web.Response(body=self._results(job), content_type="application/x-jsonl")
        if route == ("POST", "cancel"):
            return _json(self._view(await self._batches.cancel(caller, ident, "anthropic"), request))
        raise ProxyError(404, f"no route for {request.method} {request.path}", code="not_found")

    # -- Anthropic's shapes ----------------------------------------------------------------------
    def _lines(self, file_id: str | None) -> builtins.list[dict[str, Any]]:
        return parse_lines(self._batches.files.content(file_id)) if file_id else []

    def _view(self, job: Job, request: web.BaseRequest) -> dict[str, Any]:
        batch = job.batch
        status = batch.get("status")
        ended = job.collected or status in FINAL
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if job.collected:
            counts["succeeded"] = len(self._lines(job.output_file_id))
            for line in self._lines(job.error_file_id):
                counts[_result(line, job.model)["type"]] += 1
        else:
            upstream = batch.get("request_counts")
            total = upstream.get("total") if isinstance(upstream, dict) else None
            counts["processing"] = total if isinstance(total, int) else 0
        base = f"{request.scheme}://{request.host}"
        return {
            "id": job.id, "type": "message_batch",
            "processing_status": "ended" if ended else "canceling" if status == "cancelling" else "in_progress",
            "request_counts": counts, "created_at": _stamp(job.created_at),
            "expires_at": _stamp(job.created_at + 86400), "ended_at": _stamp(
                batch.get("completed_at") or batch.get("cancelled_at") or batch.get("expired_at")
                or batch.get("failed_at")) if ended else None,
            "archived_at": None, "cancel_initiated_at": _stamp(batch.get("cancelling_at")),
            "results_url": f"{base}{_BASE}/{job.id}/results" if job.collected else None,
        }

    def _results(self, job: Job) -> bytes:
        lines = self._lines(job.output_file_id) + self._lines(job.error_file_id)
        return b"".join(orjson.dumps({"custom_id": line.get("custom_id"), "result": _result(line, job.model)})
                        + b"\n" for line in lines)


def _result(line: dict[str, Any], model: str) -> dict[str, Any]:
    """One OpenAI batch output or error line as Anthropic's ``result``."""
    response = line.get("response")
    if isinstance(response, dict):
        body = response.get("body")
        if response.get("status_code") == 200 and isinstance(body, dict):
            return {"type": "succeeded", "message": orjson.loads(anthropic_inbound.from_openai(body, model))}
        err = body.get("error") if isinstance(body, dict) else None
        message = err.get("message") if isinstance(err, dict) else None
        status = response.get("status_code")
        err_type = _ERROR_TYPES.get(status, "api_error") if isinstance(status, int) else "api_error"
        return {"type": "errored", "error": {"type": "error", "error": {
            "type": err_type, "message": message if isinstance(message, str) else "the request failed upstream"}}}
    error = line.get("error")
    error = error if isinstance(error, dict) else {}
    if error.get("code") == "batch_expired":
        return {"type": "expired"}
    if error.get("code") == "batch_cancelled":
        return {"type": "canceled"}
    return {"type": "errored", "error": {"type": "error", "error": {
        "type": "api_error", "message": str(error.get("message") or "the request failed upstream")}}}
