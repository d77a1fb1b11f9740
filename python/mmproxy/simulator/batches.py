"""OpenAI's Files and Batch APIs: upload a JSONL of chat requests, run it as a batch, download the answers.

Azure OpenAI's versions of them live under ``/openai`` (``api-key`` and ``api-version`` on every call), where the
batch endpoint and each line's ``url`` are ``/chat/completions``; they keep their own files and batches.

A batch is validated when it is created (as OpenAI does: a bad line, another endpoint or a second model fails
the whole batch with ``errors``) and completes ``batch_ms`` (a knob of the batch's model) later. Nothing runs
in the background: the answers are produced by the first read after the batch is due, with the same chat
builder ``/v1/chat/completions`` uses, so a line's answer equals the direct answer to its body.
"""

from __future__ import annotations

import itertools
import secrets
import time
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any

import orjson

from .httpserver import Reply, Request
from .openai import _build_chat, check_auth, check_azure_auth, error_reply, invalid

if TYPE_CHECKING:
    from .server import SimApp

_TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})
_prefix = secrets.token_hex(4)
_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}{_prefix}{next(_ids):08x}"


def _not_found(what: str, ident: str) -> Reply:
    return error_reply(404, f"No such {what}: '{ident}'", "invalid_request_error", "not_found")


def _form(req: Request) -> dict[str, Message] | Reply:
    """The parts of a multipart/form-data body by field name."""
    ctype = req.header(b"content-type") or b""
    if not ctype.lower().startswith(b"multipart/form-data"):
        return invalid("Expected a multipart/form-data body.")
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype + b"\r\n\r\n" + req.body)
    if not msg.is_multipart():
        return invalid("Could not parse the multipart body.")
    parts: dict[str, Message] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            parts[name] = part
    return parts


class _Store:
    """Files and batches of one simulator; state lives as long as the process (``/_sim/reset`` keeps it)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint  # the batch endpoint and the url every line must name
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.due: dict[str, tuple[float, list[dict[str, Any]]]] = {}  # batch id -> (completes at, lines)

    # --- files ---

    def _add_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        obj: dict[str, Any] = {"id": _new_id("file-"), "object": "file", "bytes": len(data),
                               "created_at": int(time.time()), "filename": filename, "purpose": purpose,
                               "status": "processed", "expires_at": None, "status_details": None}
        self.files[obj["id"]] = (obj, data)
        return obj

    def upload(self, app: SimApp, req: Request) -> Reply:
        form = _form(req)
        if isinstance(form, Reply):
            return form
        purpose = form.get("purpose")
        if purpose is None or purpose.get_payload(decode=True) != b"batch":
            return invalid("The simulator accepts files with purpose 'batch' only.", "purpose")
        part = form.get("file")
        if part is None:
            return invalid("Missing required parameter: 'file'.", "file")
        data = part.get_payload(decode=True)
        assert isinstance(data, bytes)
        return Reply(200, orjson.dumps(self._add_file(data, part.get_filename() or "upload.jsonl", "batch")))

    def file_item(self, app: SimApp, req: Request) -> Reply:
        rest = req.path.split("/files/", 1)[1]
        ident, _, tail = rest.partition("/")
        found = self.files.get(ident)
        if found is None or tail not in ("", "content"):
            return _not_found("file", ident)
        if tail == "content":
            return Reply(200, found[1], content_type=b"application/octet-stream")
        return Reply(200, orjson.dumps(found[0]))

    # --- batches ---

    def create(self, app: SimApp, req: Request) -> Reply:
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            return invalid("We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return invalid("Expected a JSON object.")
        req.json = body
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str) or file_id not in self.files:
            return invalid(f"Invalid 'input_file_id': {file_id!r} is not an uploaded file.", "input_file_id")
        if body.get("endpoint") != self.endpoint:
            return invalid(f"Invalid 'endpoint': the simulator runs {self.endpoint} batches only.", "endpoint")
        if body.get("completion_window") != "24h":
            return invalid("Invalid 'completion_window': only '24h' is supported.", "completion_window")
        now = int(time.time())
        batch: dict[str, Any] = {
            "id": _new_id("batch_"), "object": "batch", "endpoint": self.endpoint, "errors": None,
            "input_file_id": file_id, "completion_window": "24h", "status": "in_progress",
            "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": now,
            "expires_at": now + 86_400, "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata") if isinstance(body.get("metadata"), dict) else None,
        }
        self.batches[batch["id"]] = batch
        lines, errors = _validate(self.files[file_id][1], self.endpoint)
        model = lines[0]["body"]["model"] if lines else None
        if model is not None:
            req.model = model
            fault = app.state.pick_fault(req, model, None, app.state.knobs(model, None))
            if fault is not None:  # a scripted fault fails the whole batch, as a provider outage would
                errors.append({"code": f"simulated_{fault.kind}", "message": "Simulated batch failure.",
                               "param": None, "line": None})
        if errors:
            batch.update(status="failed", failed_at=now, in_progress_at=None,
                         errors={"object": "list", "data": errors})
        else:
            batch["request_counts"]["total"] = len(lines)
            assert model is not None
            delay = app.state.knobs(model, None).batch_ms / 1000.0
            self.due[batch["id"]] = (time.monotonic() + delay, lines)
        return Reply(200, orjson.dumps(batch))

    def _settle(self, app: SimApp, batch: dict[str, Any]) -> dict[str, Any]:
        """Run a due batch: each line answered by the chat builder, answers split into output and error files."""
        due = self.due.get(batch["id"])
        if due is None or batch["status"] in _TERMINAL or time.monotonic() < due[0]:
            return batch
        del self.due[batch["id"]]
        done: list[bytes] = []
        failed: list[bytes] = []
        for line in due[1]:
            body = {**line["body"], "stream": False}
            model = body["model"]
            reply = (_build_chat(app, body, model, app.state.knobs(model, None)) if "messages" in body
                     else invalid("Missing required parameter: 'messages'.", "messages"))
            out = {"id": _new_id("batch_req_"), "custom_id": line["custom_id"],
                   "response": {"status_code": reply.status, "request_id": secrets.token_hex(16),
                                "body": orjson.loads(reply.body)}, "error": None}
            (done if reply.status < 400 else failed).append(orjson.dumps(out))
        now = int(time.time())
        for name, rows in (("output_file_id", done), ("error_file_id", failed)):
            if rows:
                data = b"\n".join(rows) + b"\n"
                batch[name] = self._add_file(data, f"{batch['id']}_{name[:-8]}.jsonl", "batch_output")["id"]
        batch["request_counts"].update(completed=len(done), failed=len(failed))
        batch.update(status="completed", finalizing_at=now, completed_at=now)
        return batch

    def batch_item(self, app: SimApp, req: Request) -> Reply:
        ident, _, action = req.path.split("/batches/", 1)[1].partition("/")
        batch = self.batches.get(ident)
        if batch is None or (req.method == "GET") != (action == "") or action not in ("", "cancel"):
            return _not_found("batch", ident)
        self._settle(app, batch)
        if action == "cancel" and batch["status"] not in _TERMINAL:
            now = int(time.time())
            self.due.pop(ident, None)
            batch.update(status="cancelled", cancelling_at=now, cancelled_at=now)
        return Reply(200, orjson.dumps(batch))

    def list_batches(self, app: SimApp, req: Request) -> Reply:
        data = [self._settle(app, b) for b in reversed(self.batches.values())]
        return Reply(200, orjson.dumps({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                                        "last_id": data[-1]["id"] if data else None, "has_more": False}))


def _line_error(number: int | None, message: str, param: str | None = None) -> dict[str, Any]:
    return {"code": "invalid_request", "message": message, "param": param, "line": number}


def _validate(data: bytes, endpoint: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The request lines of an input file and the errors that fail the batch (OpenAI's checks)."""
    lines: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    models: set[str] = set()
    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            errors.append(_line_error(number, "This line is not parseable as valid JSON."))
            continue
        body = line.get("body") if isinstance(line, dict) else None
        custom_id = line.get("custom_id") if isinstance(line, dict) else None
        if not isinstance(custom_id, str) or custom_id in seen:
            errors.append(_line_error(number, "Each line needs a unique string 'custom_id'.", "custom_id"))
        elif line.get("method") != "POST":
            errors.append(_line_error(number, "The only supported method is POST.", "method"))
        elif line.get("url") != endpoint:
            errors.append(_line_error(number, f"The 'url' must match the batch endpoint {endpoint}.", "url"))
        elif not isinstance(body, dict) or not isinstance(body.get("model"), str):
            errors.append(_line_error(number, "The 'body' must be an object with a 'model'.", "body"))
        else:
            seen.add(custom_id)
            models.add(body["model"])
            lines.append(line)
    if len(models) > 1:
        errors.append(_line_error(None, "All requests in a batch must use the same model.", "body.model"))
    if not lines and not errors:
        errors.append(_line_error(None, "The input file contains no requests."))
    return lines, errors


def register(app: SimApp) -> None:
    openai, azure = _Store("/v1/chat/completions"), _Store("/chat/completions")
    for base, store, auth in (("/v1", openai, check_auth), ("", openai, check_auth),
                              ("/openai", azure, check_azure_auth)):
        app.route("POST", base + "/files", store.upload, auth)
        app.prefix_route("GET", base + "/files/", store.file_item, auth)
        app.route("POST", base + "/batches", store.create, auth)
        app.route("GET", base + "/batches", store.list_batches, auth)
        app.prefix_route("GET", base + "/batches/", store.batch_item, auth)
        app.prefix_route("POST", base + "/batches/", store.batch_item, auth)
