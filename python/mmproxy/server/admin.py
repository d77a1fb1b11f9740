"""Administration endpoints: LiteLLM's ``/key/*`` and spend queries, feedback, Prometheus metrics.

They orchestrate only: field rules live in ``keys.fields``, budgets in ``keys.manager``, storage in ``db``.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

import orjson
from aiohttp import web

from mmproxy.db import Database
from mmproxy.db.base import KeyRecord
from mmproxy.errors import ProxyError, bad_request
from mmproxy.keys import fields
from mmproxy.keys.manager import Keys, display_name, hash_key, new_key
from mmproxy.metrics import CONTENT_TYPE
from mmproxy.pipeline.call import Call
from mmproxy.server.gateway import Gateway
from mmproxy.validation import query_int

_JSON = "application/json"
_GROUPS = ("model", "model_group", "deployment", "key", "team", "tier", "rule", "provider", "cache")
_MAX_LIMIT = 1000  # rows a page holds; a larger size or limit is cut to it
_MAX_PAGE = 2**31 - 1  # pages times their size stay an offset the database's 64-bit integers hold


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON)


class Admin:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @property
    def _db(self) -> Database:
        db = self.gateway.db
        if db is None:
            raise ProxyError(400, "no database: set general_settings.master_key or enable spend logs",
                             code="no_database")
        return db

    @property
    def _keys(self) -> Keys:
        keys = self.gateway.keys
        assert keys is not None  # require_admin has checked
        return keys

    async def fresh_db(self) -> Database:
        """The database, with every queued ledger row written: what a report reads next is complete."""
        await self._flush()
        return self._db

    async def _flush(self) -> None:
        """Write queued ledger rows before a read, so a client sees its own requests."""
        ledger = self.gateway.ledger
        if ledger is None:
            return
        try:
            await ledger.flush()
        except Exception as exc:
            raise ProxyError(503, f"the spend database is unavailable: {self._db.describe_error(exc)}",
                             type="service_unavailable", code="database_unavailable") from None

    async def _body(self, request: web.BaseRequest) -> dict[str, Any]:
        return (await self.gateway.pipeline.read_json(request))[0]

    # -- keys ------------------------------------------------------------------------------------
    async def key_generate(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        await self.gateway.require_admin(request)
        body = await self._body(request)
        now = time.time()
        changes, ignored = fields.parse_fields(body, now)
        clear = body.get("key")
        if clear is None:
            clear = new_key()
        elif not isinstance(clear, str) or not clear.startswith("sk-") or len(clear) < 12:
            raise bad_request("key must be a string starting with 'sk-' and at least 12 characters long",
                              param="key")
        record = KeyRecord(
            key_hash=hash_key(clear), key_name=display_name(clear), key_alias=None, team_id=None, user_id=None,
            models=[], max_budget=None, budget_duration=None, budget_reset_at=None, spend=0.0, rpm_limit=None,
            tpm_limit=None, metadata={}, expires=None, created_at=now,
        )
        for name, value in changes.items():
            setattr(record, name, value)
        if self._keys.known(record.key_hash) is not None or await self._db.get_key(record.key_hash) is not None:
            raise ProxyError(409, "this key already exists", code="key_exists", param="key")
        await self._db.insert_key(record)
        self._keys.add(record)
        # The only time the clear key is shown.
        return _json({"key": clear, **fields.view(record), "ignored_fields": ignored})

    async def _find(self, supplied: Any) -> KeyRecord:
        """A key by its clear value or its hash (``token``), as LiteLLM accepts both."""
        if not isinstance(supplied, str) or not supplied:
            raise bad_request("key is required (the key itself or its token)", param="key")
        key_hash = supplied if len(supplied) == 64 and not supplied.startswith("sk-") else hash_key(supplied)
        record = await self._db.get_key(key_hash)
        if record is None:
            raise ProxyError(404, "no such key", code="key_not_found", param="key")
        state = self._keys.known(key_hash)
        if state is not None:  # this process may be ahead of the ledger's last write
            record.spend = max(record.spend, state.record.spend)
        return record

    async def key_info(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        await self.gateway.require_admin(request)
        record = await self._find(request.query.get("key"))
        return _json({"key": record.key_hash, "info": fields.view(record)})

    async def key_update(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        await self.gateway.require_admin(request)
        body = await self._body(request)
        record = await self._find(body.get("key"))
        changes, ignored = fields.parse_fields(body, time.time())
        updated = await self._db.update_key(record.key_hash, changes) if changes else record
        if updated is None:
            raise ProxyError(404, "no such key", code="key_not_found", param="key")
        self._keys.add(updated)
        return _json({**fields.view(updated), "ignored_fields": ignored})

    async def key_delete(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        await self.gateway.require_admin(request)
        body = await self._body(request)
        supplied = body.get("keys")
        if not isinstance(supplied, list) or not supplied:
            raise bad_request("keys must be a non-empty list of keys or tokens", param="keys")
        records = [await self._find(key) for key in supplied]
        hashes = [r.key_hash for r in records]
        await self._db.delete_keys(hashes)
        self._keys.forget(hashes)
        return _json({"deleted_keys": hashes})

    async def key_list(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        await self.gateway.require_admin(request)
        query = request.query
        page = query_int(query.get("page"), "page", 1, _MAX_PAGE)
        size = min(query_int(query.get("size"), "size", 100, _MAX_PAGE), _MAX_LIMIT)
        team = query.get("team_id")
        records = await self._db.list_keys(team, limit=size, offset=(page - 1) * size)
        full = query.get("return_full_object") == "true"
        keys = [fields.view(r) for r in records] if full else [r.key_hash for r in records]
        return _json({"keys": keys, "current_page": page, "size": size})

    # -- spend -----------------------------------------------------------------------------------
    async def spend_logs(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        await self.gateway.require_admin(request)
        query = request.query
        await self._flush()
        api_key = query.get("api_key")
        rows = await self._db.spend_logs(
            request_id=query.get("request_id"),
            key_hash=hash_key(api_key) if api_key and api_key.startswith("sk-") else api_key,
            team_id=query.get("team_id"),
            model=query.get("model"),
            start=_time(query, "start"),
            end=_time(query, "end"),
            limit=min(query_int(query.get("limit"), "limit", 100, _MAX_PAGE), _MAX_LIMIT),
        )
        return _json(rows)

    async def spend_report(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        await self.gateway.require_admin(request)
        query = request.query
        group_by = query.get("group_by", "model")
        if group_by not in _GROUPS:
            raise bad_request(f"group_by must be one of {', '.join(_GROUPS)}", param="group_by")
        await self._flush()
        start, end = _time(query, "start"), _time(query, "end")
        rows = await self._db.spend_report(group_by, start, end)
        by_cache = rows if group_by == "cache" else await self._db.spend_report("cache", start, end)
        return _json({"group_by": group_by, "start": start, "end": end, "groups": rows,
                      "savings": savings(by_cache)})

    async def feedback(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """A score or label for an earlier answer, stored beside its ledger row."""
        await self.gateway.pipeline.authorize(request)
        body = await self._body(request)
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise bad_request("request_id is required (the x-mmproxy-request-id of the answer)", param="request_id")
        score = body.get("score")
        if score is not None and (not isinstance(score, (int, float)) or isinstance(score, bool)
                                  or not 0.0 <= score <= 1.0):
            raise bad_request("score must be a number from 0 (bad) to 1 (good)", param="score")
        label, comment = body.get("label"), body.get("comment")
        for name, value in (("label", label), ("comment", comment)):
            if value is not None and not isinstance(value, str):
                raise bad_request(f"{name} must be a string", param=name)
        if score is None and label is None:
            raise bad_request("send a score, a label or both", param="score")
        await self._flush()
        if not await self._db.add_feedback(request_id, None if score is None else float(score), label, comment):
            raise ProxyError(404, f"no request {request_id!r} in the spend ledger", code="request_not_found",
                             param="request_id")
        return _json({"request_id": request_id, "stored": True})

    async def metrics(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        metrics = self.gateway.metrics
        if metrics is None:
            raise ProxyError(404, "metrics are disabled (general_settings.disable_metrics)", code="not_found")
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})


def savings(by_cache: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Tokens and money each kind of caching saved: gateway hits (exact, semantic) and provider prompt caches."""
    out = {"exact": {"requests": 0, "tokens": 0, "usd": 0.0}, "semantic": {"requests": 0, "tokens": 0, "usd": 0.0},
           "prompt": {"tokens": 0, "usd": 0.0}}
    for row in by_cache:
        kind = {"hit": "exact", "semantic-hit": "semantic"}.get(row["group"])
        if kind is not None:
            out[kind]["requests"] += row["requests"]
            out[kind]["tokens"] += row["prompt_tokens"] + row["completion_tokens"]
            out[kind]["usd"] += row["saved_usd"][kind]
        else:
            out["prompt"]["tokens"] += row["cached_tokens"]
            out["prompt"]["usd"] += row["saved_usd"]["prompt"]
    return out


def _time(query: Any, name: str) -> float | None:
    """Epoch seconds from ``name`` or LiteLLM's ``<name>_date``: epoch seconds, a date or an ISO 8601 time."""
    raw = query.get(name) or query.get(f"{name}_date")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):  # "inf", "nan" and 400 nines parse too
            return seconds
        raise _bad_time(name)
    try:
        parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise _bad_time(name) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def _bad_time(name: str) -> ProxyError:
    return bad_request(f"{name} must be epoch seconds, a date (2026-11-28) or an ISO 8601 time", param=name)
