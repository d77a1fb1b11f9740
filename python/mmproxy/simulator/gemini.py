"""Gemini wire format (Generative Language API ``v1beta``): generate, stream, embed, models, Google errors.

Routes: ``POST /v1beta/models/{model}:generateContent``, ``:streamGenerateContent`` (``?alt=sse`` gives
``data: …\\r\\n\\r\\n`` events; without ``alt`` a streamed JSON array, as Google does), ``:batchEmbedContents``,
``:embedContent``, ``:countTokens``; ``GET /v1beta/models[/{model}]``. Auth is ``x-goog-api-key`` or
``?key=``; like Google, a missing key is 403 PERMISSION_DENIED and a wrong one 400 INVALID_ARGUMENT
(reason API_KEY_INVALID). Unknown request fields are rejected as Google's proto parser does, so a gateway
sending a misspelt field fails here as it would there.

Content, tokens and tool calls follow ``behaviour`` and the OpenAI module's rules (the first declared
function is called unless mode NONE, or AUTO right after a function response). Besides the shared faults,
``safety`` stops the answer with finishReason SAFETY (mid-stream when streaming) and ``safety_prompt``
blocks the prompt (``promptFeedback.blockReason``, no candidates).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

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
from .httpserver import Reply, Request, StreamBody, same_secret

if TYPE_CHECKING:
    from .server import SimApp

_PREFIX = "/v1beta/models/"
_ID_PREFIX = secrets.token_hex(4)
_ids = itertools.count(1)

_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}
_FAULT_MESSAGES = {
    "400": "Request contains an invalid argument.",
    "400_context": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
    "400_policy": "The request was blocked because it violates the usage policy.",
    "401": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
           "other valid authentication credential.",
    "404": "models/{model} is not found for API version v1beta, or is not supported for generateContent. "
           "Call ListModels to see the list of available models and their supported methods.",
    "429": "You exceeded your current quota, please check your plan and billing details. For more "
           "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
    "500": "An internal error has occurred. Please retry or report in "
           "https://developers.generativeai.google/guide/troubleshooting",
    "503": "The model is overloaded. Please try again later.",
}
# Google's front end answers a 502 itself, in HTML.
_BAD_GATEWAY = (b"<!DOCTYPE html><html lang=en><meta charset=utf-8><title>Error 502 (Server Error)!!1</title>"
                b"<p><b>502.</b> <ins>That\xe2\x80\x99s an error.</ins><p>The server encountered a temporary "
                b"error and could not complete your request.</html>")

_REQUEST_FIELDS = frozenset({
    "contents", "systemInstruction", "tools", "toolConfig", "safetySettings", "generationConfig",
    "cachedContent", "sim",
})
_GENERATION_FIELDS = frozenset({
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities",
    "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty",
    "frequencyPenalty", "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "speechConfig",
    "thinkingConfig", "mediaResolution",
})
_PART_DATA = ("text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
              "codeExecutionResult")
_CALLING_MODES = frozenset({"AUTO", "ANY", "NONE", "VALIDATED"})
_HARM_CATEGORIES = ("HARM_CATEGORY_SEXUALLY_EXPLICIT", "HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_HARASSMENT",
                    "HARM_CATEGORY_DANGEROUS_CONTENT")


# --- errors ---------------------------------------------------------------------------------------


def google_error(code: int, message: str, details: list[dict[str, Any]] | None = None) -> Reply:
    """``{"error": {code, message, status[, details]}}``, indented as Google sends it."""
    err: dict[str, Any] = {"code": code, "message": message, "status": _GOOGLE_STATUS.get(code, "UNKNOWN")}
    if details:
        err["details"] = details
    return Reply(code, orjson.dumps({"error": err}, option=orjson.OPT_INDENT_2))


def invalid(message: str) -> Reply:
    return google_error(400, message)


def knob_error(exc: KnobError) -> Reply:
    return invalid(str(exc))


def fault_error(fault: Fault, model: str) -> Reply:
    kind = fault.kind
    if kind == "502":
        return Reply(502, _BAD_GATEWAY, content_type=b"text/html; charset=UTF-8")
    details: list[dict[str, Any]] | None = None
    if kind == "429":
        # Google puts no Retry-After header on a 429: the wait is a RetryInfo detail.
        details = [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                "quotaDimensions": {"location": "global", "model": model}, "quotaValue": "15"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo",
             "retryDelay": f"{format_seconds(fault.retry_after)}s"},
        ]
    return google_error(fault.status, _FAULT_MESSAGES[kind].format(model=model), details)


def check_auth(app: SimApp, req: Request) -> Reply | None:
    expected = (app.config.api_key or "").encode()
    got = req.header(b"x-goog-api-key")
    if got is None:
        key = parse_qs(req.query).get("key")
        got = key[0].encode() if key else None
    if same_secret(got, expected):
        return None
    if got is None:
        return google_error(403, "Method doesn't allow unregistered callers (callers without established "
                                 "identity). Please use API Key or other form of API consumer identity to call "
                                 "this API.")
    return google_error(400, "API key not valid. Please pass a valid API key.", [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
         "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}])


class _GeminiWire:
    """Error renderers ``SimApp.serve_model`` needs from a wire format."""

    knob_error = staticmethod(knob_error)
    fault_error = staticmethod(fault_error)


_WIRE = _GeminiWire()


# --- request plumbing -----------------------------------------------------------------------------


def _camel(name: str) -> str:
    """Google's JSON parser takes proto field names in lowerCamel or snake_case."""
    if "_" not in name:
        return name
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _parse(req: Request, model: str) -> dict[str, Any] | Reply:
    try:
        body = orjson.loads(req.body or b"{}")
    except orjson.JSONDecodeError:
        return invalid("Invalid JSON payload received. Unexpected token.")
    if not isinstance(body, dict):
        return invalid("Invalid JSON payload received. Expected an object.")
    req.json = body
    req.model = model
    body = {_camel(k): v for k, v in body.items()}
    config = body.get("generationConfig")
    if isinstance(config, dict):
        body["generationConfig"] = {_camel(k): v for k, v in config.items()}
    return body


def _new_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):012x}"


def _lower_types(schema: Any) -> Any:
    """An OpenAPI-subset ``parameters`` schema (types in capitals) as JSON Schema for ``fake_value``."""
    if isinstance(schema, dict):
        return {k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_lower_types(v) for v in schema]
    return schema


# --- generateContent ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Candidate:
    """One candidate: text or a single function call, pre-split into stream pieces."""

    text: str | None
    pieces: list[str]
    call: dict[str, Any] | None
    finish: str
    tokens: int

    def parts(self, piece: str | None = None) -> list[dict[str, Any]]:
        if self.call is not None:
            return [{"functionCall": self.call}]
        return [{"text": self.text if piece is None else piece}]


@dataclass(slots=True)
class _Generation:
    model: str
    candidates: list[_Candidate]
    prompt_tokens: int
    knobs: Knobs
    cached_tokens: int = 0  # implicit caching: the longest prompt prefix seen in the last minutes
    response_id: str = field(default_factory=_new_id)

    def usage(self, final: bool = True) -> dict[str, Any]:
        prompt = self.prompt_tokens
        meta: dict[str, Any] = {"promptTokenCount": prompt}
        if self.cached_tokens:
            meta["cachedContentTokenCount"] = self.cached_tokens
        if final:
            completion = sum(c.tokens for c in self.candidates)
            meta["candidatesTokenCount"] = completion
            meta["totalTokenCount"] = prompt + completion
        else:
            meta["totalTokenCount"] = prompt
        meta["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
        return meta

    def envelope(self, obj: dict[str, Any], final: bool = True) -> dict[str, Any]:
        obj["usageMetadata"] = self.usage(final)
        obj["modelVersion"] = self.model
        obj["responseId"] = self.response_id
        return obj


def _validate(body: dict[str, Any]) -> Reply | None:
    for key in body:
        if key not in _REQUEST_FIELDS:
            return invalid(f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.')
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return invalid("* GenerateContentRequest.contents: contents is not specified")
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or content.get("role", "user") not in ("user", "model"):
            return invalid("Please use a valid role: user, model.")
        bad = _check_parts(content.get("parts"), f"contents[{i}]")
        if bad is not None:
            return bad
    system = body.get("systemInstruction")
    if system is not None:
        bad = _check_parts(system.get("parts") if isinstance(system, dict) else None, "system_instruction")
        if bad is not None:
            return bad
    config = body.get("generationConfig") or {}
    if not isinstance(config, dict):
        return invalid("Invalid JSON payload received. 'generation_config' must be an object.")
    for key in config:
        if key not in _GENERATION_FIELDS:
            return invalid(f"Invalid JSON payload received. Unknown name \"{key}\" at 'generation_config': "
                           "Cannot find field.")
    return _check_tools(body)


def _check_parts(parts: Any, where: str) -> Reply | None:
    if not isinstance(parts, list) or not parts:
        return invalid(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.")
    for j, part in enumerate(parts):
        if not isinstance(part, dict) or sum(1 for k in _PART_DATA if k in part) != 1:
            return invalid(f"* GenerateContentRequest.{where}.parts[{j}].data: required oneof field 'data' "
                           "must have one initialized field")
        inline = part.get("inlineData")
        if inline is not None:
            if not isinstance(inline, dict) or not inline.get("mimeType"):
                return invalid(f"* GenerateContentRequest.{where}.parts[{j}].inline_data.mime_type: "
                               "mime_type is not specified")
            try:
                # Only the alphabet and correct padding (as a2b_base64's strict_mode, which needs Python 3.11).
                base64.b64decode(str(inline.get("data", "")).encode(), validate=True)
            except binascii.Error:
                return invalid(f"Invalid value at '{where}.parts[{j}].inline_data.data' (TYPE_BYTES), "
                               "Base64 decoding failed")
        file = part.get("fileData")
        if file is not None and (not isinstance(file, dict) or not file.get("fileUri")):
            return invalid(f"* GenerateContentRequest.{where}.parts[{j}].file_data.file_uri: "
                           "file_uri is not specified")
        call = part.get("functionCall") or part.get("functionResponse")
        if call is not None and (not isinstance(call, dict) or not call.get("name")):
            return invalid(f"* GenerateContentRequest.{where}.parts[{j}]: function name is not specified")
    return None


def _check_tools(body: dict[str, Any]) -> Reply | None:
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        return invalid("Invalid JSON payload received. 'tools' must be a list.")
    for i, tool in enumerate(tools):
        for j, decl in enumerate(tool.get("functionDeclarations") or [] if isinstance(tool, dict) else []):
            if not isinstance(decl, dict) or not isinstance(decl.get("name"), str) or not decl["name"]:
                return invalid(f"* GenerateContentRequest.tools[{i}].function_declarations[{j}].name: "
                               "name cannot be empty.")
            if "parameters" in decl and "parametersJsonSchema" in decl:
                return invalid(f"* GenerateContentRequest.tools[{i}].function_declarations[{j}]: parameters "
                               "and parameters_json_schema are mutually exclusive.")
    calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = calling.get("mode", "AUTO")
    if mode not in _CALLING_MODES:
        return invalid(f"Invalid value at 'tool_config.function_calling_config.mode', \"{mode}\"")
    if calling.get("allowedFunctionNames") and mode != "ANY":
        return invalid("* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
                       "allowed_function_names is only allowed when mode is ANY.")
    return None


def _pick_function(body: dict[str, Any]) -> dict[str, Any] | Reply | None:
    """The declaration to call, or None for a text answer (same rule as the OpenAI module)."""
    declarations = [d for tool in body.get("tools") or [] for d in tool.get("functionDeclarations") or []]
    if not declarations:
        return None
    calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = calling.get("mode", "AUTO")
    if mode == "NONE":
        return None
    allowed = calling.get("allowedFunctionNames")
    if mode == "ANY" and allowed:
        found = next((d for d in declarations if d["name"] in allowed), None)
        if found is None:
            return invalid("* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names:"
                           " names must match a function declaration.")
        return found
    last = body["contents"][-1]
    if mode != "ANY" and any("functionResponse" in p for p in last.get("parts", ())):
        return None
    return declarations[0]


def _last_user_text(contents: list[dict[str, Any]]) -> str:
    for content in reversed(contents):
        if content.get("role", "user") == "user":
            texts = [p["text"] for p in content["parts"] if isinstance(p.get("text"), str)]
            if texts:
                return "".join(texts)
    return ""


def _candidate(body: dict[str, Any], fn: dict[str, Any] | None, seed: int, knobs: Knobs) -> _Candidate:
    config = body.get("generationConfig") or {}
    if fn is not None:
        schema = fn.get("parametersJsonSchema") or _lower_types(fn.get("parameters")) or {"type": "object"}
        args = fake_value(schema, seed)
        dumped = orjson.dumps(args).decode()
        return _Candidate(None, [], {"name": fn["name"], "args": args}, "STOP",
                          approx_tokens(len(fn["name"]) + len(dumped)))
    if config.get("responseMimeType") == "application/json":
        schema = config.get("responseJsonSchema") or _lower_types(config.get("responseSchema"))
        value = fake_value(schema, seed) if schema else {"answer": "".join(corpus_tokens(seed, knobs.tokens))}
        text = orjson.dumps(value).decode()
        return _Candidate(text, group(list(text), knobs.chunks), None, "STOP", approx_tokens(len(text)))
    if knobs.content is not None:
        words = split_tokens(knobs.content)
    elif knobs.echo:
        words = split_tokens(_last_user_text(body["contents"]))
    else:
        words = corpus_tokens(seed, knobs.tokens)
    stops = config.get("stopSequences") or []
    words, finish = limit_tokens(words, config.get("maxOutputTokens"), stops)
    pieces = group(words, knobs.chunks) or [""]
    return _Candidate("".join(words), pieces, None, "MAX_TOKENS" if finish == "length" else "STOP", len(words))


def _generation(app: SimApp, body: dict[str, Any], model: str, knobs: Knobs) -> _Generation | Reply:
    bad = _validate(body)
    if bad is not None:
        return bad
    config = body.get("generationConfig") or {}
    n = config.get("candidateCount", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 8:
        return invalid("Invalid value at 'generation_config.candidate_count': must be between 1 and 8.")
    max_tokens = config.get("maxOutputTokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                   or max_tokens < 1):
        return invalid("Invalid value at 'generation_config.max_output_tokens': must be a positive integer.")
    stops = config.get("stopSequences")
    if stops is not None and (not isinstance(stops, list) or len(stops) > 5
                              or not all(isinstance(s, str) for s in stops)):
        return invalid("Invalid value at 'generation_config.stop_sequences': at most 5 strings.")
    if "responseSchema" in config and "responseJsonSchema" in config:
        return invalid("response_schema and response_json_schema are mutually exclusive.")
    if ("responseSchema" in config or "responseJsonSchema" in config) and \
            config.get("responseMimeType") != "application/json":
        return invalid("* GenerateContentRequest.generation_config.response_mime_type: must be application/json "
                       "when a response schema is set.")
    fn = _pick_function(body)
    if isinstance(fn, Reply):
        return fn
    contents = body["contents"]
    dumped = canonical_json(contents)
    seed = content_seed(dumped)
    head = [canonical_json(body[k]) for k in ("systemInstruction", "tools") if body.get(k)]
    prompt_tokens = approx_tokens(len(dumped) + sum(len(h) for h in head))
    cached = app.state.prompt_cache.implicit(model, [*head, *(canonical_json(c) for c in contents)])
    candidates = [_candidate(body, fn, seed + i, knobs) for i in range(n)]
    return _Generation(model, candidates, prompt_tokens, knobs, min(cached, prompt_tokens))


def _response(gen: _Generation) -> dict[str, Any]:
    return gen.envelope({"candidates": [
        {"content": {"parts": c.parts(), "role": "model"}, "finishReason": c.finish, "index": i}
        for i, c in enumerate(gen.candidates)]})


def _safety_ratings() -> list[dict[str, Any]]:
    return [{"category": cat, "probability": "HIGH" if cat == "HARM_CATEGORY_HARASSMENT" else "NEGLIGIBLE",
             **({"blocked": True} if cat == "HARM_CATEGORY_HARASSMENT" else {})} for cat in _HARM_CATEGORIES]


def _blocked(gen: _Generation, fault: str) -> dict[str, Any]:
    """The final object of a ``safety`` fault (answer stopped) or a ``safety_prompt`` one (prompt refused)."""
    obj: dict[str, Any]
    if fault == "safety_prompt":
        obj = {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": _safety_ratings()}}
    else:
        obj = {"candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": _safety_ratings()}]}
    gen.candidates = []  # nothing generated counts
    return gen.envelope(obj)


def _stream_objects(gen: _Generation, fault: str | None) -> list[dict[str, Any]]:
    """The partial responses of a stream: pieces round by round, finishReason and full usage on the last."""
    if fault == "safety_prompt":
        return [_blocked(gen, fault)]
    cands = gen.candidates
    rounds = 1 if cands[0].call is not None else max(len(c.pieces) for c in cands)
    if fault == "safety":
        rounds = max(1, rounds // 2)
    objects = []
    for r in range(rounds):
        last = r == rounds - 1
        items = []
        for i, c in enumerate(cands):
            if c.call is None and r >= len(c.pieces):
                continue
            item: dict[str, Any] = {"content": {"parts": c.parts(None if c.call else c.pieces[r]), "role": "model"}}
            if fault is None and (last or (c.call is None and r == len(c.pieces) - 1)):
                item["finishReason"] = c.finish
            item["index"] = i
            items.append(item)
        objects.append(gen.envelope({"candidates": items}, final=last and fault is None))
    if fault == "safety":
        objects.append(_blocked(gen, fault))
    return objects


def _render(gen: _Generation, stream: str | None, fault: str | None) -> Reply:
    """``stream``: None (one JSON body), "sse" or "json" (a JSON array written element by element)."""
    if stream is None:
        return Reply(200, orjson.dumps(_blocked(gen, fault) if fault else _response(gen)))
    tokens = sum(c.tokens for c in gen.candidates)
    objects = _stream_objects(gen, fault)
    if stream == "sse":
        events = [b"data: " + orjson.dumps(o) + b"\r\n\r\n" for o in objects]
        body = StreamBody(events, [], bad_event=b'data: {"candidates": [\r\n\r\n')
    else:
        events = [(b"[" if i == 0 else b",\r\n") + orjson.dumps(o) for i, o in enumerate(objects)]
        events[-1] += b"]"
        body = StreamBody(events, [], content_type=b"application/json", bad_event=b',\r\n{"candidates": [')
    body.due = schedule(0, len(events), 0, gen.knobs, tokens)
    return Reply(200, stream=body)


def _generate(app: SimApp, req: Request, model: str, stream: str | None) -> Reply:
    body = _parse(req, model)
    if isinstance(body, Reply):
        return body
    made: list[_Generation] = []

    def build(app: SimApp, body: dict[str, Any], model: str, knobs: Knobs) -> Reply:
        gen = _generation(app, body, model, knobs)
        if isinstance(gen, Reply):
            return gen
        made.append(gen)
        return _render(gen, stream, None)

    reply = app.serve_model(req, body, model, build, _WIRE)
    if req.fault in ("safety", "safety_prompt") and made:
        delay = reply.delay
        reply = _render(made[0], stream, req.fault)
        reply.delay = delay
    return reply


# --- embeddings -----------------------------------------------------------------------------------


def _embed_one(request: Any, model: str, where: str, knobs: Knobs) -> list[float] | Reply:
    if not isinstance(request, dict):
        return invalid(f"* {where}: must be an object.")
    request = {_camel(k): v for k, v in request.items()}
    named = request.get("model")
    if named is not None and named != f"models/{model}":
        return invalid(f"* {where}.model: model in the request ({named}) does not match the URL (models/{model}).")
    content = request.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    text = "".join(p.get("text", "") for p in parts if isinstance(p, dict)) if isinstance(parts, list) else ""
    if not text:
        return invalid(f"* {where}.content: content must not be empty.")
    dims = request.get("outputDimensionality", knobs.embedding_dims)
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 8192:
        return invalid(f"* {where}.output_dimensionality: must be between 1 and 8192.")
    return embedding_vector(text.encode(), dims).tolist()


def _build_batch_embed(app: SimApp, body: dict[str, Any], model: str, knobs: Knobs) -> Reply:
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        return invalid("* BatchEmbedContentsRequest.requests: requests is not specified")
    out = []
    for i, request in enumerate(requests):
        values = _embed_one(request, model, f"BatchEmbedContentsRequest.requests[{i}]", knobs)
        if isinstance(values, Reply):
            return values
        out.append({"values": values})
    return Reply(200, orjson.dumps({"embeddings": out}))


def _build_embed(app: SimApp, body: dict[str, Any], model: str, knobs: Knobs) -> Reply:
    values = _embed_one(body, model, "EmbedContentRequest", knobs)
    if isinstance(values, Reply):
        return values
    return Reply(200, orjson.dumps({"embedding": {"values": values}}))


def _count_tokens(app: SimApp, req: Request, model: str) -> Reply:
    body = _parse(req, model)
    if isinstance(body, Reply):
        return body
    contents = body.get("contents") or (body.get("generateContentRequest") or {}).get("contents")
    if not isinstance(contents, list) or not contents:
        return invalid("* CountTokensRequest.contents: contents is not specified")
    return Reply(200, orjson.dumps({"totalTokens": approx_tokens(len(canonical_json(contents)))}))


# --- routes ---------------------------------------------------------------------------------------


def model_method(app: SimApp, req: Request) -> Reply:
    """``POST /v1beta/models/{model}:{method}``."""
    model, colon, method = req.path[len(_PREFIX):].rpartition(":")
    model = unquote(model)
    if not colon or not model:
        return google_error(404, f"Method not found: {req.path}")
    if method == "generateContent":
        return _generate(app, req, model, None)
    if method == "streamGenerateContent":
        alt = parse_qs(req.query).get("alt", ["json"])[0]
        if alt not in ("sse", "json"):
            return invalid(f"Invalid value at 'alt' ({alt}): streaming supports alt=sse and alt=json.")
        return _generate(app, req, model, alt)
    if method in ("batchEmbedContents", "embedContent"):
        body = _parse(req, model)
        if isinstance(body, Reply):
            return body
        build = _build_batch_embed if method == "batchEmbedContents" else _build_embed
        return app.serve_model(req, body, model, build, _WIRE)
    if method == "countTokens":
        return _count_tokens(app, req, model)
    if method == "batchGenerateContent":  # gemini_batches imports this module, hence the late import
        from .gemini_batches import create_batch

        return create_batch(app, req, model)
    return google_error(404, f"Method not found: {method}")


def _model_obj(model: str) -> dict[str, Any]:
    embed = "embed" in model
    return {
        "name": f"models/{model}", "version": "001", "displayName": model,
        "description": "A model served by the mmproxy simulator.",
        "inputTokenLimit": 2048 if embed else 1048576, "outputTokenLimit": 1 if embed else 8192,
        "supportedGenerationMethods": ["embedContent", "batchEmbedContents"] if embed
        else ["generateContent", "countTokens"],
    }


def list_models(app: SimApp, req: Request) -> Reply:
    return Reply(200, orjson.dumps({"models": [_model_obj(m) for m in app.state.config.models]}))


def get_model(app: SimApp, req: Request) -> Reply:
    """Any model exists: the simulator serves whatever a gateway asks for."""
    return Reply(200, orjson.dumps(_model_obj(unquote(req.path[len(_PREFIX):]))))


def register(app: SimApp) -> None:
    app.prefix_route("POST", _PREFIX, model_method, check_auth)
    app.route("GET", "/v1beta/models", list_models, check_auth)
    app.prefix_route("GET", _PREFIX, get_model, check_auth)
