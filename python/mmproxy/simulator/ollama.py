"""Ollama wire format: ``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/tags``, ``/api/version``.

Shapes follow Ollama's API docs: streaming is the default (``stream: false`` turns it off), streams
are NDJSON (``application/x-ndjson``, one object per line, the last with ``done: true``, the durations
in nanoseconds and the token counts), tool-call arguments are objects, errors are ``{"error": "..."}``.
Ollama has no authentication, so these routes accept any (or no) ``Authorization`` header.
"""

from __future__ import annotations

import base64
import binascii
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson

from .behaviour import (
    Fault,
    KnobError,
    Knobs,
    approx_tokens,
    canonical_json,
    content_seed,
    corpus_tokens,
    embedding_vector,
    fake_value,
    format_seconds,
    group,
    limit_tokens,
    schedule,
    split_tokens,
)
from .control import DEFAULT_MODELS
from .httpserver import Reply, Request, StreamBody

if TYPE_CHECKING:
    from .server import SimApp

VERSION = "0.6.5"
_JSON = b"application/json; charset=utf-8"
_NDJSON = b"application/x-ndjson"
_BAD_LINE = b'{"model":"broken","message":{"role":\n'
_LOAD_NS = 1_843_000  # load_duration of an already-loaded model
_PROMPT_NS_PER_TOKEN = 250_000
_EVAL_NS_PER_TOKEN = 12_000_000  # ~80 tokens/s, a mid-range GPU

# fault kind -> message; status comes from behaviour.STATUS_FAULTS
_FAULT_MESSAGES: dict[str, str] = {
    "400": "Simulated invalid request.",
    "400_context": "the input length exceeds the context length",
    "400_policy": "the request was rejected by the content policy",
    "401": "unauthorized",
    "404": 'model "{model}" not found, try pulling it first',
    "429": "too many requests, retry in {retry}s",
    "500": "llama runner process has terminated: signal: killed",
    "502": "bad gateway",
    "503": "server busy, please try again.  maximum pending requests exceeded",
}


# --- errors ---------------------------------------------------------------------------------------


def error_reply(status: int, message: str, headers: bytes = b"") -> Reply:
    return Reply(status, orjson.dumps({"error": message}), content_type=_JSON, headers=headers)


def knob_error(exc: KnobError) -> Reply:
    return error_reply(400, str(exc))


def fault_error(fault: Fault, model: str) -> Reply:
    retry = format_seconds(fault.retry_after)
    headers = b"retry-after: %s\r\n" % retry.encode() if fault.kind in ("429", "503") else b""
    return error_reply(fault.status, _FAULT_MESSAGES[fault.kind].format(model=model, retry=retry), headers)


class _OllamaWire:
    """Error renderers ``SimApp.serve_model`` needs from a wire format."""

    knob_error = staticmethod(knob_error)
    fault_error = staticmethod(fault_error)


_WIRE = _OllamaWire()


# --- request plumbing -----------------------------------------------------------------------------


def _tagged(name: str) -> str:
    """Ollama's model names default to the ``latest`` tag."""
    return name if ":" in name else name + ":latest"


def _pulled(app: SimApp, model: str) -> bool:
    """Any model is served unless the simulator was started with its own model list."""
    models = app.state.config.models
    return models == DEFAULT_MODELS or _tagged(model) in {_tagged(m) for m in models}


def _parse(app: SimApp, req: Request) -> tuple[dict[str, Any], str] | Reply:
    try:
        body = orjson.loads(req.body)
    except orjson.JSONDecodeError:
        return error_reply(400, "invalid character in request body: not valid JSON")
    if not isinstance(body, dict):
        return error_reply(400, "json: cannot unmarshal request body into a request object")
    req.json = body
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error_reply(400, "model is required")
    req.model = model
    if not _pulled(app, model):
        return error_reply(404, f'model "{model}" not found, try pulling it first')
    return body, model


def _iso(ts: float) -> str:
    """``created_at``: RFC 3339 UTC with sub-second digits, as Go prints it."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _stats(prompt_tokens: int, eval_tokens: int) -> dict[str, Any]:
    prompt_ns = prompt_tokens * _PROMPT_NS_PER_TOKEN
    eval_ns = eval_tokens * _EVAL_NS_PER_TOKEN
    return {"total_duration": _LOAD_NS + prompt_ns + eval_ns + 400_000, "load_duration": _LOAD_NS,
            "prompt_eval_count": prompt_tokens, "prompt_eval_duration": prompt_ns,
            "eval_count": eval_tokens, "eval_duration": eval_ns}


def _options(body: dict[str, Any]) -> tuple[int | None, list[str]] | Reply:
    """``num_predict`` (≤ 0 means unlimited) and ``stop`` from ``options``."""
    options = body.get("options") or {}
    if not isinstance(options, dict):
        return error_reply(400, "json: cannot unmarshal options into map[string]any")
    limit = options.get("num_predict")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
        return error_reply(400, "option \"num_predict\" must be of type integer")
    stop = options.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        return error_reply(400, "option \"stop\" must be of type array")
    return (limit if limit is not None and limit > 0 else None), stop


def _check_images(images: Any) -> Reply | None:
    if images is None:
        return None
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        return error_reply(400, "json: cannot unmarshal images into []ImageData")
    for image in images:
        try:
            base64.b64decode(image, validate=True)
        except (binascii.Error, ValueError):
            return error_reply(400, "illegal base64 data in image")
    return None


def _text_tokens(seed: int, knobs: Knobs, echo_text: str, limit: int | None, stop: list[str]
                 ) -> tuple[list[str], str]:
    if knobs.content is not None:
        tokens = split_tokens(knobs.content)
    elif knobs.echo:
        tokens = split_tokens(echo_text)
    else:
        tokens = corpus_tokens(seed, knobs.tokens)
    return limit_tokens(tokens, limit, stop)


def _stream(lines: list[dict[str, Any]], knobs: Knobs, tokens: int, start: float) -> Reply:
    """One NDJSON line per HTTP chunk: content lines paced like the OpenAI stream, the done line last."""
    due = schedule(0, len(lines) - 1, 1, knobs, tokens)
    events = []
    for line, at in zip(lines, due, strict=True):
        model = line.pop("model")  # rebuilt so the keys come in Ollama's order
        events.append(orjson.dumps({"model": model, "created_at": _iso(start + at), **line}) + b"\n")
    return Reply(200, stream=StreamBody(events, due, content_type=_NDJSON, bad_event=_BAD_LINE))


# --- /api/chat ------------------------------------------------------------------------------------


def _pick_tool(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | Reply | None:
    """The OpenAI module's rule: call the first tool, but answer in text right after a tool result."""
    tools = body.get("tools")
    if not tools:
        return None
    if not isinstance(tools, list) or not all(
        isinstance(t, dict) and isinstance(t.get("function"), dict) and isinstance(t["function"].get("name"), str)
        for t in tools
    ):
        return error_reply(400, "json: cannot unmarshal tools into []api.Tool")
    if messages and messages[-1].get("role") == "tool":
        return None
    return tools[0]["function"]


def _build_chat(app: SimApp, body: dict[str, Any], model: str, knobs: Knobs) -> Reply:
    messages = body.get("messages") or []
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return error_reply(400, "json: cannot unmarshal messages into []api.Message")
    for msg in messages:
        if msg.get("role") not in ("system", "user", "assistant", "tool"):
            return error_reply(400, f"invalid role: {msg.get('role')!r}")
        if not isinstance(msg.get("content") or "", str):
            return error_reply(400, "json: cannot unmarshal content into string")
        if (bad := _check_images(msg.get("images"))) is not None:
            return bad
    opts = _options(body)
    if isinstance(opts, Reply):
        return opts
    fn = _pick_tool(body, messages)
    if isinstance(fn, Reply):
        return fn
    now = time.time()
    streaming = body.get("stream") is not False
    if not messages:  # Ollama's "load the model" request
        done = {"model": model, "created_at": _iso(now), "message": {"role": "assistant", "content": ""},
                "done_reason": "load", "done": True}
        return _stream([done], knobs, 0, now) if streaming else Reply(200, orjson.dumps(done), content_type=_JSON)

    dumped = canonical_json(messages)
    seed = content_seed(dumped)
    prompt_tokens = approx_tokens(len(dumped) + (len(orjson.dumps(body["tools"])) if body.get("tools") else 0))
    call = None
    if fn is not None:
        args = fake_value(fn.get("parameters") or {"type": "object"}, seed)
        call = {"function": {"index": 0, "name": fn["name"], "arguments": args}}
        text, finish = "", "stop"  # Ollama reports a tool call as an ordinary stop
        pieces: list[str] = []
        eval_tokens = approx_tokens(len(fn["name"]) + len(orjson.dumps(args)))
    else:
        user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        tokens, finish = _text_tokens(seed, knobs, user, *opts)
        text, pieces, eval_tokens = "".join(tokens), group(tokens, knobs.chunks), len(tokens)
    stats = _stats(prompt_tokens, eval_tokens)

    if not streaming:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if call is not None:
            message["tool_calls"] = [call]
        obj = {"model": model, "created_at": _iso(now), "message": message, "done_reason": finish,
               "done": True, **stats}
        return Reply(200, orjson.dumps(obj), content_type=_JSON)
    lines: list[dict[str, Any]] = [
        {"model": model, "message": {"role": "assistant", "content": piece}, "done": False} for piece in pieces]
    if call is not None:
        lines.append({"model": model, "message": {"role": "assistant", "content": "", "tool_calls": [call]},
                      "done": False})
    if not lines:  # the first line is what the client waits for; Ollama always sends one before done
        lines.append({"model": model, "message": {"role": "assistant", "content": ""}, "done": False})
    lines.append({"model": model, "message": {"role": "assistant", "content": ""}, "done_reason": finish,
                  "done": True, **stats})
    return _stream(lines, knobs, eval_tokens, now)


def chat(app: SimApp, req: Request) -> Reply:
    parsed = _parse(app, req)
    if isinstance(parsed, Reply):
        return parsed
    return app.serve_model(req, *parsed, _build_chat, _WIRE)


# --- /api/generate --------------------------------------------------------------------------------


def _build_generate(app: SimApp, body: dict[str, Any], model: str, knobs: Knobs) -> Reply:
    prompt = body.get("prompt", "")
    system = body.get("system", "")
    if not isinstance(prompt, str) or not isinstance(system, str):
        return error_reply(400, "json: cannot unmarshal prompt into string")
    if (bad := _check_images(body.get("images"))) is not None:
        return bad
    opts = _options(body)
    if isinstance(opts, Reply):
        return opts
    now = time.time()
    streaming = body.get("stream") is not False
    if not prompt:  # an empty prompt only loads the model
        done = {"model": model, "created_at": _iso(now), "response": "", "done": True, "done_reason": "load"}
        return _stream([done], knobs, 0, now) if streaming else Reply(200, orjson.dumps(done), content_type=_JSON)
    dumped = canonical_json([system, prompt])
    seed = content_seed(dumped)
    tokens, finish = _text_tokens(seed, knobs, prompt, *opts)
    prompt_tokens = approx_tokens(len(dumped))
    stats = _stats(prompt_tokens, len(tokens))
    # ``context`` (deprecated, still sent): the token ids of this exchange, for the next request.
    context = list(range(1, min(prompt_tokens + len(tokens), 64) + 1))
    if not streaming:
        obj = {"model": model, "created_at": _iso(now), "response": "".join(tokens), "done": True,
               "done_reason": finish, "context": context, **stats}
        return Reply(200, orjson.dumps(obj), content_type=_JSON)
    lines = [{"model": model, "response": piece, "done": False} for piece in group(tokens, knobs.chunks)]
    if not lines:
        lines.append({"model": model, "response": "", "done": False})
    lines.append({"model": model, "response": "", "done": True, "done_reason": finish, "context": context,
                  **stats})
    return _stream(lines, knobs, len(tokens), now)


def generate(app: SimApp, req: Request) -> Reply:
    parsed = _parse(app, req)
    if isinstance(parsed, Reply):
        return parsed
    return app.serve_model(req, *parsed, _build_generate, _WIRE)


# --- /api/embed -----------------------------------------------------------------------------------


def _build_embed(app: SimApp, body: dict[str, Any], model: str, knobs: Knobs) -> Reply:
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
        return error_reply(400, "invalid input type")
    dims = body.get("dimensions")
    if dims is None:
        dims = knobs.embedding_dims
    elif not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 8192:
        return error_reply(400, "dimensions must be a positive integer")
    vectors = [embedding_vector(item.encode(), dims).tolist() for item in inputs]
    tokens = sum(approx_tokens(len(item)) for item in inputs)
    stats = _stats(tokens, 0)
    obj = {"model": model, "embeddings": vectors, "total_duration": stats["total_duration"],
           "load_duration": _LOAD_NS, "prompt_eval_count": tokens}
    return Reply(200, orjson.dumps(obj), content_type=_JSON)


def embed(app: SimApp, req: Request) -> Reply:
    parsed = _parse(app, req)
    if isinstance(parsed, Reply):
        return parsed
    return app.serve_model(req, *parsed, _build_embed, _WIRE)


# --- /api/tags, /api/version ----------------------------------------------------------------------


def tags(app: SimApp, req: Request) -> Reply:
    models = []
    for name in app.state.config.models:
        digest = content_seed(name.encode()).to_bytes(8, "little").hex() * 4
        models.append({
            "name": _tagged(name), "model": _tagged(name), "modified_at": "2024-06-07T12:00:00.000000Z",
            "size": 4_661_224_676, "digest": digest,
            "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                        "parameter_size": "8.0B", "quantization_level": "Q4_0"},
        })
    return Reply(200, orjson.dumps({"models": models}), content_type=_JSON)


def version(app: SimApp, req: Request) -> Reply:
    return Reply(200, orjson.dumps({"version": VERSION}), content_type=_JSON)


def register(app: SimApp) -> None:
    app.route("POST", "/api/chat", chat, None)
    app.route("POST", "/api/generate", generate, None)
    app.route("POST", "/api/embed", embed, None)
    app.route("GET", "/api/tags", tags, None)
    app.route("GET", "/api/version", version, None)
