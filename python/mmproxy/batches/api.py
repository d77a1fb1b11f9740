"""HTTP handlers of OpenAI's Files and Batch APIs in front of every deployment whose provider runs batches.

The client's file stays in the gateway; the upstream gets its requests under the deployment's model and key
(a renamed copy of the file for OpenAI and Azure, a Message Batch for Anthropic, inline requests for Gemini: each
provider's batch client, ``providers.batches``).
Checks that OpenAI would fail the batch for (a bad line, another endpoint, a second model) and the caller's model
permissions are made here, before anything goes upstream.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from mmproxy.batches.files import DEFAULT_DIR, FileStore
from mmproxy.batches.jobs import Job, JobStore, new_id, store_results
from mmproxy.batches.pricing import lines_to_records
from mmproxy.config import Deployment
from mmproxy.errors import ProxyError, bad_request
from mmproxy.keys.manager import Caller
from mmproxy.pipeline.call import Call
from mmproxy.pipeline.pipeline import Pipeline
from mmproxy.pipeline.upstreams import Upstream
from mmproxy.providers import batches_for, registration
from mmproxy.providers.batches import ENDPOINT, FINAL, UpstreamBatches
from mmproxy.upstream import fetch_whole
from mmproxy.validation import query_int, upstream_override

_JSON = "application/json"
_MAX_LIST = 100
_MAX_FIELD = 1024  # bytes of a form field other than the file (purpose)


def _json(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type=_JSON)


def _not_found(what: str, ident: str, param: str | None = None) -> ProxyError:
    return ProxyError(404, f"no {what} {ident!r}", code="not_found", param=param)


def _bad_line(number: int, message: str, param: str) -> ProxyError:
    return bad_request(f"input file line {number}: {message}", param=f"input_file_id (line {number}: {param})")


def read_requests(data: bytes) -> tuple[str, list[dict[str, Any]]]:
    """The model and request lines of a batch input file; 400 naming the line and field for the first bad one."""
    lines: list[dict[str, Any]] = []
    seen: set[str] = set()
    model: str | None = None
    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _bad_line(number, "not valid JSON", "line") from None
        if not isinstance(line, dict):
            raise _bad_line(number, "must be a JSON object", "line")
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id or custom_id in seen:
            raise _bad_line(number, "custom_id must be a non-empty string, unique in the file", "custom_id")
        if line.get("method") != "POST":
            raise _bad_line(number, "method must be POST", "method")
        if line.get("url") != ENDPOINT:
            raise _bad_line(number, f"url must be {ENDPOINT}, the batch's endpoint", "url")
        body = line.get("body")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
            raise _bad_line(number, "body must be an object with a model", "body.model")
        if (name := upstream_override(body)) is not None:
            raise _bad_line(number, f"{name} is not allowed: the batch runs where the model's config sends it",
                            f"body.{name}")
        if model is not None and body["model"] != model:
            raise _bad_line(number, f"model {body['model']!r} differs from {model!r}: a batch uses one model",
                            "body.model")
        model = body["model"]
        seen.add(custom_id)
        lines.append(line)
    if model is None:
        raise bad_request("the input file has no requests", param="input_file_id")
    return model, lines


class BatchAPI:
    def __init__(self, pipeline: Pipeline, root: Path | None = None) -> None:
        self.pipeline = pipeline
        root = root or Path(os.environ.get("MMPROXY_FILES_DIR", DEFAULT_DIR)).resolve()
        self.files = FileStore(root)
        self.jobs = JobStore(root / "batches")
        self._locks: dict[str, asyncio.Lock] = {}

    # -- files -----------------------------------------------------------------------------------
    async def upload_file(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        caller = await self.pipeline.authorize(request, call)
        try:
            reader = await request.multipart()
        except (ValueError, AssertionError, KeyError):
            raise bad_request("expected a multipart/form-data body with purpose and file") from None
        upload = self.files.upload_path()
        try:
            purpose, filename = await self._receive(reader, upload)
            if purpose != "batch":
                raise bad_request("purpose must be 'batch' (the only file purpose the gateway stores)",
                                  param="purpose")
            if filename is None:
                raise bad_request("file is required: the JSONL input of a batch", param="file")
            return _json(self.files.keep(caller.scope, upload, filename, "batch"))
        finally:
            upload.unlink(missing_ok=True)

    async def _receive(self, reader: MultipartReader, upload: Path) -> tuple[str | None, str | None]:
        """Read the form: the ``purpose`` field, and the ``file`` part written to ``upload`` as it arrives, so
        memory stays flat whatever the file's size. Over ``max_file_size_mb``: 413; a client that stops sending
        for ``request_body_timeout``: 408; a malformed form: 400."""
        config = self.pipeline.config
        purpose: str | None = None
        filename: str | None = None
        try:
            while (part := await asyncio.wait_for(reader.next(), config.request_body_timeout)) is not None:
                if not isinstance(part, BodyPartReader):
                    raise bad_request("expected a flat multipart/form-data body with purpose and file")
                if part.name == "file":
                    filename = part.filename or "input.jsonl"
                    with upload.open("wb") as out:
                        size = 0
                        while chunk := await asyncio.wait_for(part.read_chunk(), config.request_body_timeout):
                            size += len(chunk)
                            if size > config.max_file_bytes:
                                limit_mb = config.max_file_bytes / (1024 * 1024)
                                raise ProxyError(413, f"file exceeds the {limit_mb:g} MB limit",
                                                 code="request_too_large", param="file")
                            out.write(chunk)
                else:
                    value = b""
                    while chunk := await asyncio.wait_for(part.read_chunk(_MAX_FIELD), config.request_body_timeout):
                        value += chunk
                        if len(value) > _MAX_FIELD:
                            raise bad_request(f"form field {part.name!r} is too long", param=part.name)
                    if part.name == "purpose":
                        purpose = value.decode("utf-8", "replace")
        except asyncio.TimeoutError:
            raise ProxyError(408, f"the upload stopped arriving for {config.request_body_timeout:g} s",
                             code="request_timeout") from None
        except (ValueError, BadHttpMessage):  # BadHttpMessage: a part whose headers do not parse
            raise bad_request("malformed multipart/form-data body") from None
        return purpose, filename

    def _file(self, caller: Caller, file_id: str, param: str | None = None) -> dict[str, Any]:
        found = self.files.get(file_id)
        if found is None or not (caller.admin or found[0] == caller.scope):
            raise _not_found("file", file_id, param)
        return found[1]

    async def item(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """``/v1/files/{id}[/content]``, ``/v1/batches/{id}`` and ``/v1/batches/{id}/cancel``."""
        caller = await self.pipeline.authorize(request, call)
        kind, _, rest = request.path.removeprefix("/v1/").partition("/")
        ident, _, action = rest.partition("/")
        route = (request.method, kind, action)
        if route == ("GET", "files", ""):
            return _json(self._file(caller, ident))
        if route == ("GET", "files", "content"):
            self._file(caller, ident)
            return web.FileResponse(self.files.content_path(ident),
                                    headers={"Content-Type": "application/octet-stream"})
        if route == ("GET", "batches", ""):
            return _json((await self.refresh(caller, ident, "openai")).view())
        if route == ("POST", "batches", "cancel"):
            return _json((await self.cancel(caller, ident, "openai")).view())
        raise ProxyError(404, f"no route for {request.method} {request.path}", code="not_found")

    # -- batches ---------------------------------------------------------------------------------
    async def create_batch(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        caller = await self.pipeline.authorize(request, call)
        body, _ = await self.pipeline.read_json(request)
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str):
            raise bad_request("input_file_id is required: the id of an uploaded batch file", param="input_file_id")
        if body.get("endpoint") != ENDPOINT:
            raise bad_request(f"endpoint must be {ENDPOINT} (the only batch endpoint the gateway runs)",
                              param="endpoint")
        if body.get("completion_window") != "24h":
            raise bad_request("completion_window must be '24h'", param="completion_window")
        metadata = body.get("metadata")
        if metadata is not None and not (isinstance(metadata, dict)
                                         and all(isinstance(v, str) for v in metadata.values())):
            raise bad_request("metadata must be an object of string values", param="metadata")
        self._file(caller, file_id, "input_file_id")
        model, lines = read_requests(self.files.content(file_id))
        job = await self.start(caller, call, model, lines, metadata, input_file_id=file_id, api="openai")
        return _json(job.view())

    async def start(self, caller: Caller, call: Call, model: str, lines: list[dict[str, Any]],
                    metadata: dict[str, Any] | None, *, input_file_id: str, api: str) -> Job:
        """Run the request ``lines`` (OpenAI batch lines, all for ``model``) upstream as a gateway batch, on a
        deployment of ``model`` whose provider runs batches, routed like any request (health, failover)."""
        await self._admit(caller, model)
        router = self.pipeline.router
        group = router.group(model)
        if group is None:
            raise bad_request(f"model {model!r} is not served by this gateway", param="model")
        if router.wildcards.ids.intersection(d.id for d in group.members):
            # a job is found again by its deployment id, which a wildcard's deployments share
            raise bad_request(f"model {model!r} is served through the wildcard {group.name!r}; a batch needs a "
                              "model_list entry naming its model", param="model", code="batch_unsupported")
        if not any(self._runs_batches(d) for d in group.members):
            raise bad_request(f"model {model!r} has no deployment whose provider runs batches", param="model",
                              code="batch_unsupported")

        async def submit(upstream: Upstream) -> tuple[str, dict[str, Any]]:
            client = self._batches(upstream)
            assert client is not None  # only eligible deployments are tried
            batch = await client.submit(lines, f"{input_file_id or 'messages'}.jsonl", metadata)
            if not isinstance(batch.get("id"), str):
                raise ProxyError(502, f"upstream {upstream.deployment.id} returned a batch without an id",
                                 type="upstream_error", code="upstream_bad_response")
            return upstream.deployment.id, batch

        deployment_id, batch = await self.pipeline.route(call, model, submit, self._runs_batches)
        who = call.record  # authorize filled in the key's identity
        job = Job(id=new_id(), owner=caller.scope,
                  key={"key_hash": who.key_hash, "key_alias": who.key_alias, "team_id": who.team_id}, model=model,
                  deployment=deployment_id, upstream_id=batch["id"], input_file_id=input_file_id,
                  metadata=metadata, created_at=int(time.time()), batch=batch, api=api,
                  custom_ids=[line["custom_id"] for line in lines])
        call.record.requested_model = model
        self.jobs.save(job)
        return job

    def visible(self, caller: Caller, api: str) -> list[Job]:
        """The caller's batches created through ``api``, newest first."""
        return [j for j in self.jobs.all() if j.api == api and (caller.admin or j.owner == caller.scope)]

    async def list_batches(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """The caller's batches, newest first, as last refreshed (retrieve one to refresh it)."""
        caller = await self.pipeline.authorize(request, call)
        limit = query_int(request.query.get("limit"), "limit", 20, _MAX_LIST)
        jobs = self.visible(caller, "openai")
        after = request.query.get("after")
        if after is not None:
            ids = [j.id for j in jobs]
            jobs = jobs[ids.index(after) + 1:] if after in ids else []
        page = jobs[:limit]
        data = [j.view() for j in page]
        return _json({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                      "last_id": data[-1]["id"] if data else None, "has_more": len(jobs) > len(page)})

    # -- helpers ---------------------------------------------------------------------------------
    async def _admit(self, caller: Caller, model: str) -> None:
        """The key may use ``model`` and is within budget; the cost itself is settled per line by the ledger."""
        keys = self.pipeline.keys
        if keys is not None and caller.key is not None:
            reservation = await keys.admit(caller, model, 0.0, 0)
            if reservation is not None:
                keys.settle(reservation, 0.0, 0)

    @staticmethod
    def _runs_batches(deployment: Deployment) -> bool:
        return deployment.mode != "embedding" and "batches" in registration(deployment.provider).capabilities

    @staticmethod
    def _batches(upstream: Upstream) -> UpstreamBatches | None:
        """The deployment's batch client, sending through its transport; None when its provider runs no batches."""
        deployment, transport = upstream.deployment, upstream.transport
        return batches_for(upstream.provider,
                           lambda data: fetch_whole(transport, data, deployment.timeout, deployment.id))

    def _upstream(self, job: Job) -> Upstream:
        if self.pipeline.router.deployment(job.deployment) is None:
            raise ProxyError(503, f"deployment {job.deployment!r} of batch {job.id} is no longer configured",
                             type="upstream_error", code="deployment_gone")
        return self.pipeline.upstreams[job.deployment]

    def _client(self, job: Job) -> UpstreamBatches:
        client = self._batches(self._upstream(job))
        if client is None:
            raise ProxyError(503, f"deployment {job.deployment!r} of batch {job.id} no longer runs batches",
                             type="upstream_error", code="deployment_gone")
        return client

    def _job(self, caller: Caller, batch_id: str, api: str) -> Job:
        job = self.jobs.get(batch_id)
        if job is None or job.api != api or not (caller.admin or job.owner == caller.scope):
            raise _not_found("batch", batch_id)
        return job

    def _lock(self, batch_id: str) -> asyncio.Lock:
        return self._locks.setdefault(batch_id, asyncio.Lock())

    async def cancel(self, caller: Caller, batch_id: str, api: str) -> Job:
        job = self._job(caller, batch_id, api)
        async with self._lock(batch_id):
            client = self._client(job)
            job.batch = await self.pipeline.router.pinned(job.deployment, lambda _: client.cancel(job.upstream_id))
            self.jobs.save(job)
        return job

    async def refresh(self, caller: Caller, batch_id: str, api: str) -> Job:
        """The batch's upstream state; once it has completed, its results collected, renamed and priced."""
        job = self._job(caller, batch_id, api)
        if job.collected:
            return job
        async with self._lock(batch_id):
            job = self._job(caller, batch_id, api)  # another request may have collected it meanwhile
            if job.collected:
                return job
            client = self._client(job)
            router = self.pipeline.router
            batch = await router.pinned(job.deployment, lambda _: client.retrieve(job.upstream_id))
            if batch.get("status") in FINAL:
                # A cancelled or expired batch may still have answered some lines: they are the client's, and billed.
                output, errors = await router.pinned(job.deployment,
                                                     lambda _: client.results(batch, job.custom_ids or []))
                store_results(job, self.files, output, errors)
                self._charge(job, output + errors)
            job.batch = batch
            self.jobs.save(job)
        self._locks.pop(batch_id, None)
        return job

    def _charge(self, job: Job, lines: list[dict[str, Any]]) -> None:
        """Each output line: a ledger row and a metrics observation (tokens, cost, status; no latency)."""
        accounting = self.pipeline.accounting
        for record in lines_to_records(job.id, lines, self._upstream(job).deployment, job.model, job.key):
            accounting.record(record)
