"""Google Gemini (Generative Language API ``v1beta``): OpenAI chat and embeddings on Gemini's wire format.

Requests: messages become ``contents`` (roles ``user``/``model``, consecutive turns of one role merged,
tool results as ``functionResponse`` parts of a user turn); system and developer messages become
``systemInstruction``; sampling fields go to ``generationConfig``. JSON schemas are sent as
``parametersJsonSchema`` (tools) and ``responseJsonSchema`` (``response_format: json_schema``): both take
JSON Schema as OpenAI clients write it, where the older ``parameters``/``responseSchema`` take an OpenAPI
subset that rejects e.g. ``additionalProperties``, which strict OpenAI schemas always carry.

Request fields that are not OpenAI's pass through to the Gemini body unchanged (``safetySettings``,
``cachedContent``, ...); ``top_k`` goes to ``generationConfig.topK`` as in LiteLLM.

Gemini has no tool-call ids: responses get ``call_<hex>`` ids, and the function name of a tool result is
found from the assistant tool call with its id earlier in the same request. A ``thoughtSignature``
(Gemini 3 requires it back on the next turn) rides in the id as ``call_<hex>__thought__<signature>``.
Thought summaries (``thought: true`` parts) become ``reasoning_content``, as in LiteLLM.
"""

from __future__ import annotations

import math
import os
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from mmproxy import tokens
from mmproxy.config import Deployment
from mmproxy.errors import ProxyError, bad_request
from mmproxy.providers.base import (
    OPENAI_PARAMS,
    Provider,
    StreamTranslator,
    bad_upstream_response,
    kind_of_status,
    upstream_error,
)
from mmproxy.providers.chunks import (
    DONE,
    ChunkStream,
    completion,
    embedding_base64,
    openai_usage,
    wants_base64,
    wants_usage,
)
from mmproxy.upstream.framing import http_request, request_head

# ``user`` is accepted and not sent: it only feeds OpenAI's abuse monitoring, and rejecting it would
# break clients that always send it.
_SUPPORTED = frozenset({
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "max_tokens",
    "max_completion_tokens", "stop", "n", "seed", "presence_penalty", "frequency_penalty",
    "response_format", "tools", "tool_choice", "user",
})
# OpenAI field -> generationConfig field, copied as they are.
_GENERATION_FIELDS = (
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("n", "candidateCount"),
    ("seed", "seed"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
    ("top_k", "topK"),
)
_TOOL_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
_MIME_BY_EXTENSION = {
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif",
    "heic": "image/heic", "heif": "image/heif", "pdf": "application/pdf",
}
_THOUGHT = "__thought__"
# Google status string -> failure class; the HTTP status decides when the body has none.
_KIND_BY_GOOGLE_STATUS = {
    "INVALID_ARGUMENT": "invalid",
    "FAILED_PRECONDITION": "invalid",
    "OUT_OF_RANGE": "invalid",
    "UNAUTHENTICATED": "auth",
    "PERMISSION_DENIED": "permission",
    "NOT_FOUND": "not_found",
    "RESOURCE_EXHAUSTED": "rate_limit",
    "UNAVAILABLE": "overloaded",
    "INTERNAL": "server",
    "DEADLINE_EXCEEDED": "timeout",
}

class GeminiProvider(Provider):
    supported = _SUPPORTED

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(deployment)
        self.base_path = base_path = urlsplit(deployment.api_base).path.rstrip("/")
        model = deployment.upstream_model
        # "gemini/gemini-2.0-flash" names models/gemini-2.0-flash; a full resource name is kept.
        self._resource = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
        self.model_target = target = f"{base_path}/{quote(self._resource, safe='/')}"
        headers = ["Content-Type: application/json", *self.auth_headers()]
        self._generate_head = request_head("POST", f"{target}:generateContent", self.host, headers)
        self._stream_head = request_head("POST", f"{target}:streamGenerateContent?alt=sse", self.host, headers)
        self._embed_head = request_head("POST", f"{target}:batchEmbedContents", self.host, headers)

    def auth_headers(self) -> list[str]:
        key = self.deployment.api_key
        return [f"x-goog-api-key: {key}"] if key else []

    # -- chat ------------------------------------------------------------------------
    def chat_request(self, payload: dict[str, Any], *, stream_usage: bool = True) -> bytes:
        head = self._stream_head if payload.get("stream") is True else self._generate_head
        return http_request(head, orjson.dumps(_generate_body(payload)))

    def chat_body(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The generateContent request for an OpenAI-shaped chat payload."""
        return _generate_body(payload)

    def chat_response(self, body: bytes) -> tuple[bytes, dict[str, Any] | None]:
        data = self.load_object(body)
        usage = _usage(data.get("usageMetadata"))
        response_id = data.get("responseId")
        chat_id = f"chatcmpl-{response_id}" if isinstance(response_id, str) and response_id else None
        model = self.deployment.upstream_model
        candidates = data.get("candidates")
        if not candidates:
            feedback = data.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                return completion(model, {"content": ""}, "content_filter", usage, id=chat_id), usage
            raise bad_upstream_response(self.deployment.id)
        if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
            raise bad_upstream_response(self.deployment.id)
        ordered = sorted(candidates, key=lambda c: c.get("index") or 0)
        choices = [_choice(candidate) for candidate in ordered]
        (message, reason), more = choices[0], choices[1:]
        return completion(model, message, reason, usage, id=chat_id, more=more), usage

    def chat_stream(self, payload: dict[str, Any]) -> StreamTranslator:
        n = payload.get("n")
        if n is not None and n > 1:
            raise bad_request(f"n > 1 is not supported with stream for {self.deployment.provider}", param="n")
        return GeminiStream(self.deployment.upstream_model, wants_usage(payload))

    # -- embeddings ------------------------------------------------------------------
    def embeddings_request(self, payload: dict[str, Any]) -> bytes:
        raw = payload["input"]
        texts = [raw] if isinstance(raw, str) else raw
        if not all(isinstance(text, str) for text in texts):
            raise bad_request("'input' must be text for Gemini embeddings; token arrays are not supported",
                              param="input")
        encoding = payload.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise bad_request("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
        common: dict[str, Any] = {"model": self._resource}
        dimensions = payload.get("dimensions")
        if dimensions is not None:
            if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
                raise bad_request("'dimensions' must be a positive integer", param="dimensions")
            common["outputDimensionality"] = dimensions
        task_type = payload.get("task_type")
        if isinstance(task_type, str):
            common["taskType"] = task_type
        requests = [{**common, "content": {"parts": [{"text": text}]}} for text in texts]
        return http_request(self._embed_head, orjson.dumps({"requests": requests}))

    def embeddings_response(self, body: bytes, payload: dict[str, Any]) -> tuple[bytes, dict[str, Any] | None]:
        """OpenAI's embeddings list. Gemini reports no usage: ``prompt_tokens`` is the o200k estimate
        (``mmproxy.tokens.count``) of the input texts."""
        data = self.load_object(body)
        embeddings = data.get("embeddings")
        if not isinstance(embeddings, list):
            raise bad_upstream_response(self.deployment.id)
        as_base64 = wants_base64(payload)
        texts = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
        prompt_tokens = sum(tokens.count(text) for text in texts)
        out = []
        for index, item in enumerate(embeddings):
            values = item.get("values") if isinstance(item, dict) else None
            if not isinstance(values, list):
                raise bad_upstream_response(self.deployment.id)
            out.append({"object": "embedding", "index": index,
                        "embedding": embedding_base64(values) if as_base64 else values})
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        result = {"object": "list", "data": out, "model": self.deployment.upstream_model, "usage": usage}
        return orjson.dumps(result), usage

    # -- errors ----------------------------------------------------------------------
    def error(self, status: int, body: bytes, retry_after: bytes | None) -> ProxyError:
        message, google_status, details = _parse_error(body)
        kind = _KIND_BY_GOOGLE_STATUS.get(google_status or "") or kind_of_status(status)
        lowered = (message or "").lower()
        if kind in ("invalid", "permission"):
            # A bad key is 400 INVALID_ARGUMENT (reason API_KEY_INVALID); a missing one 403 PERMISSION_DENIED.
            if "api key" in lowered or any(d.get("reason") == "API_KEY_INVALID" for d in details):
                kind = "auth"
            elif status == 400 and ("input token count" in lowered or "exceeds the maximum number of tokens"
                                    in lowered):
                kind = "context"
        if kind == "rate_limit" and retry_after is None:
            retry_after = _retry_delay(details)
        return upstream_error(self.deployment, status, message, kind, retry_after=retry_after)


class GeminiStream(StreamTranslator):
    """Gemini SSE (``data: <GenerateContentResponse>`` events, CRLF or LF framed) to OpenAI chunks.

    Gemini sends no terminator: the stream is over after the event carrying ``finishReason`` (or a
    ``promptFeedback.blockReason``). That event is translated into the finish chunk, the usage chunk and
    ``[DONE]``, and only then is ``complete`` set. Usage is the last ``usageMetadata`` seen up to it
    (Gemini puts one on every event, the full counts on the last); a later event can only update
    ``usage`` for cost accounting, since the client already has ``[DONE]``.
    """

    __slots__ = ("_broken", "_buf", "_chunks", "_include_usage", "_meta", "_model", "_sep", "_tools",
                 "complete", "usage")

    def __init__(self, model: str, include_usage: bool) -> None:
        self._model = model
        self._include_usage = include_usage
        self._buf = b""
        self._sep: bytes | None = None
        self._chunks: ChunkStream | None = None
        self._meta: Any = None
        self._tools = 0
        self._broken = False
        self.complete = False
        self.usage: dict[str, Any] | None = None

    def feed(self, data: bytes) -> bytes:
        buf = self._buf + data if self._buf else data
        sep = self._sep
        if sep is None:
            newline = buf.find(b"\n")
            if newline < 0:
                self._buf = buf
                return b""
            sep = self._sep = b"\r\n\r\n" if newline and buf[newline - 1] == 13 else b"\n\n"
        out: list[bytes] = []
        start = 0
        while (end := buf.find(sep, start)) >= 0:
            if start != end and not self._broken:
                self._event(buf[start:end], out)
            start = end + len(sep)
        self._buf = buf[start:]
        return b"".join(out)

    def _event(self, block: bytes, out: list[bytes]) -> None:
        if block.startswith(b"data:") and b"\n" not in block:
            payload = block[5:]
        else:  # several lines: comments, other fields, or a data value split over lines
            lines = [line[5:].strip() for line in block.splitlines() if line.startswith(b"data:")]
            if not lines:
                return
            payload = b"\n".join(lines)
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict) or "error" in event:
            self._broken = True  # stop here: no [DONE], so the client is told the stream broke
            return
        meta = event.get("usageMetadata")
        if meta is not None:
            self._meta = meta
        if self.complete:
            if meta is not None:
                self.usage = _usage(meta)
            return
        chunks = self._chunks
        if chunks is None:
            response_id = event.get("responseId")
            chat_id = f"chatcmpl-{response_id}" if isinstance(response_id, str) and response_id else None
            chunks = self._chunks = ChunkStream(self._model, self._include_usage, chat_id)
            out.append(chunks.role())
        finish = None
        candidates = event.get("candidates")
        if candidates:
            candidate = candidates[0]
            content = candidate.get("content")
            if content:
                for part in content.get("parts") or ():
                    text = part.get("text")
                    if text is not None:
                        if text:
                            out.append(chunks.reasoning(text) if part.get("thought") else chunks.text(text))
                    elif (call := part.get("functionCall")) is not None:
                        out.append(chunks.tool_call(self._tools, _call_id(part.get("thoughtSignature")),
                                                    call.get("name"), _arguments(call)))
                        self._tools += 1
            finish = candidate.get("finishReason")
            if finish:
                finish = _finish_reason(finish, self._tools > 0)
        else:
            feedback = event.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                finish = "content_filter"
        if finish:
            out.append(chunks.finish(finish))
            usage = _usage(self._meta)
            if usage is not None:
                self.usage = usage
                out.append(chunks.usage(usage))
            out.append(DONE)
            self.complete = True


# -- request building ------------------------------------------------------------------
def _generate_body(payload: dict[str, Any]) -> dict[str, Any]:
    system, contents = _contents(payload["messages"])
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    config = _generation_config(payload)
    tools = payload.get("tools")
    if tools:
        body["tools"] = [{"functionDeclarations": [_declaration(tool, i) for i, tool in enumerate(tools)]}]
    tool_choice = payload.get("tool_choice")
    if tool_choice is not None:
        body["toolConfig"] = {"functionCallingConfig": _calling_config(tool_choice)}
    for key, value in payload.items():
        if key in OPENAI_PARAMS or key == "top_k":
            continue
        if key == "generationConfig" and isinstance(value, dict):
            config.update(value)
        else:
            body[key] = value  # a Gemini field the client set itself (safetySettings, cachedContent, ...)
    if config:
        body["generationConfig"] = config
    return body


def _generation_config(payload: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for name, gemini_name in _GENERATION_FIELDS:
        value = payload.get(name)
        if value is not None:
            config[gemini_name] = value
    max_tokens = payload.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = payload.get("max_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = payload.get("stop")
    if stop is not None:
        config["stopSequences"] = [stop] if isinstance(stop, str) else stop
    response_format = payload.get("response_format")
    if response_format is not None:
        kind = response_format.get("type")
        if kind == "json_object":
            config["responseMimeType"] = "application/json"
        elif kind == "json_schema":
            config["responseMimeType"] = "application/json"
            spec = response_format.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if schema is not None:
                config["responseJsonSchema"] = schema
        elif kind != "text":
            raise bad_request("'response_format.type' must be text, json_object or json_schema",
                              param="response_format")
    return config


def _contents(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents) of OpenAI messages."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for i, message in enumerate(messages):
        role = message["role"]
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend(_text_parts(content, i))
            continue
        if role == "assistant":
            turn_role, parts = "model", _text_parts(content, i)
            for j, call in enumerate(message.get("tool_calls") or ()):
                parts.append(_function_call(call, f"messages[{i}].tool_calls[{j}]", call_names))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            name = call_names.get(call_id) if isinstance(call_id, str) else None
            if name is None:
                raise bad_request(f"messages[{i}].tool_call_id does not match a tool call of an earlier "
                                  "assistant message", param=f"messages[{i}].tool_call_id")
            turn_role, parts = "user", [_function_response(name, content, i)]
        elif role == "function":
            name = message.get("name")
            if not isinstance(name, str):
                raise bad_request(f"messages[{i}].name is required for a function message",
                                  param=f"messages[{i}].name")
            turn_role, parts = "user", [_function_response(name, content, i)]
        else:
            turn_role, parts = "user", _user_parts(content, i)
        if not parts:
            continue
        if contents and contents[-1]["role"] == turn_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn_role, "parts": parts})
    if not contents:
        raise bad_request("'messages' needs at least one user or assistant message for Gemini", param="messages")
    return system, contents


def _text_parts(content: Any, i: int) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("text", "refusal"):
            raise bad_request(f"messages[{i}].content[{j}]: only text parts are allowed in this message",
                              param=f"messages[{i}].content")
        text = part.get(kind)
        if isinstance(text, str) and text:
            parts.append({"text": text})
    return parts


def _user_parts(content: Any, i: int) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return _text_parts(content, i)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"messages[{i}].content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text")
            if isinstance(text, str) and text:
                parts.append({"text": text})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise bad_request(f"{where}.image_url.url must be a string", param=where)
            parts.append(_media_part(url, where))
        elif kind == "input_audio":
            audio = part.get("input_audio")
            if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
                raise bad_request(f"{where}.input_audio needs data and format", param=where)
            parts.append({"inlineData": {"mimeType": f"audio/{audio.get('format') or 'wav'}", "data": audio["data"]}})
        elif kind == "file":
            file = part.get("file")
            data = file.get("file_data") if isinstance(file, dict) else None
            if not isinstance(data, str) or not data.startswith("data:"):
                raise bad_request(f"{where}.file.file_data must be a base64 data URL", param=where)
            parts.append(_media_part(data, where))
        else:
            raise bad_request(f"{where}: content part type {kind!r} is not supported for Gemini", param=where)
    return parts


def _media_part(url: str, where: str) -> dict[str, Any]:
    """A data URL inline (``inlineData``), any other URL by reference (``fileData``)."""
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        mime, _, encoding = header.partition(";")
        if not comma or encoding != "base64":
            raise bad_request(f"{where}: data URLs must be base64 encoded", param=where)
        return {"inlineData": {"mimeType": mime or "application/octet-stream", "data": data}}
    if not url.startswith(("http://", "https://", "gs://")):
        raise bad_request(f"{where}: expected an http(s) or data URL", param=where)
    path = urlsplit(url).path
    extension = path.rpartition(".")[2].lower() if "." in path.rpartition("/")[2] else ""
    return {"fileData": {"mimeType": _MIME_BY_EXTENSION.get(extension, "image/jpeg"), "fileUri": url}}


def _function_call(call: Any, where: str, call_names: dict[str, str]) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(function, dict) or not isinstance(name, str):
        raise bad_request(f"{where}.function.name is required", param=where)
    arguments = function.get("arguments") or "{}"
    try:
        args = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise bad_request(f"{where}.function.arguments must be a JSON object", param=where)
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
    call_id = call.get("id")
    if isinstance(call_id, str):
        call_names[call_id] = name
        _, marker, signature = call_id.partition(_THOUGHT)
        if marker and signature:
            part["thoughtSignature"] = signature
    return part


def _function_response(name: str, content: Any, i: int) -> dict[str, Any]:
    if isinstance(content, list):
        text = "".join(p["text"] for p in _text_parts(content, i))
    else:
        text = content if isinstance(content, str) else ""
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = text
    response = parsed if isinstance(parsed, dict) else {"content": parsed}
    return {"functionResponse": {"name": name, "response": response}}


def _declaration(tool: Any, i: int) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type", "function") == "function" \
        else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise bad_request(f"tools[{i}] must be a function tool with a name", param=f"tools[{i}]")
    declaration: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        declaration["description"] = function["description"]
    parameters = function.get("parameters")
    if parameters:
        declaration["parametersJsonSchema"] = parameters
    return declaration


def _calling_config(choice: Any) -> dict[str, Any]:
    if isinstance(choice, str) and choice in _TOOL_MODES:
        return {"mode": _TOOL_MODES[choice]}
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise bad_request("'tool_choice' must be none, auto, required or {\"type\": \"function\", "
                          "\"function\": {\"name\": ...}}", param="tool_choice")
    return {"mode": "ANY", "allowedFunctionNames": [name]}


# -- response translation --------------------------------------------------------------
def _choice(candidate: dict[str, Any]) -> tuple[dict[str, Any], str]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts or ():
        text = part.get("text")
        if text is not None:
            (thoughts if part.get("thought") else texts).append(text)
        elif (call := part.get("functionCall")) is not None:
            calls.append({"id": _call_id(part.get("thoughtSignature")), "type": "function",
                          "function": {"name": call.get("name"), "arguments": _arguments(call)}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if thoughts:  # thought summaries (thinkingConfig.includeThoughts), as LiteLLM exposes them
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    return message, _finish_reason(candidate.get("finishReason") or "STOP", bool(calls))


def _finish_reason(reason: str, called: bool) -> str:
    mapped = _FINISH.get(reason, "stop")
    return "tool_calls" if called and mapped == "stop" else mapped


def _call_id(signature: Any) -> str:
    call_id = f"call_{os.urandom(12).hex()}"
    return f"{call_id}{_THOUGHT}{signature}" if isinstance(signature, str) and signature else call_id


def _arguments(call: dict[str, Any]) -> str:
    return orjson.dumps(call.get("args") or {}).decode()


def _usage(meta: Any) -> dict[str, Any] | None:
    """OpenAI usage of ``usageMetadata``: thinking counts as completion, tool-use prompt as prompt."""
    if not isinstance(meta, dict):
        return None
    thoughts = meta.get("thoughtsTokenCount") or 0
    prompt = (meta.get("promptTokenCount") or 0) + (meta.get("toolUsePromptTokenCount") or 0)
    usage = openai_usage(prompt, (meta.get("candidatesTokenCount") or 0) + thoughts,
                         cached=meta.get("cachedContentTokenCount") or 0)
    if thoughts:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return usage


# -- errors ----------------------------------------------------------------------------
def _parse_error(body: bytes) -> tuple[str | None, str | None, list[dict[str, Any]]]:
    """(message, Google status string, details) of ``{"error": {code, message, status, details}}``."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:500].decode("utf-8", "replace").strip()
        return (text or None), None, []
    if isinstance(data, list) and data:  # the JSON-array stream form wraps the error in a list
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return None, None, []
    message = err.get("message")
    google_status = err.get("status")
    details = err.get("details")
    return (
        str(message) if message is not None else None,
        google_status if isinstance(google_status, str) else None,
        [d for d in details if isinstance(d, dict)] if isinstance(details, list) else [],
    )


def _retry_delay(details: list[dict[str, Any]]) -> bytes | None:
    """Whole seconds (rounded up) of a ``google.rpc.RetryInfo`` detail's ``retryDelay`` ("37s", "0.5s")."""
    for detail in details:
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                seconds = float(delay[:-1])
            except ValueError:
                return None
            if math.isfinite(seconds) and seconds >= 0:
                return str(math.ceil(seconds)).encode()
    return None


__all__ = ["GeminiProvider", "GeminiStream"]
