"""Request validation: wrong input becomes a 400 that names the field.

Checks are type checks on the fields the gateway or OpenAI defines; unknown
fields pass through untouched so provider-specific extras keep working.
"""

from __future__ import annotations

from typing import Any

import orjson

from mmproxy.errors import ProxyError, bad_request

_NUMBER = (int, float)
CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

# field -> (accepted types, description for the error message)
_CHAT_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "stream": ((bool,), "a boolean"),
    "temperature": (_NUMBER, "a number"),
    "top_p": (_NUMBER, "a number"),
    "n": ((int,), "an integer"),
    "max_tokens": ((int,), "an integer"),
    "max_completion_tokens": ((int,), "an integer"),
    "presence_penalty": (_NUMBER, "a number"),
    "frequency_penalty": (_NUMBER, "a number"),
    "seed": ((int,), "an integer"),
    "logprobs": ((bool,), "a boolean"),
    "top_logprobs": ((int,), "an integer"),
    "stop": ((str, list), "a string or a list of strings"),
    "tools": ((list,), "a list"),
    "tool_choice": ((str, dict), "a string or an object"),
    "parallel_tool_calls": ((bool,), "a boolean"),
    "response_format": ((dict,), "an object"),
    "stream_options": ((dict,), "an object"),
    "logit_bias": ((dict,), "an object"),
    "user": ((str,), "a string"),
    "metadata": ((dict,), "an object"),
}
_POSITIVE_INTS = frozenset({"n", "max_tokens", "max_completion_tokens"})


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise bad_request("request body is empty; expected a JSON object")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise bad_request("request body must be a JSON object")
    # orjson reads 1,024 levels but writes only 254, and the gateway writes what it read (ledger, translations,
    # the Responses API's echo): deeper bodies are refused here, not after the upstream was paid. Fewer brackets
    # than the limit cannot nest deeper, so the walk runs only for bodies with many of them.
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and _depth(payload) > MAX_DEPTH:
        raise bad_request(f"request body is nested more than {MAX_DEPTH} levels deep", code="invalid_json")
    return payload


MAX_DEPTH = 128


def _depth(value: Any) -> int:
    """How deep JSON containers nest in ``value`` (iterative: no recursion limit to hit)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


UPSTREAM_OVERRIDES = ("api_base", "base_url", "api_key", "extra_headers", "user_config")
"""Fields with which LiteLLM lets a client choose the upstream, its key or its headers. The gateway never honours
them (a model goes only where its config sends it, so a caller cannot make it connect anywhere) and refuses them,
as LiteLLM does by default, rather than pass them to a provider that would fail the request for them."""


def upstream_override(payload: dict[str, Any]) -> str | None:
    """The first ``UPSTREAM_OVERRIDES`` field in ``payload``, or None (a few dict lookups)."""
    for name in UPSTREAM_OVERRIDES:
        if name in payload:
            return name
    return None


def refuse_upstream_override(payload: dict[str, Any], where: str = "") -> None:
    """A 400 naming the field (``where``: its parent's path, such as ``requests.0.params.``) when there is one."""
    name = upstream_override(payload)
    if name is not None:
        raise bad_request(f"'{where}{name}' is not allowed in a request: each model goes to the upstream, with the "
                          "key and headers, that the gateway's config gives it", param=f"{where}{name}",
                          code="upstream_override_not_allowed")


def require_model(payload: dict[str, Any]) -> str:
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string", param="model")
    return model


def validate_chat(payload: dict[str, Any]) -> None:
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' is required and must be a non-empty list", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{i}] must be an object", param=f"messages[{i}]")
        role = message.get("role")
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise bad_request(
                f"messages[{i}].role must be one of {', '.join(sorted(CHAT_ROLES))}", param=f"messages[{i}].role"
            )
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise bad_request(
                f"messages[{i}].content must be a string or a list of content parts",
                param=f"messages[{i}].content",
            )
        if isinstance(content, list):
            for j, part in enumerate(content):
                _check_part(part, f"messages[{i}].content[{j}]")
        calls = message.get("tool_calls")
        if calls is not None:
            _check_tool_calls(calls, f"messages[{i}].tool_calls")
    # A request has a handful of fields: walk those, not the table.
    for name, value in payload.items():
        spec = _CHAT_FIELDS.get(name)
        if spec is None or value is None:
            continue
        types, what = spec
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise bad_request(f"'{name}' must be {what}", param=name)
        if name in _POSITIVE_INTS and isinstance(value, int) and value < 1:
            raise bad_request(f"'{name}' must be at least 1", param=name)


# Content parts whose payload is an object under the part's type name (``{"type": "file", "file": {...}}``).
_PART_OBJECTS = frozenset({"image_url", "input_audio", "file"})


def _check_part(part: Any, where: str) -> None:
    """A content part has the shape every provider adapter reads it in."""
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise bad_request(f"{where} must be a content part: an object with a 'type'", param=where)
    kind = part["type"]
    if kind == "text" and not isinstance(part.get("text"), str):
        raise bad_request(f"{where}.text must be a string", param=f"{where}.text")
    if kind in _PART_OBJECTS:
        payload = part.get(kind)
        if kind == "image_url" and isinstance(payload, str):  # the URL alone, as some clients send it
            return
        if not isinstance(payload, dict) or (kind == "image_url" and not isinstance(payload.get("url"), str)):
            what = "an object with a string 'url'" if kind == "image_url" else "an object"
            raise bad_request(f"{where}.{kind} must be {what}", param=f"{where}.{kind}")


def _check_tool_calls(calls: Any, where: str) -> None:
    """An assistant turn's tool calls: a list of objects; a function call's ``function`` has a string name and
    arguments (the JSON text of the call's input), which providers that speak another dialect parse."""
    if not isinstance(calls, list):
        raise bad_request(f"{where} must be a list", param=where)
    for k, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if function is None and isinstance(call, dict) and call.get("type", "function") != "function":
            continue  # another kind of call (OpenAI's custom tools): passed on as it is
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad_request(f"{where}[{k}].function must be an object with a string 'name'",
                              param=f"{where}[{k}].function")
        if not isinstance(function.get("arguments", ""), str):
            raise bad_request(f"{where}[{k}].function.arguments must be a string of JSON",
                              param=f"{where}[{k}].function.arguments")


def validate_embeddings(payload: dict[str, Any]) -> None:
    value = payload.get("input")
    if isinstance(value, str) and value:
        return
    if isinstance(value, list) and value and all(isinstance(item, (str, int, list)) for item in value):
        return
    raise bad_request(
        "'input' is required: a non-empty string, a list of strings or a list of token arrays", param="input"
    )


def query_int(raw: str | None, name: str, default: int, maximum: int, minimum: int = 1) -> int:
    """A query parameter that must be an integer from ``minimum`` to ``maximum`` (``default`` when absent); a 400
    naming it otherwise. The bound keeps pages and offsets inside the database's 64-bit integers."""
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if not minimum <= value <= maximum:
        raise bad_request(f"{name} must be an integer from {minimum} to {maximum}", param=name)
    return value


def unknown_model(model: str) -> ProxyError:
    return ProxyError(
        400,
        f"model {model!r} is not configured on this gateway; GET /v1/models lists the available models",
        param="model",
        code="model_not_found",
    )
