"""The dashboard's HTTP handlers: pages, login, static files and the JSON and live feeds the pages read.

Handlers orchestrate only. Who may see what is the API's rule: the master key sees everything and manages keys
(through the same ``/key/*`` endpoints, called from the page with its session); a virtual key sees its own
requests. Figures come from the ledger (so every worker and instance agrees), the router's health, and the
live log of the worker the page is connected to.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from importlib import resources
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from mmproxy.db.queries import GROUPS
from mmproxy.errors import ProxyError, auth_error, bad_request
from mmproxy.keys import sessions
from mmproxy.keys.manager import MASTER, Caller
from mmproxy.pipeline.call import Call
from mmproxy.pipeline.live_log import Watcher
from mmproxy.server.admin import Admin, savings
from mmproxy.server.gateway import Gateway
from mmproxy.ui import pages
from mmproxy.validation import query_int

_STATIC = {"app.js": "text/javascript", "style.css": "text/css", "uPlot.iife.min.js": "text/javascript",
           "uPlot.min.css": "text/css"}
_MAX_PERIOD_S = 90 * 86400
_BUCKETS_S = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400)
_DECISION_ROWS = 2000  # the latest decisions summarised on the routing page
_LIVE_TICK_S = 0.25  # a watcher gets at most one event this often, however busy the gateway
_PAGE_HEADERS = {"Content-Security-Policy": pages.CSP, "X-Frame-Options": "DENY", "Cache-Control": "no-store",
                 "Referrer-Policy": "no-referrer"}


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=_PAGE_HEADERS)


class Dashboard:
    def __init__(self, gateway: Gateway, admin: Admin) -> None:
        self.gateway = gateway
        self.admin = admin
        self._static: dict[str, bytes] = {}

    # -- pages -----------------------------------------------------------------------------------
    async def page(self, request: web.BaseRequest) -> web.StreamResponse:
        caller = await self._session(request)
        if caller is None:
            return _html(pages.login())
        return _html(pages.shell(_who(caller), caller.admin))

    async def login(self, request: web.BaseRequest) -> web.StreamResponse:
        keys = self.gateway.keys
        if keys is None:  # no master key: the dashboard is as open as the API
            return _see_dashboard()
        try:
            form = await request.post()
        except (ValueError, BadHttpMessage):  # a form that does not parse
            return _html(pages.login("send the key in a form field named key"), status=400)
        supplied = form.get("key")
        try:
            caller = await keys.authenticate(supplied if isinstance(supplied, str) else None)
        except ProxyError as exc:
            return _html(pages.login(exc.message), status=401)
        subject = sessions.ADMIN if caller.key is None else caller.key.record.key_hash
        response = _see_dashboard()
        secure = request.secure or request.headers.get("X-Forwarded-Proto") == "https"
        response.set_cookie(sessions.COOKIE, keys.sessions.issue(subject), max_age=sessions.LIFETIME_S,
                            path="/", httponly=True, samesite="Strict", secure=secure)
        return response

    async def logout(self, request: web.BaseRequest) -> web.StreamResponse:
        response = _see_dashboard()
        response.del_cookie(sessions.COOKIE, path="/")
        return response

    async def static(self, request: web.BaseRequest) -> web.StreamResponse:
        name = request.path.removeprefix("/ui/static/")
        kind = _STATIC.get(name)
        if kind is None:
            return web.Response(status=404, text="not found")
        body = self._static.get(name)
        if body is None:
            body = self._static[name] = resources.files("mmproxy.ui").joinpath(f"static/{name}").read_bytes()
        return web.Response(body=body, content_type=kind, headers={"Cache-Control": "no-cache"})

    async def _session(self, request: web.BaseRequest) -> Caller | None:
        keys = self.gateway.keys
        if keys is None:
            return MASTER
        try:
            return await keys.authenticate_session(request.cookies.get(sessions.COOKIE))
        except ProxyError:
            return None

    # -- data --------------------------------------------------------------------------------------
    async def report(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """Spend, requests, successes and savings per group, in total and per time bucket, over a period."""
        caller = await self.gateway.pipeline.authorize(request, call)
        group_by = request.query.get("group_by", "model")
        if group_by not in GROUPS:
            raise bad_request(f"group_by must be one of {', '.join(GROUPS)}", param="group_by")
        period = _period(request.query.get("period"))
        bucket = next((b for b in _BUCKETS_S if period / b <= 60), _BUCKETS_S[-1])
        start = (time.time() // bucket) * bucket - period + bucket
        own = None if caller.key is None else caller.key.record.key_hash
        db, stored = await self.admin.fresh_db(), self.admin.db_call
        totals = await stored(db.spend_report(group_by, start, key_hash=own))
        series = await stored(db.spend_report(group_by, start, key_hash=own, bucket_s=bucket))
        by_cache = totals if group_by == "cache" else await stored(db.spend_report("cache", start, key_hash=own))
        return web.Response(body=orjson.dumps({
            "group_by": group_by, "start": start, "bucket_s": bucket, "totals": totals, "series": series,
            "cache": by_cache, "savings": savings(by_cache)}), content_type="application/json")

    async def decisions(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """What the virtual models decided lately: per learned router, cascade, verifier, consensus or review,
        how often each outcome came up (the model chosen, the stage that answered, the verdict)."""
        caller = await self.gateway.pipeline.authorize(request, call)
        period = _period(request.query.get("period"))
        own = None if caller.key is None else caller.key.record.key_hash
        db = await self.admin.fresh_db()
        rows = await self.admin.db_call(db.spend_logs(key_hash=own, start=time.time() - period, limit=_DECISION_ROWS))
        outcomes: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        escalated: Counter[str] = Counter()
        for row in rows:
            if not row.get("decision"):
                continue
            kind, name, outcome, escalation = _decision(orjson.loads(row["decision"]))
            outcomes[kind, name][outcome] += 1
            escalated[name] += escalation
        body = [{"kind": kind, "name": name, "requests": sum(counts.values()), "outcomes": dict(counts.most_common()),
                 "escalated": escalated[name] if kind == "cascade" else None}
                for (kind, name), counts in sorted(outcomes.items())]
        return web.Response(body=orjson.dumps({"rows_read": len(rows), "virtual_models": body}),
                            content_type="application/json")

    async def live(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """Server-sent events: a batch of finished requests at most every quarter second."""
        caller = await self._session(request)  # an EventSource cannot send headers; a read needs no CSRF guard
        if caller is None:
            raise auth_error("no dashboard session: log in at /ui")
        watcher = Watcher(None if caller.key is None else caller.key.record.key_hash)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        live = self.gateway.live
        live.watchers.add(watcher)
        try:
            await response.write(b": connected\n\n")
            while not live.closed:
                try:
                    await asyncio.wait_for(watcher.ready.wait(), 15)
                except asyncio.TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                lines, dropped = watcher.take()
                await response.write(b"data: " + orjson.dumps({"lines": lines, "dropped": dropped}) + b"\n\n")
                await asyncio.sleep(_LIVE_TICK_S)
        finally:
            live.watchers.discard(watcher)
        return response


def _see_dashboard() -> web.Response:
    return web.Response(status=303, headers={"Location": "/ui"})


def _who(caller: Caller) -> str:
    if caller.key is None:
        return "master key"
    record = caller.key.record
    return f"key {record.key_alias or record.key_name}"


def _period(raw: str | None) -> int:
    return query_int(raw, "period", 86400, _MAX_PERIOD_S, minimum=60)


def _decision(decision: dict[str, Any]) -> tuple[str, str, str, int]:
    """(kind, virtual model, outcome, escalated 0/1) of one ledger decision."""
    if "cascade" in decision:
        escalated = int(len(decision.get("stages") or ()) > 1)
        return "cascade", decision["cascade"], str(decision.get("answered_by")), escalated
    if "router" in decision:
        return "router", decision["router"], str(decision.get("choice")), 0
    if "verify" in decision:
        return "verify", decision["verify"], f"{decision.get('verdict')} ({decision.get('action')})", 0
    if "consensus" in decision:
        return "consensus", decision["consensus"], str(decision.get("majority")), 0
    if "review" in decision:
        return "review", decision["review"], f"{decision.get('findings', 0)} findings", 0
    return "other", "?", "?", 0
