"""OpenAI wire format: chat completions (plain, streamed, tool calls), embeddings, models, errors.

Routes answer both with and without the ``/v1`` prefix because gateways and SDKs disagree on whether
the base URL carries it. Shapes follow OpenAI's API reference; see ``behaviour`` for the token rule.
"""

from __future__ import annotations

import base64
import itertools
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

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
    float32_le_bytes,
    format_seconds,
    group,
    limit_tokens,
    schedule,
    split_tokens,
)
from .httpserver import Reply, Request, StreamBody, same_secret

if TYPE_CHECKING:
    from .replay import Replay
    from .server import SimApp

_ID_PREFIX = secrets.token_hex(6)
_ids = itertools.count(1)
_MODEL_CREATED = 1_700_000_000

_INVALID_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
    "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
)

# fault kind -> (error type, code, message template, param); status comes from behaviour.STATUS_FAULTS
_FAULT_ERRORS: dict[str, tuple[str, str | None, str, str | None]] = {
    "400": ("invalid_request_error", None, "Simulated invalid request.", None),
    "400_context": (
        "invalid_request_error", "context_length_exceeded",
        "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 "
        "tokens. Please reduce the length of the messages.", "messages"),
    "400_policy": ("invalid_request_error", "content_policy_violation",
                   "Your request was rejected as a result of our safety system.", None),
    "401": ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-sim***.", None),
    "404": ("invalid_request_error", "model_not_found",
            "The model `{model}` does not exist or you do not have access to it.", None),
    "429": ("requests", "rate_limit_exceeded",
            "Rate limit reached for {model} on requests per min (RPM): Limit 3, Used 3, Requested 1. "
            "Please try again in {retry}s.", None),
    "500": ("server_error", None,
            "The server had an error while processing your request. Sorry about that!", None),
    "502": ("server_error", "bad_gateway", "Bad gateway.", None),
    "503": ("service_unavailable_error", "server_is_overloaded",
            "The server is overloaded or not ready yet.", None),
}


# --- errors ---------------------------------------------------------------------------------------


def error_reply(status: int, message: str, err_type: str, code: str | None = None,
                param: str | None = None, headers: bytes = b"") -> Reply:
    """An OpenAI-shaped error: ``{"error": {message, type, param, code}}``."""
    body = {"error": {"message": message, "type": err_type, "param": param, "code": code}}
    return Reply(status, orjson.dumps(body), headers=headers)


def invalid(message: str, param: str | None = None, code: str | None = None) -> Reply:
    return error_reply(400, message, "invalid_request_error", code, param)


def knob_error(exc: KnobError) -> Reply:
    return invalid(str(exc), exc.param)


def fault_error(fault: Fault, model: str) -> Reply:
    err_type, code, template, param = _FAULT_ERRORS[fault.kind]
    retry = format_seconds(fault.retry_after)
    headers = b""
    if fault.kind in ("429", "503"):
        headers = b"retry-after: %s\r\nretry-after-ms: %d\r\n" % (retry.encode(), round(fault.retry_after * 1000))
    return error_reply(fault.status, template.format(model=model, retry=retry), err_type, code, param, headers)


def not_found(app: SimApp, req: Request) -> Reply:
    return error_reply(404, f"Invalid URL ({req.method} {req.path})", "invalid_request_error")


def check_auth(app: SimApp, req: Request) -> Reply | None:
    """``Authorization: Bearer <key>`` when the simulator was started with an API key."""
    got = req.header(b"authorization")
    if same_secret(got, app.bearer):
        return None
    message = ("You didn't provide an API key. You need to provide your API key in an Authorization header "
               "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)." if got is None
               else "Incorrect API key provided.")
    return error_reply(401, message, "invalid_request_error", "invalid_api_key")


# --- request plumbing -----------------------------------------------------------------------------


def _parse(req: Request, required: str, default_model: str | None = None) -> tuple[dict[str, Any], str] | Reply:
    """Decode the JSON body and pull out the model; records both on the request for the control API.

    ``default_model``: the model when the body names none (Azure puts the deployment in the path).
    """
    try:
        body = orjson.loads(req.body)
    except orjson.JSONDecodeError:
        return invalid(_INVALID_JSON)
    if not isinstance(body, dict):
        return invalid(_INVALID_JSON)
    if default_model is not None:
        body.setdefault("model", default_model)
    req.json = body
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return invalid("you must provide a model parameter", "model")
    req.model = model
    if required not in body:
        return invalid(f"Missing required parameter: '{required}'.", required)
    return body, model


def _int_param(body: dict[str, Any], name: str, default: int | None, lo: int, hi: int) -> int | Reply | None:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        return invalid(f"Invalid '{name}': expected an integer between {lo} and {hi}.", name)
    return value


def _new_id(prefix: str) -> str:
    return f"{prefix}{_ID_PREFIX}{next(_ids):010x}"


def _fingerprint(app: SimApp) -> str:
    return f"fp_{app.state.config.instance}"


# --- chat completions -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Answer:
    """One choice: text or a single tool call, pre-split into stream pieces."""

    text: str | None
    pieces: list[str]
    tool_call: dict[str, Any] | None
    finish: str
    tokens: int

    def message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": self.text, "refusal": None, "annotations": []}
        if self.tool_call is not None:
            msg["tool_calls"] = [self.tool_call]
        return msg

    def first_delta(self) -> dict[str, Any]:
        if self.tool_call is None:
            return {"role": "assistant", "content": "", "refusal": None}
        call = self.tool_call
        return {"role": "assistant", "content": None, "refusal": None, "tool_calls": [{
            "index": 0, "id": call["id"], "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""}}]}

    def piece_delta(self, piece: str) -> dict[str, Any]:
        if self.tool_call is None:
            return {"content": piece}
        return {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}


def _pick_tool(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | Reply | None:
    """The function to call, or None for a text answer.

    ``auto`` after a tool result answers in text, so agent loops against the simulator terminate.
    """
    tools = body.get("tools")
    if not tools:
        return None
    if not isinstance(tools, list) or not all(
        isinstance(t, dict) and isinstance(t.get("function"), dict) and isinstance(t["function"].get("name"), str)
        for t in tools
    ):
        return invalid("Invalid 'tools': expected an array of function tools.", "tools")
    choice = body.get("tool_choice") or "auto"
    if choice == "none":
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        fn = next((t["function"] for t in tools if t["function"]["name"] == name), None)
        if fn is None:
            return invalid(f"Invalid 'tool_choice': no function named {name!r} in 'tools'.", "tool_choice")
        return fn
    if choice == "auto" and messages[-1].get("role") == "tool":
        return None
    return tools[0]["function"]


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for msg in reversed(messages):
        if msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _answer(fn: dict[str, Any] | None, messages: list[dict[str, Any]], seed: int, index: int, knobs: Knobs,
            max_tokens: int | None, stop: list[str]) -> _Answer:
    if fn is not None:
        args = orjson.dumps(fake_value(fn.get("parameters") or {"type": "object"}, seed)).decode()
        call = {"id": f"call_{(seed + index) & ((1 << 96) - 1):024x}", "type": "function",
                "function": {"name": fn["name"], "arguments": args}}
        return _Answer(None, group(list(args), knobs.chunks), call, "tool_calls",
                       approx_tokens(len(fn["name"]) + len(args)))
    if knobs.content is not None:
        tokens = split_tokens(knobs.content)
    elif knobs.echo:
        tokens = split_tokens(_last_user_text(messages))
    else:
        tokens = corpus_tokens(seed + index, knobs.tokens)
    tokens, finish = limit_tokens(tokens, max_tokens, stop)
    return _Answer("".join(tokens), group(tokens, knobs.chunks), None, finish, len(tokens))


def _replayed(replay: Replay, model: str, messages: list[dict[str, Any]], max_tokens: int | None, stop: list[str],
              knobs: Knobs) -> tuple[int, list[_Answer]] | Reply:
    """The recorded answer of ``model`` to the last user message, and the prompt's tokens, both counted with the
    gateway's tokenizer; a 400 naming the model when the records hold no answer of it to this prompt (the
    request's fault, not the deployment's: it must not cool the deployment down)."""
    # The gateway's native tokenizer, imported here: the simulator otherwise runs without the built Rust core.
    from mmproxy.tokens import count as count_tokens

    prompt = _last_user_text(messages)
    text = replay.answer(model, prompt)
    if text is None:
        return Reply(400, orjson.dumps({"error": {
            "message": f"the replay records hold no answer of model {model!r} to this prompt",
            "type": "invalid_request_error", "param": "messages", "code": "not_recorded"}}))
    words, finish = limit_tokens(split_tokens(text), max_tokens, stop)
    answer = "".join(words)
    return count_tokens(prompt), [_Answer(answer, group(words, knobs.chunks), None, finish, count_tokens(answer))]


def _usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def _build_chat(app: SimApp, body: dict[str, Any], model: str, knobs: Knobs) -> Reply:
    messages = body["messages"]
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return invalid("Invalid 'messages': expected a non-empty array of message objects.", "messages")
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _int_param(body, name, None, 1, 1 << 30)
    n = _int_param(body, "n", 1, 1, 128)
    for value in (max_tokens, n):
        if isinstance(value, Reply):
            return value
    assert isinstance(n, int) and not isinstance(max_tokens, Reply)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        return invalid("Invalid 'stop': expected a string or an array of strings.", "stop")
    fn = _pick_tool(body, messages)
    if isinstance(fn, Reply):
        return fn

    # Token rule: prompt = ceil(len(compact sorted-key JSON of messages [+ tools]) / 4).
    dumped = canonical_json(messages)
    seed = content_seed(dumped)
    tools = orjson.dumps(body["tools"]) if body.get("tools") else b""
    prompt_tokens = approx_tokens(len(dumped) + len(tools))
    # Automatic prompt caching: the longest prefix (tools, then whole messages) seen in the last minutes.
    pieces = [tools, *(canonical_json(m) for m in messages)]
    cached = min(app.state.prompt_cache.implicit(model, pieces), prompt_tokens)
    if app.replay is not None:
        recorded = _replayed(app.replay, model, messages, max_tokens, stops, knobs)
        if isinstance(recorded, Reply):
            return recorded
        prompt_tokens, answers = recorded
        cached = 0
    else:
        answers = [_answer(fn, messages, seed, i, knobs, max_tokens, stops) for i in range(n)]
    usage = _usage(prompt_tokens, sum(a.tokens for a in answers), cached)
    if body.get("stream") is True:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True and knobs.usage
        return _chat_stream(app, model, answers, usage, include_usage, knobs)
    obj = {
        "id": _new_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": i, "message": a.message(), "logprobs": None, "finish_reason": a.finish}
                    for i, a in enumerate(answers)],
        "usage": usage, "service_tier": "default", "system_fingerprint": _fingerprint(app),
    }
    if not knobs.usage:
        del obj["usage"]
    return Reply(200, orjson.dumps(obj))


def _chat_stream(app: SimApp, model: str, answers: list[_Answer], usage: dict[str, Any], include_usage: bool,
                 knobs: Knobs) -> Reply:
    """SSE events: role delta, content/argument deltas, finish delta, [usage], [DONE]."""
    envelope = b'data: {"id":%s,"object":"chat.completion.chunk","created":%d,"model":%s,' \
               b'"service_tier":"default","system_fingerprint":%s,"choices":' % (
                   orjson.dumps(_new_id("chatcmpl-")), int(time.time()), orjson.dumps(model),
                   orjson.dumps(_fingerprint(app)))
    end = b',"usage":null}\n\n' if include_usage else b"}\n\n"

    def event(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return envelope + orjson.dumps([choice]) + end

    head = [event(i, a.first_delta()) for i, a in enumerate(answers)]
    body = []
    for r in range(max(len(a.pieces) for a in answers)):  # choices interleaved, as OpenAI does for n > 1
        for i, a in enumerate(answers):
            if r < len(a.pieces):
                body.append(event(i, a.piece_delta(a.pieces[r])))
    tail = [event(i, {}, a.finish) for i, a in enumerate(answers)]
    if include_usage:
        tail.append(envelope + b'[],"usage":' + orjson.dumps(usage) + b"}\n\n")
    tail.append(b"data: [DONE]\n\n")
    due = schedule(len(head), len(body), len(tail), knobs, answers[0].tokens, per_round=len(answers))
    return Reply(200, stream=StreamBody(head + body + tail, due))


def chat_completions(app: SimApp, req: Request) -> Reply:
    parsed = _parse(req, "messages")
    if isinstance(parsed, Reply):
        return parsed
    return app.serve_model(req, *parsed, _build_chat, _WIRE)


# --- embeddings -----------------------------------------------------------------------------------


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value)


def _build_embeddings(app: SimApp, body: dict[str, Any], model: str, knobs: Knobs) -> Reply:
    raw = body["input"]
    if isinstance(raw, str) or _is_tokens(raw):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, str) or _is_tokens(x) for x in raw):
        inputs = raw
    else:
        return invalid("Invalid 'input': expected a string, an array of strings, or token arrays.", "input")
    dims = _int_param(body, "dimensions", knobs.embedding_dims, 1, 8192)
    if isinstance(dims, Reply):
        return dims
    assert dims is not None
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        return invalid("Invalid 'encoding_format': expected 'float' or 'base64'.", "encoding_format")
    data = []
    prompt_tokens = 0
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            if not item:
                return invalid("Invalid 'input': empty strings are not allowed.", "input")
            key = item.encode()
            prompt_tokens += approx_tokens(len(item))
        else:
            key = b"\0tokens:" + orjson.dumps(item)
            prompt_tokens += len(item)
        vec = embedding_vector(key, dims)
        emb = base64.b64encode(float32_le_bytes(vec)).decode() if fmt == "base64" else vec.tolist()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    obj = {"object": "list", "data": data, "model": model,
           "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
    return Reply(200, orjson.dumps(obj))


def embeddings(app: SimApp, req: Request) -> Reply:
    parsed = _parse(req, "input")
    if isinstance(parsed, Reply):
        return parsed
    return app.serve_model(req, *parsed, _build_embeddings, _WIRE)


# --- models ---------------------------------------------------------------------------------------


def _model_obj(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": _MODEL_CREATED, "owned_by": "mmproxy-simulator"}


def list_models(app: SimApp, req: Request) -> Reply:
    return Reply(200, orjson.dumps({"object": "list", "data": [_model_obj(m) for m in app.state.config.models]}))


def get_model(app: SimApp, req: Request) -> Reply:
    """Any id exists: the simulator serves whatever model a gateway asks for."""
    return Reply(200, orjson.dumps(_model_obj(unquote(req.path.split("/models/", 1)[1]))))


class _OpenAIWire:
    """Error renderers ``SimApp.serve_model`` needs from a wire format."""

    knob_error = staticmethod(knob_error)
    fault_error = staticmethod(fault_error)


_WIRE = _OpenAIWire()


def check_azure_auth(app: SimApp, req: Request) -> Reply | None:
    """Azure OpenAI authenticates with an ``api-key`` header instead of Bearer, and every data-plane call
    names its ``api-version``."""
    if not same_secret(req.header(b"api-key"), app.bearer[len(b"Bearer "):]):
        return error_reply(401, "Access denied due to invalid subscription key or wrong API endpoint.",
                           "invalid_request_error", "401")
    if "api-version=" not in req.query:
        return error_reply(404, "Resource not found", "invalid_request_error", "404")
    return None


def azure_deployment(app: SimApp, req: Request) -> Reply:
    """``/openai/deployments/{name}/{chat/completions|embeddings}?api-version=…``: the deployment is the model."""
    name, _, operation = req.path.removeprefix("/openai/deployments/").partition("/")
    parsed = _parse(req, "messages" if operation == "chat/completions" else "input", default_model=name)
    if isinstance(parsed, Reply):
        return parsed
    if operation == "chat/completions":
        return app.serve_model(req, *parsed, _build_chat, _WIRE)
    if operation == "embeddings":
        return app.serve_model(req, *parsed, _build_embeddings, _WIRE)
    return not_found(app, req)


def register(app: SimApp) -> None:
    app.prefix_route("POST", "/openai/deployments/", azure_deployment, check_azure_auth)
    for base in ("/v1", ""):
        app.route("POST", base + "/chat/completions", chat_completions, check_auth)
        app.route("POST", base + "/embeddings", embeddings, check_auth)
        app.route("GET", base + "/models", list_models, check_auth)
        app.prefix_route("GET", base + "/models/", get_model, check_auth)
