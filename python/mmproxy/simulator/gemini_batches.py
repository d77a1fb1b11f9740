"""Gemini's Batch API (batch mode): ``models/{model}:batchGenerateContent``, ``batches/{id}`` and ``:cancel``.

Gateways that relay Gemini batches need an upstream that plays the whole lifecycle quickly and
deterministically. As in ``anthropic_batches`` nothing runs in the background: the envelope
(``batch.display_name``, inline ``input_config.requests.requests`` with a ``request`` each) is validated
when the batch is created, the batch is due ``batch_ms`` later (the largest ``batch_ms`` among the model's
knobs and its requests' ``sim`` knobs), and the first read after that answers every request with the
builder ``:generateContent`` uses, so an inlined response equals the direct answer to its request.
A request ``:generateContent`` would reject, or one drawing a status fault (a ``sim.fault``, a scripted
``/_sim/faults`` rule or a configured fault rate), becomes an ``error`` entry: a ``google.rpc.Status``
carrying the code the direct call's HTTP status maps to. Content faults (``safety``, ``safety_prompt``)
shape the response as they do on the direct call; transport faults (slow, cut, ...) are ignored.
Responses keep the input order and, as Google's do, do not echo each request's ``metadata``.
A cancel answers ``{}``; the next read ends the batch as BATCH_STATE_CANCELLED, with no responses.
Only inline input is played: a ``file_name`` input is a 400.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson

from .behaviour import CONTENT_FAULTS, KnobError
from .gemini import (
    _camel,
    _generation,
    _new_id,
    _parse,
    _render,
    check_auth,
    fault_error,
    google_error,
    invalid,
    knob_error,
)
from .httpserver import Reply, Request

if TYPE_CHECKING:
    from .server import SimApp

_BASE = "/v1beta/batches/"
_TYPES = "type.googleapis.com/google.ai.generativelanguage.v1main."
_BATCH_FIELDS = frozenset({"name", "model", "displayName", "inputConfig", "output", "createTime", "endTime",
                           "updateTime", "batchStats", "state", "priority"})
# HTTP status of a direct call -> google.rpc.Code (number, name), as Google maps them.
_RPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 429: 8, 500: 13, 502: 14, 503: 14, 504: 4}  # HTTP -> google.rpc.Code


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _unknown(key: str, where: str) -> str:
    return f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': Cannot find field."


@dataclass(slots=True)
class _Batch:
    """A batch's ``GenerateContentBatch`` metadata and what it still owes."""

    meta: dict[str, Any]
    requests: list[dict[str, Any]]
    due: float  # time.monotonic() at which the batch is answered
    cancelled: bool = False  # a cancel arrived; the next read ends the batch
    responses: list[dict[str, Any]] | None = None  # the inlined responses, once succeeded


def _check(body: dict[str, Any]) -> str | None:
    """Why a create body is invalid (Google's parsing and validation of the batch envelope), or None."""
    extra = next((key for key in body if key != "batch"), None)
    if extra is not None:
        return f'Invalid JSON payload received. Unknown name "{extra}": Cannot find field.'
    batch = body.get("batch")
    if not isinstance(batch, dict):
        return "* BatchGenerateContentRequest.batch: batch is not specified"
    batch = {_camel(k): v for k, v in batch.items()}
    extra = next((key for key in batch if key not in _BATCH_FIELDS), None)
    if extra is not None:
        return _unknown(extra, "batch")
    name = batch.get("displayName")
    if not isinstance(name, str) or not name:
        return "* BatchGenerateContentRequest.batch.display_name: display_name is required"
    config = batch.get("inputConfig")
    if not isinstance(config, dict):
        return "* BatchGenerateContentRequest.batch.input_config: input_config is required"
    config = {_camel(k): v for k, v in config.items()}
    extra = next((key for key in config if key not in ("fileName", "requests")), None)
    if extra is not None:
        return _unknown(extra, "batch.input_config")
    if "fileName" in config:
        return "* BatchGenerateContentRequest.batch.input_config.file_name: file input is not simulated; " \
               "send the requests inline in input_config.requests"
    inlined = config.get("requests")
    if not isinstance(inlined, dict):
        return "* BatchGenerateContentRequest.batch.input_config: an input source (requests) is required"
    extra = next((key for key in inlined if key != "requests"), None)
    if extra is not None:
        return _unknown(extra, "batch.input_config.requests")
    requests = inlined.get("requests")
    if not isinstance(requests, list) or not requests:
        return "* BatchGenerateContentRequest.batch.input_config.requests.requests: requests must not be empty"
    for i, item in enumerate(requests):
        where = f"batch.input_config.requests.requests[{i}]"
        if not isinstance(item, dict):
            return f"Invalid JSON payload received. '{where}' must be an object."
        extra = next((key for key in item if key not in ("request", "metadata")), None)
        if extra is not None:
            return _unknown(extra, where)
        if not isinstance(item.get("request"), dict):
            return f"* BatchGenerateContentRequest.{where}.request: request is not specified"
        if not isinstance(item.get("metadata", {}), dict):
            return f"Invalid JSON payload received. '{where}.metadata' must be an object."
    return None


def _normalize(request: dict[str, Any]) -> dict[str, Any]:
    """A request as ``:generateContent`` sees its body: lowerCamel top-level and generationConfig names."""
    body = {_camel(k): v for k, v in request.items()}
    config = body.get("generationConfig")
    if isinstance(config, dict):
        body["generationConfig"] = {_camel(k): v for k, v in config.items()}
    return body


def _status(reply: Reply) -> dict[str, Any]:
    """A failed direct reply as the ``google.rpc.Status`` of an inlined response."""
    code = _RPC_CODES.get(reply.status, 2)  # 2: UNKNOWN
    try:
        error = orjson.loads(reply.body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):  # the 502 fault is Google's HTML page
        error = {"message": "The service is currently unavailable."}
    status: dict[str, Any] = {"code": code, "message": error.get("message", "")}  # google.rpc.Status: no name
    if error.get("details"):
        status["details"] = error["details"]
    return status


def _answer(app: SimApp, req: Request, model: str, request: dict[str, Any]) -> dict[str, Any]:
    """One inlined response: what ``:generateContent`` would answer, minus delays and transport faults."""
    body = _normalize(request)
    named = body.pop("model", None)
    if named is not None and named not in (model, f"models/{model}"):
        return {"error": _status(invalid(f"* GenerateContentRequest.model: model in the request ({named}) does "
                                         f"not match the batch (models/{model})."))}
    sim = body.get("sim")
    try:
        knobs = app.state.knobs(model, sim)
    except KnobError as exc:
        return {"error": _status(knob_error(exc))}
    gen = _generation(app, body, model, knobs)
    if isinstance(gen, Reply):  # validation wins over faults, as in SimApp.serve_model
        return {"error": _status(gen)}
    fault = app.state.pick_fault(req, model, sim, knobs)
    if fault is not None and fault.status:
        return {"error": _status(fault_error(fault, model))}
    content_fault = fault.kind if fault is not None and fault.kind in CONTENT_FAULTS else None
    return {"response": orjson.loads(_render(gen, None, content_fault).body)}


def _batch_ms(app: SimApp, model: str, request: dict[str, Any]) -> float:
    try:
        return app.state.knobs(model, request.get("sim")).batch_ms
    except KnobError:  # reported on the request's inlined response
        return app.state.knobs(model, None).batch_ms


class _Store:
    """Gemini batches of one simulator; state lives as long as the process (``/_sim/reset`` keeps it)."""

    def __init__(self) -> None:
        self.batches: dict[str, _Batch] = {}

    def create(self, app: SimApp, req: Request, model: str) -> Reply:
        body = _parse(req, model)  # sets req.json and req.model, as :generateContent does
        if isinstance(body, Reply):
            return body
        problem = _check(body)
        if problem is not None:
            return invalid(problem)
        batch = {_camel(k): v for k, v in body["batch"].items()}
        config = {_camel(k): v for k, v in batch["inputConfig"].items()}
        requests = [item["request"] for item in config["requests"]["requests"]]
        name = f"batches/{_new_id()}"
        now = _rfc3339(datetime.now(timezone.utc))
        meta = {
            "@type": _TYPES + "GenerateContentBatch", "model": f"models/{model}",
            "displayName": batch["displayName"], "createTime": now, "updateTime": now,
            "batchStats": {"requestCount": str(len(requests)), "pendingRequestCount": str(len(requests))},
            "state": "BATCH_STATE_PENDING", "name": name,
        }
        delay = max(_batch_ms(app, model, r) for r in requests) / 1000.0
        self.batches[name] = _Batch(meta, requests, time.monotonic() + delay)
        return Reply(200, orjson.dumps({"name": name, "metadata": meta}))

    def _settle(self, app: SimApp, req: Request, batch: _Batch) -> None:
        """End a cancelled or due batch: no responses, or every request answered in input order."""
        meta = batch.meta
        if meta["state"] != "BATCH_STATE_PENDING" or (not batch.cancelled and time.monotonic() < batch.due):
            return
        model = meta["model"].removeprefix("models/")
        now = _rfc3339(datetime.now(timezone.utc))
        meta.update(updateTime=now, endTime=now)
        if batch.cancelled:
            meta["state"] = "BATCH_STATE_CANCELLED"
        else:
            batch.responses = [_answer(app, req, model, r) for r in batch.requests]
            failed = sum(1 for r in batch.responses if "error" in r)
            meta["state"] = "BATCH_STATE_SUCCEEDED"
            meta["batchStats"] = {"requestCount": str(len(batch.responses)),
                                  "successfulRequestCount": str(len(batch.responses) - failed),
                                  "failedRequestCount": str(failed)}
            meta["output"] = {"inlinedResponses": {"inlinedResponses": batch.responses}}
        batch.requests = []

    def _operation(self, batch: _Batch) -> dict[str, Any]:
        op: dict[str, Any] = {"name": batch.meta["name"], "metadata": batch.meta}
        if batch.meta["state"] != "BATCH_STATE_PENDING":
            op["done"] = True
        if batch.responses is not None:
            op["response"] = {"@type": _TYPES + "GenerateContentBatchOutput",
                              "inlinedResponses": {"inlinedResponses": batch.responses}}
        return op

    def item(self, app: SimApp, req: Request) -> Reply:
        """``GET batches/{id}`` and ``POST batches/{id}:cancel``."""
        ident, colon, method = req.path[len(_BASE):].partition(":")
        if (req.method, method) not in (("GET", ""), ("POST", "cancel")) or (colon and not method):
            return google_error(404, f"Method not found: {req.path}")
        batch = self.batches.get("batches/" + ident)
        if batch is None:
            return google_error(404, f"Batch 'batches/{ident}' was not found.")
        self._settle(app, req, batch)
        if method == "cancel":
            batch.cancelled = True  # no effect once the batch is done
            return Reply(200, b"{}")
        return Reply(200, orjson.dumps(self._operation(batch)))


_STORES: weakref.WeakKeyDictionary[SimApp, _Store] = weakref.WeakKeyDictionary()


def create_batch(app: SimApp, req: Request, model: str) -> Reply:
    """``POST /v1beta/models/{model}:batchGenerateContent`` (dispatched by ``gemini.model_method``)."""
    return _STORES[app].create(app, req, model)


def register(app: SimApp) -> None:
    store = _STORES[app] = _Store()
    app.prefix_route("GET", _BASE, store.item, check_auth)
    app.prefix_route("POST", _BASE, store.item, check_auth)
