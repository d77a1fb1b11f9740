"""OpenAI chat requests as Gemini generateContent requests.

Messages become ``contents`` (roles ``user``/``model``, consecutive turns of one role merged, tool results as
``functionResponse`` parts of a user turn); system and developer messages become ``systemInstruction``;
sampling fields go to ``generationConfig``. A tool result names no function in OpenAI's shape: it is found from
the assistant tool call with its id earlier in the same request.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson

from mmproxy.errors import bad_request
from mmproxy.providers.base import OPENAI_PARAMS
from mmproxy.providers.gemini.response import THOUGHT

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


_MIME_BY_EXTENSION = {
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif",
    "heic": "image/heic", "heif": "image/heif", "pdf": "application/pdf",
}


# -- request building ------------------------------------------------------------------

def generate_body(payload: dict[str, Any]) -> dict[str, Any]:
    system, contents = to_contents(payload["messages"])
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


def to_contents(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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
        _, marker, signature = call_id.partition(THOUGHT)
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
