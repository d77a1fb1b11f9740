"""Administration endpoints: LiteLLM's ``/key/*`` and spend queries, feedback, Prometheus metrics.

They orchestrate only: field rules live in ``keys.fields``, budgets in ``keys.manager``, storage in ``db``.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from aiohttp import web

from mmproxy.db.base import KeyRecord
from mmproxy.errors import ProxyError, bad_request
from mmproxy.keys import fields
from mmproxy.keys.manager import hash_key, new_key
from mmproxy.metrics import CONTENT_TYPE
from mmproxy.pipeline.call import Call
from mmproxy.server.management import MAX_LIMIT, MAX_PAGE, Management, json_response, page
from mmproxy.validation import query_int

_GROUPS = ("model", "model_group", "deployment", "key", "team", "tier", "rule", "provider", "cache")


class Admin(Management):
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
        record = await self.create_key(clear, changes, now)
        # The only time the clear key is shown.
        return json_response({"key": clear, **fields.view(record), "ignored_fields": ignored})

    async def _find(self, supplied: Any) -> KeyRecord:
        """A key by its clear value or its hash (``token``), as LiteLLM accepts both."""
        if not isinstance(supplied, str) or not supplied:
            raise bad_request("key is required (the key itself or its token)", param="key")
        key_hash = supplied if len(supplied) == 64 and not supplied.startswith("sk-") else hash_key(supplied)
        record = await self.db_call(self._db.get_key(key_hash))
        if record is None:
            raise ProxyError(404, "no such key", code="key_not_found", param="key")
        self._catch_up(record)
        return record

    async def key_info(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        await self.gateway.require_admin(request)
        record = await self._find(request.query.get("key"))
        return json_response({"key": record.key_hash, "info": fields.view(record)})

    async def key_update(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        await self.gateway.require_admin(request)
        body = await self._body(request)
        record = await self._find(body.get("key"))
        now = time.time()
        changes, ignored = fields.parse_fields(body, now)
        await self._check_owners(changes, now)
        updated = await self._update(record, "key", changes)
        return json_response({**fields.view(updated), "ignored_fields": ignored})

    async def key_delete(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        await self.gateway.require_admin(request)
        body = await self._body(request)
        supplied = body.get("keys")
        if not isinstance(supplied, list) or not supplied:
            raise bad_request("keys must be a non-empty list of keys or tokens", param="keys")
        records = [await self._find(key) for key in supplied]
        hashes = [r.key_hash for r in records]
        await self.db_call(self._db.delete_keys(hashes))
        self._keys.forget(KeyRecord, hashes)
        return json_response({"deleted_keys": hashes})

    async def key_list(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        await self.gateway.require_admin(request)
        query = request.query
        number, size = page(query)
        records = await self.db_call(self._db.list_records(KeyRecord, size, (number - 1) * size,
                                                            team_id=query.get("team_id"),
                                                            user_id=query.get("user_id")))
        full = query.get("return_full_object") == "true"
        keys = [fields.view(r) for r in records] if full else [r.key_hash for r in records]
        return json_response({"keys": keys, "current_page": number, "size": size})

    # -- spend -----------------------------------------------------------------------------------
    async def spend_logs(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        await self.gateway.require_admin(request)
        query = request.query
        await self._flush()
        api_key = query.get("api_key")
        rows = await self.db_call(self._db.spend_logs(
            request_id=query.get("request_id"),
            key_hash=hash_key(api_key) if api_key and api_key.startswith("sk-") else api_key,
            team_id=query.get("team_id"),
            model=query.get("model"),
            start=_time(query, "start"),
            end=_time(query, "end"),
            limit=min(query_int(query.get("limit"), "limit", 100, MAX_PAGE), MAX_LIMIT),
        ))
        return json_response(rows)

    async def spend_report(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        await self.gateway.require_admin(request)
        query = request.query
        group_by = query.get("group_by", "model")
        if group_by not in _GROUPS:
            raise bad_request(f"group_by must be one of {', '.join(_GROUPS)}", param="group_by")
        await self._flush()
        start, end = _time(query, "start"), _time(query, "end")
        rows = await self.db_call(self._db.spend_report(group_by, start, end))
        by_cache = rows if group_by == "cache" else await self.db_call(self._db.spend_report("cache", start, end))
        return json_response({"group_by": group_by, "start": start, "end": end, "groups": rows,
                              "savings": savings(by_cache)})

    async def feedback(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """A score or label for an earlier answer, stored beside its ledger row. A virtual key rates only its own
        (or its team's) requests: another's is as unknown as one that never was, so ids cannot be probed."""
        caller = await self.gateway.pipeline.authorize(request)
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
        if not caller.admin:
            rows = await self.db_call(self._db.spend_logs(request_id=request_id, limit=1))
            if not rows or not caller.owns(rows[0]["key_hash"], rows[0]["team_id"]):
                raise _unknown_request(request_id)
        if not await self.db_call(self._db.add_feedback(request_id, None if score is None else float(score), label,
                                                          comment)):
            raise _unknown_request(request_id)
        return json_response({"request_id": request_id, "stored": True})

    async def metrics(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        metrics = self.gateway.metrics
        if metrics is None:
            raise ProxyError(404, "metrics are disabled (general_settings.disable_metrics)", code="not_found")
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})


def _unknown_request(request_id: str) -> ProxyError:
    return ProxyError(404, f"no request {request_id!r} in the spend ledger", code="request_not_found",
                      param="request_id")


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
