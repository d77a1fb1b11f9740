"""Anthropic's Message Batches API: ``/v1/messages/batches`` create, retrieve, results and cancel.

Gateways that relay Anthropic batches need an upstream that plays the whole lifecycle quickly and
deterministically. As in ``batches`` (OpenAI's Batch API) nothing runs in the background: the envelope
(``requests``, ``custom_id``, required ``params`` fields, no streaming) is validated when the batch is
created, the batch is due ``batch_ms`` later (the largest ``batch_ms`` among its requests' model and
``params.sim`` knobs), and the first read after that answers every request with the builder
``POST /v1/messages`` uses, so a succeeded line's message equals the direct answer to its params.
A request the Messages API would reject, or one drawing a status fault (a ``sim.fault``, a scripted
``/_sim/faults`` rule or a configured fault rate), becomes an ``errored`` line with the error body the
direct call would get. Transport faults (slow, cut, ...) have no meaning for a batch line and are ignored.
A cancel marks the batch ``canceling``; the next read ends it with every request ``canceled``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import orjson

from .anthropic import _build, _new_id, check_auth, error_reply, fault_error, invalid, knob_error, read_object
from .behaviour import KnobError
from .httpserver import Reply, Request

if TYPE_CHECKING:
    from .server import SimApp

_BASE = "/v1/messages/batches"
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_MAX_REQUESTS = 100_000
_REQUIRED = ("model", "max_tokens", "messages")


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _not_found(ident: str) -> Reply:
    return error_reply(404, "not_found_error", f"message_batch_id: no message batch '{ident}'")


@dataclass(slots=True)
class _Batch:
    """A batch: its ``message_batch`` object (``results_url`` filled per reply) and what it still owes."""

    obj: dict[str, Any]
    requests: list[dict[str, Any]]
    due: float  # time.monotonic() at which the batch is answered
    results: list[dict[str, Any]] = field(default_factory=list)


def _check(body: Any) -> str | None:
    """Why a create body is invalid (Anthropic's validation of the batch envelope), or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object"
    for key in body:
        if key != "requests":
            return f"{key}: Extra inputs are not permitted"
    requests = body.get("requests")
    if not isinstance(requests, list):
        return "requests: Field required" if requests is None else "requests: Input should be a valid list"
    if not requests:
        return "requests: List should have at least 1 item after validation, not 0"
    if len(requests) > _MAX_REQUESTS:
        return f"requests: List should have at most {_MAX_REQUESTS} items after validation, not {len(requests)}"
    seen: set[str] = set()
    for i, item in enumerate(requests):
        where = f"requests.{i}"
        if not isinstance(item, dict):
            return f"{where}: Input should be a valid dictionary"
        extra = next((key for key in item if key not in ("custom_id", "params")), None)
        if extra is not None:
            return f"{where}.{extra}: Extra inputs are not permitted"
        custom_id, params = item.get("custom_id"), item.get("params")
        if not isinstance(custom_id, str):
            return f"{where}.custom_id: Field required" if custom_id is None else \
                f"{where}.custom_id: Input should be a valid string"
        if not _CUSTOM_ID.match(custom_id):
            return f"{where}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
        if custom_id in seen:
            return f"{where}.custom_id: Duplicate custom_id '{custom_id}'; custom_id values must be unique " \
                   "within a batch"
        seen.add(custom_id)
        if not isinstance(params, dict):
            return f"{where}.params: Field required" if params is None else \
                f"{where}.params: Input should be a valid dictionary"
        missing = next((key for key in _REQUIRED if key not in params), None)
        if missing is not None:
            return f"{where}.params.{missing}: Field required"
        if not isinstance(params["model"], str) or not params["model"]:
            return f"{where}.params.model: Input should be a valid string"
        if params.get("stream") is True:
            return f"{where}.params.stream: Streaming is not supported for requests in a Message Batch"
    return None


def _answer(app: SimApp, req: Request, params: dict[str, Any]) -> dict[str, Any]:
    """One request's ``result``: what ``POST /v1/messages`` would answer, minus delays and transport faults."""
    model, sim = params["model"], params.get("sim")
    try:
        knobs = app.state.knobs(model, sim)
    except KnobError as exc:
        reply = knob_error(exc)
    else:
        reply = _build(app, params, model, knobs)
        if reply.status < 400:  # validation wins over faults, as in SimApp.serve_model
            fault = app.state.pick_fault(req, model, sim, knobs)
            if fault is not None and fault.status:
                reply = fault_error(fault, model)
    if reply.status >= 400:
        return {"type": "errored", "error": orjson.loads(reply.body)}
    return {"type": "succeeded", "message": orjson.loads(reply.body)}


def _batch_ms(app: SimApp, params: dict[str, Any]) -> float:
    try:
        return app.state.knobs(params["model"], params.get("sim")).batch_ms
    except KnobError:  # reported on the request's result line
        return app.state.knobs(params["model"], None).batch_ms


class _Store:
    """Message batches of one simulator; state lives as long as the process (``/_sim/reset`` keeps it)."""

    def __init__(self) -> None:
        self.batches: dict[str, _Batch] = {}

    def create(self, app: SimApp, req: Request) -> Reply:
        body = read_object(req)
        if isinstance(body, Reply):
            return body
        problem = _check(body)
        if problem is not None:
            return invalid(problem)
        requests = body["requests"]
        req.model = requests[0]["params"]["model"]
        created = datetime.now(timezone.utc)
        obj: dict[str, Any] = {
            "id": _new_id("msgbatch_"), "type": "message_batch", "processing_status": "in_progress",
            "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0,
                               "expired": 0},
            "ended_at": None, "created_at": _rfc3339(created), "expires_at": _rfc3339(created + timedelta(hours=24)),
            "archived_at": None, "cancel_initiated_at": None, "results_url": None,
        }
        delay = max(_batch_ms(app, r["params"]) for r in requests) / 1000.0
        self.batches[obj["id"]] = _Batch(obj, requests, time.monotonic() + delay)
        return Reply(200, orjson.dumps(obj))

    def _settle(self, app: SimApp, req: Request, batch: _Batch) -> None:
        """End a canceled or due batch: canceled results, or every request answered in request order."""
        status = batch.obj["processing_status"]
        if status == "ended" or (status == "in_progress" and time.monotonic() < batch.due):
            return
        if status == "canceling":
            batch.results = [{"custom_id": r["custom_id"], "result": {"type": "canceled"}} for r in batch.requests]
        else:
            batch.results = [{"custom_id": r["custom_id"], "result": _answer(app, req, r["params"])}
                             for r in batch.requests]
        counts = batch.obj["request_counts"]
        counts["processing"] = 0
        for line in batch.results:
            counts[line["result"]["type"]] += 1
        batch.obj.update(processing_status="ended", ended_at=_rfc3339(datetime.now(timezone.utc)))
        batch.requests = []

    def _view(self, app: SimApp, req: Request, batch: _Batch) -> Reply:
        obj = batch.obj
        if obj["processing_status"] == "ended":
            scheme = "https" if app.config.tls_cert else "http"
            host = (req.header(b"host") or app.config.host.encode()).decode("latin-1")
            obj = {**obj, "results_url": f"{scheme}://{host}{_BASE}/{obj['id']}/results"}
        return Reply(200, orjson.dumps(obj))

    def item(self, app: SimApp, req: Request) -> Reply:
        """``GET {id}``, ``GET {id}/results`` and ``POST {id}/cancel``."""
        ident, _, action = req.path[len(_BASE) + 1:].partition("/")
        batch = self.batches.get(ident)
        allowed = {"GET": ("", "results"), "POST": ("cancel",)}.get(req.method, ())
        if batch is None or action not in allowed:
            return _not_found(ident)
        self._settle(app, req, batch)
        if action == "cancel" and batch.obj["processing_status"] == "in_progress":
            batch.obj.update(processing_status="canceling", cancel_initiated_at=_rfc3339(datetime.now(timezone.utc)))
        if action != "results":
            return self._view(app, req, batch)
        if batch.obj["processing_status"] != "ended":
            return invalid("Batch is still processing")
        data = b"".join(orjson.dumps(line) + b"\n" for line in batch.results)
        return Reply(200, data, content_type=b"application/x-jsonl")


def register(app: SimApp) -> None:
    store = _Store()
    app.route("POST", _BASE, store.create, check_auth)
    app.prefix_route("GET", _BASE + "/", store.item, check_auth)
    app.prefix_route("POST", _BASE + "/", store.item, check_auth)
