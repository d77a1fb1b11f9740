"""Mutable simulator state (knob overrides, scripted faults, request log, stats) and the ``/_sim`` API.

Tests of retries, fallbacks and cooldowns need to script what an upstream does next and then check
what it received; this module is that remote control.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from .behaviour import Fault, KnobError, Knobs, PromptCache, fault_from_knobs
from .httpserver import Reply, Request
from .openai import error_reply

if TYPE_CHECKING:
    from .server import SimApp

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")


@dataclass(slots=True)
class SimConfig:
    """Start-up configuration; ``POST /_sim/reset`` returns the live state to it."""

    host: str = "127.0.0.1"
    port: int = 8800
    api_key: str | None = None
    models: tuple[str, ...] = DEFAULT_MODELS
    model_knobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    record_limit: int = 1000
    seed: int = 0
    instance: str = "sim"
    tls_cert: str | None = None  # PEM certificate (and key below): serve HTTPS, like real providers
    tls_key: str | None = None
    replay: str | None = None  # a routing-records file: chat answers are the recorded ones (replay.Replay)
    knobs: Knobs = field(default_factory=Knobs)

    def __post_init__(self) -> None:
        if isinstance(self.models, str):
            self.models = tuple(m for m in self.models.split(",") if m)
        for model, overrides in self.model_knobs.items():
            self.knobs.merged(overrides, f"model_knobs.{model}")  # fail at start-up, not per request


@dataclass(slots=True)
class FaultRule:
    """The next ``remaining`` requests for ``model`` ('*' = any) fail as ``overrides`` says (-1 = forever)."""

    model: str
    overrides: dict[str, Any]
    remaining: int


class SimState:
    """Everything the control API can read or change."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.rng = random.Random(self.config.seed)
        self.defaults = self.config.knobs
        self.model_overrides: dict[str, dict[str, Any]] = {m: dict(o) for m, o in self.config.model_knobs.items()}
        self._knob_cache: dict[str, Knobs] = {}
        self.rules: deque[FaultRule] = deque()
        self.records: deque[Request] = deque(maxlen=max(0, self.config.record_limit))
        self.total = 0
        self.by_path: dict[str, int] = {}
        self.by_model: dict[str, int] = {}
        self.by_status: dict[str, int] = {}
        self.by_fault: dict[str, int] = {}
        self.disconnects = 0
        self.prompt_cache = PromptCache()

    # --- knobs ---

    def knobs(self, model: str, sim: object) -> Knobs:
        """Effective knobs for one request (raises KnobError for a bad ``sim`` object)."""
        knobs = self._knob_cache.get(model)
        if knobs is None:
            knobs = self.defaults.merged(self.model_overrides.get(model, {}), f"model_knobs.{model}")
            self._knob_cache[model] = knobs
        if sim is None:
            return knobs
        if not isinstance(sim, dict):
            raise KnobError("'sim' must be an object", "sim")
        return knobs.merged(sim)

    def configure(self, model: str | None, overrides: dict[str, Any]) -> None:
        """Change server defaults (model None or '*') or one model's overrides."""
        if model in (None, "*"):
            self.defaults = self.defaults.merged(overrides, "config")
        else:
            merged = {**self.model_overrides.get(model, {}), **overrides}
            self.defaults.merged(merged, "config")
            self.model_overrides[model] = merged
        self._knob_cache.clear()

    # --- faults ---

    def add_rule(self, model: str, overrides: dict[str, Any], count: int) -> FaultRule:
        Knobs().merged(overrides, "fault")  # validate now, not on the victim request
        rule = FaultRule(model, overrides, count)
        self.rules.append(rule)
        return rule

    def clear_rules(self, model: str | None) -> None:
        self.rules = deque(r for r in self.rules if model is not None and r.model != model)

    def _take_rule(self, model: str) -> FaultRule | None:
        """Consume one use of the oldest rule for ``model``, else the oldest wildcard rule."""
        if not self.rules:
            return None
        chosen = next((r for r in self.rules if r.model == model), None) or next(
            (r for r in self.rules if r.model == "*"), None)
        if chosen is not None and chosen.remaining > 0:
            chosen.remaining -= 1
            if chosen.remaining == 0:
                self.rules.remove(chosen)
        return chosen

    def pick_fault(self, req: Request, model: str, sim: object, knobs: Knobs) -> Fault | None:
        """Body ``sim.fault`` beats a scripted rule, which beats the configured fault rate."""
        if not (isinstance(sim, dict) and "fault" in sim) and (rule := self._take_rule(model)) is not None:
            knobs = knobs.merged(rule.overrides, "fault")  # a rule's fault_rate (default 1) still rolls
        fault = fault_from_knobs(knobs) if knobs.fault is not None and self._roll(knobs.fault_rate) else None
        if fault is not None:
            req.fault = fault.kind
        return fault

    def _roll(self, rate: float) -> bool:
        return rate >= 1.0 or self.rng.random() < rate

    # --- observation ---

    def observe(self, req: Request, reply: Reply) -> None:
        """Record a served request and count it; cheap enough for the benchmark hot path."""
        req.status = reply.status
        if self.records.maxlen:
            self.records.append(req)
        self.total += 1
        self.by_path[req.path] = self.by_path.get(req.path, 0) + 1
        if req.model is not None:
            self.by_model[req.model] = self.by_model.get(req.model, 0) + 1
        status = str(reply.status)
        self.by_status[status] = self.by_status.get(status, 0) + 1
        if req.fault is not None:
            self.by_fault[req.fault] = self.by_fault.get(req.fault, 0) + 1


def request_view(req: Request) -> dict[str, Any]:
    """JSON view of a recorded request; decoding happens here, not on the hot path."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in req.headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    body: Any = req.json
    if body is None and req.body:
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            body = req.body.decode("utf-8", "replace")
    return {"time": req.time, "method": req.method, "path": req.path, "query": req.query,
            "headers": headers, "body": body, "model": req.model, "status": req.status, "fault": req.fault}


# --- /_sim routes ---------------------------------------------------------------------------------


def _ok(obj: object) -> Reply:
    return Reply(200, orjson.dumps(obj))


def _bad(message: str, param: str | None = None) -> Reply:
    """Control-API errors use the OpenAI error shape, the simulator's native one."""
    return error_reply(400, message, "invalid_request_error", param=param)


def _query(req: Request) -> dict[str, str]:
    out = {}
    for part in req.query.split("&"):
        key, _, value = part.partition("=")
        if key:
            out[key] = value
    return out


def _json_object(req: Request) -> dict[str, Any] | Reply:
    if not req.body:
        return {}
    try:
        body = orjson.loads(req.body)
    except orjson.JSONDecodeError:
        return _bad("body is not valid JSON")
    return body if isinstance(body, dict) else _bad("body must be a JSON object")


def _rules_view(state: SimState) -> dict[str, Any]:
    return {"rules": [{"model": r.model, "count": r.remaining, **r.overrides} for r in state.rules]}


def add_fault(app: SimApp, req: Request) -> Reply:
    body = _json_object(req)
    if isinstance(body, Reply):
        return body
    model = body.pop("model", "*")
    count = body.pop("count", 1)
    if not isinstance(model, str) or not model:
        return _bad("'model' must be a model name or '*'", "model")
    if not isinstance(count, int) or isinstance(count, bool) or count == 0 or count < -1:
        return _bad("'count' must be a positive integer or -1", "count")
    if not isinstance(body.get("fault"), str):
        return _bad("'fault' is required", "fault")
    try:
        app.state.add_rule(model, body, count)
    except KnobError as exc:
        return _bad(str(exc), exc.param)
    return _ok(_rules_view(app.state))


def list_faults(app: SimApp, req: Request) -> Reply:
    return _ok(_rules_view(app.state))


def clear_faults(app: SimApp, req: Request) -> Reply:
    app.state.clear_rules(_query(req).get("model"))
    return _ok(_rules_view(app.state))


def list_requests(app: SimApp, req: Request) -> Reply:
    query = _query(req)
    records = list(app.state.records)
    for key in ("model", "path"):
        if key in query:
            records = [r for r in records if getattr(r, key) == query[key]]
    if query.get("limit", "").isdigit():
        limit = int(query["limit"])
        records = records[-limit:] if limit else []
    return _ok({"object": "list", "data": [request_view(r) for r in records]})


def clear_requests(app: SimApp, req: Request) -> Reply:
    app.state.records.clear()
    return _ok({"cleared": True})


def stats(app: SimApp, req: Request) -> Reply:
    s = app.state
    return _ok({"requests": s.total, "by_path": s.by_path, "by_model": s.by_model, "by_status": s.by_status,
                "by_fault": s.by_fault, "open_connections": len(app.connections),
                "disconnects": s.disconnects})


def reset(app: SimApp, req: Request) -> Reply:
    app.state.reset()
    return _ok({"reset": True})


def get_config(app: SimApp, req: Request) -> Reply:
    s = app.state
    return _ok({"defaults": s.defaults.as_dict(), "models": s.model_overrides})


def set_config(app: SimApp, req: Request) -> Reply:
    body = _json_object(req)
    if isinstance(body, Reply):
        return body
    model = body.pop("model", None)
    if model is not None and not isinstance(model, str):
        return _bad("'model' must be a string", "model")
    try:
        app.state.configure(model, body)
    except KnobError as exc:
        return _bad(str(exc), exc.param)
    return get_config(app, req)


def health(app: SimApp, req: Request) -> Reply:
    return _ok({"status": "ok", "instance": app.state.config.instance})


def register(app: SimApp) -> None:
    """Mount the control API under ``/_sim``."""
    for method, path, handler in (
        ("GET", "/_sim/health", health),
        ("POST", "/_sim/faults", add_fault),
        ("GET", "/_sim/faults", list_faults),
        ("DELETE", "/_sim/faults", clear_faults),
        ("GET", "/_sim/requests", list_requests),
        ("DELETE", "/_sim/requests", clear_requests),
        ("GET", "/_sim/stats", stats),
        ("POST", "/_sim/reset", reset),
        ("GET", "/_sim/config", get_config),
        ("POST", "/_sim/config", set_config),
    ):
        app.route(method, path, handler, None)
