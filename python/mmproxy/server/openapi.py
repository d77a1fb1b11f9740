"""The OpenAPI 3.1 document of every route the gateway serves (``GET /openapi.json``).

Why a document at all: users generate clients from it and see every endpoint in one place, and the test suite
fuzzes the gateway from it, so its request schemas say what validation enforces (required fields, types, the
role and content-part enums, positive integers, the nesting limit) rather than everything a provider accepts.
Unknown request fields pass through to providers, so request objects allow additional properties.

It is built once, at import, and served as pre-encoded bytes: no route pays for it.
"""

from __future__ import annotations

from typing import Any

import orjson

from mmproxy import __version__
from mmproxy.validation import CHAT_ROLES, MAX_DEPTH

_REF = "#/components/schemas/"
_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _obj(properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = list(required)
    return schema


_STRING = {"type": "string"}
_NAME = {"type": "string", "minLength": 1}
_BOOL = {"type": "boolean"}
_NUMBER = {"type": "number"}
_INT = {"type": "integer"}
_POSITIVE = {"type": "integer", "minimum": 1}
_NON_NEGATIVE = {"type": "integer", "minimum": 0}
_ANY_OBJECT = {"type": "object"}
_STRINGS = {"type": "array", "items": _STRING}
_NULLABLE_STRING = {"type": ["string", "null"]}


# -- request bodies --------------------------------------------------------------------------------
_CHAT_PART = {"oneOf": [
    _obj({"type": {"const": "text"}, "text": _STRING}, ("type", "text")),
    _obj({"type": {"const": "image_url"},
          "image_url": _obj({"url": _STRING, "detail": {"enum": ["auto", "low", "high"]}}, ("url",))},
         ("type", "image_url")),
    _obj({"type": {"const": "input_audio"}, "input_audio": _obj({"data": _STRING, "format": _STRING})},
         ("type", "input_audio")),
    _obj({"type": {"const": "file"}, "file": _ANY_OBJECT}, ("type", "file")),
]}
_TOOL_CALL = _obj({"id": _STRING, "type": {"const": "function"},
                   "function": _obj({"name": _STRING, "arguments": _STRING}, ("name", "arguments"))},
                  ("id", "type", "function"))
_CHAT_MESSAGE = _obj({
    "role": {"enum": sorted(CHAT_ROLES)},
    "content": {"oneOf": [_STRING, {"type": "array", "items": _ref("ChatContentPart")}, {"type": "null"}]},
    "name": _STRING,
    "tool_calls": {"type": "array", "items": _TOOL_CALL},
    "tool_call_id": _STRING,
}, ("role",))
_FUNCTION_TOOL = _obj({"type": {"const": "function"}, "function": _obj(
    {"name": _NAME, "description": _STRING, "parameters": _ANY_OBJECT, "strict": _BOOL}, ("name",))},
    ("type", "function"))
_CHAT_REQUEST = _obj({
    "model": _NAME,
    "messages": {"type": "array", "minItems": 1, "items": _ref("ChatMessage")},
    "stream": _BOOL,
    "stream_options": _obj({"include_usage": _BOOL}),
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "n": _POSITIVE,
    "max_tokens": _POSITIVE,
    "max_completion_tokens": _POSITIVE,
    "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER,
    "seed": _INT,
    "logprobs": _BOOL,
    "top_logprobs": _INT,
    "stop": {"oneOf": [_STRING, _STRINGS]},
    "tools": {"type": "array", "items": _FUNCTION_TOOL},
    "tool_choice": {"oneOf": [{"enum": ["none", "auto", "required"]}, _ANY_OBJECT]},
    "parallel_tool_calls": _BOOL,
    "response_format": _ANY_OBJECT,
    "logit_bias": _ANY_OBJECT,
    "user": _STRING,
    "metadata": _ANY_OBJECT,
    "cache": _obj({"no-cache": _BOOL, "no-store": _BOOL, "ttl": _NUMBER},
                  description="The gateway's own cache controls (LiteLLM's); never sent upstream."),
}, ("model", "messages"))
_EMBEDDINGS_REQUEST = _obj({
    "model": _NAME,
    "input": {"oneOf": [
        _NAME,
        {"type": "array", "minItems": 1, "items": {"oneOf": [_STRING, _INT, {"type": "array", "items": _INT}]}},
    ]},
    "encoding_format": {"enum": ["float", "base64"]},
    "dimensions": _POSITIVE,
    "user": _STRING,
}, ("model", "input"))

_ANTHROPIC_TEXT = _obj({"type": {"const": "text"}, "text": _STRING, "cache_control": _ANY_OBJECT}, ("type", "text"))
_ANTHROPIC_SOURCE = {"oneOf": [
    _obj({"type": {"const": "base64"}, "media_type": _STRING, "data": _STRING}, ("type", "media_type", "data")),
    _obj({"type": {"const": "url"}, "url": _STRING}, ("type", "url")),
]}
_ANTHROPIC_BLOCK = {"oneOf": [
    _ANTHROPIC_TEXT,
    _obj({"type": {"const": "image"}, "source": _ANTHROPIC_SOURCE}, ("type", "source")),
    _obj({"type": {"const": "document"}, "source": _ANTHROPIC_SOURCE}, ("type", "source")),
    _obj({"type": {"const": "tool_use"}, "id": _NAME, "name": _NAME, "input": _ANY_OBJECT}, ("type", "id", "name")),
    _obj({"type": {"const": "tool_result"}, "tool_use_id": _NAME, "is_error": _BOOL,
          "content": {"oneOf": [_STRING, {"type": "array", "items": _ANTHROPIC_TEXT}]}}, ("type", "tool_use_id")),
    _obj({"type": {"enum": ["thinking", "redacted_thinking"]}}, ("type",)),
]}
_MESSAGES_REQUEST = _obj({
    "model": _NAME,
    "max_tokens": _POSITIVE,
    "messages": {"type": "array", "minItems": 1, "items": _obj({
        "role": {"enum": ["user", "assistant"]},
        "content": {"oneOf": [_STRING, {"type": "array", "minItems": 1, "items": _ref("AnthropicContentBlock")}]},
    }, ("role", "content"))},
    "system": {"oneOf": [_STRING, {"type": "array", "items": _ANTHROPIC_TEXT}]},
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "top_k": _INT,
    "stop_sequences": _STRINGS,
    "stream": _BOOL,
    "tools": {"type": "array", "items": _obj({
        "type": {"const": "custom"}, "name": _NAME, "description": _STRING, "input_schema": _ANY_OBJECT,
        "strict": _BOOL, "cache_control": _ANY_OBJECT}, ("name", "input_schema"))},
    "tool_choice": _obj({"type": {"enum": ["auto", "any", "tool", "none"]}, "name": _NAME,
                         "disable_parallel_tool_use": _BOOL}, ("type",)),
    "metadata": _obj({"user_id": _STRING}),
    "output_config": _obj({"effort": {"enum": ["low", "medium", "high", "xhigh", "max"]},
                           "format": _obj({"type": {"const": "json_schema"}, "schema": _ANY_OBJECT},
                                          ("type", "schema"))}),
    "thinking": _ANY_OBJECT,
}, ("model", "max_tokens", "messages"))
_COUNT_TOKENS_REQUEST = {**_MESSAGES_REQUEST, "required": ["model", "messages"]}

_RESPONSES_PART = {"oneOf": [
    _obj({"type": {"enum": ["input_text", "output_text"]}, "text": _STRING}, ("type", "text")),
    _obj({"type": {"const": "input_image"}, "image_url": _STRING, "detail": {"enum": ["auto", "low", "high"]}},
         ("type", "image_url")),
]}
_RESPONSES_ITEM = {"oneOf": [
    _obj({"type": {"const": "message"}, "role": {"enum": ["user", "assistant", "system", "developer"]},
          "content": {"oneOf": [_STRING, {"type": "array", "items": _RESPONSES_PART}]}}, ("role", "content")),
    _obj({"type": {"const": "function_call"}, "call_id": _STRING, "name": _STRING, "arguments": _STRING},
         ("type", "call_id", "name")),
    _obj({"type": {"const": "function_call_output"}, "call_id": _STRING, "output": _STRING},
         ("type", "call_id", "output")),
    _obj({"type": {"const": "reasoning"}}, ("type",)),
]}
_RESPONSES_REQUEST = _obj({
    "model": _NAME,
    "input": {"oneOf": [_STRING, {"type": "array", "minItems": 1, "items": _ref("ResponsesInputItem")}]},
    "instructions": _STRING,
    "max_output_tokens": _POSITIVE,
    "stream": _BOOL,
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "parallel_tool_calls": _BOOL,
    "user": _STRING,
    "seed": _INT,
    "tools": {"type": "array", "items": _obj({"type": {"const": "function"}, "name": _NAME,
                                              "description": _STRING, "parameters": _ANY_OBJECT,
                                              "strict": _BOOL}, ("type", "name"))},
    "tool_choice": {"oneOf": [{"enum": ["auto", "none", "required"]},
                              _obj({"type": {"const": "function"}, "name": _NAME}, ("type", "name"))]},
    "text": _obj({"format": _obj({"type": {"enum": ["text", "json_object", "json_schema"]}, "name": _STRING,
                                  "schema": _ANY_OBJECT, "strict": _BOOL}, ("type",))}),
    "reasoning": _obj({"effort": {"enum": ["minimal", "low", "medium", "high"]}}),
    "metadata": {"type": "object", "additionalProperties": _STRING},
    "store": _BOOL,
}, ("model", "input"), description="Server-side state (previous_response_id, conversation, background, prompt) "
                                   "and built-in tools are refused: the gateway keeps no state.")

_KEY_FIELDS: dict[str, Any] = {
    "key_alias": _NULLABLE_STRING,
    "team_id": _NULLABLE_STRING,
    "user_id": _NULLABLE_STRING,
    "models": {"type": ["array", "null"], "items": _STRING},
    "max_budget": {"type": ["number", "null"], "minimum": 0},
    "budget_duration": {"type": ["string", "null"], "pattern": r"^\s*\d+\s*(mo|s|m|h|d|w)\s*$",
                        "description": "A window such as 30s, 10m, 1h, 7d, 30d; at most 100 years."},
    "duration": {"type": ["string", "null"], "pattern": r"^\s*\d+\s*(mo|s|m|h|d|w)\s*$",
                 "description": "The key expires this long after now (at most 100 years)."},
    "rpm_limit": {"type": ["integer", "null"], "minimum": 0},
    "tpm_limit": {"type": ["integer", "null"], "minimum": 0},
    "metadata": {"type": ["object", "null"]},
    "blocked": _BOOL,
}
_KEY_GENERATE = _obj({**_KEY_FIELDS, "key": {"type": "string", "pattern": "^sk-", "minLength": 12}})
_OWNER_FIELDS = {name: _KEY_FIELDS[name] for name in (
    "models", "max_budget", "budget_duration", "rpm_limit", "tpm_limit", "metadata", "blocked")}
_TEAM = _obj({**_OWNER_FIELDS, "team_id": _NAME, "team_alias": _NULLABLE_STRING})
_TEAM_UPDATE = _obj({**_OWNER_FIELDS, "team_id": _NAME, "team_alias": _NULLABLE_STRING}, ("team_id",))
_TEAM_DELETE = _obj({"team_ids": {"type": "array", "minItems": 1, "items": _NAME}}, ("team_ids",))
_USER_FIELDS = {**_OWNER_FIELDS, "user_email": _NULLABLE_STRING, "user_alias": _NULLABLE_STRING,
                "teams": {"type": ["array", "null"], "items": _STRING}}
_USER = _obj({**_USER_FIELDS, "user_id": _NAME, "auto_create_key": _BOOL})
_USER_UPDATE = _obj({**_USER_FIELDS, "user_id": _NAME}, ("user_id",))
_USER_DELETE = _obj({"user_ids": {"type": "array", "minItems": 1, "items": _NAME}}, ("user_ids",))
_KEY_UPDATE = _obj({**_KEY_FIELDS, "key": {**_NAME, "description": "The key itself or its token (hash)."}}, ("key",))
_KEY_DELETE = _obj({"keys": {"type": "array", "minItems": 1, "items": _NAME}}, ("keys",))
_FEEDBACK = _obj({"request_id": _NAME, "score": {"type": "number", "minimum": 0, "maximum": 1},
                  "label": _STRING, "comment": _STRING}, ("request_id",),
                 description="A score, a label or both, for the answer with this x-mmproxy-request-id.")
_BATCH_CREATE = _obj({"input_file_id": _STRING, "endpoint": {"const": "/v1/chat/completions"},
                      "completion_window": {"const": "24h"},
                      "metadata": {"type": "object", "additionalProperties": _STRING}},
                     ("input_file_id", "endpoint", "completion_window"))
_FILE_UPLOAD = _obj({"purpose": {"const": "batch"}, "file": {"type": "string", "contentMediaType":
                                                             "application/octet-stream"}}, ("purpose", "file"))
_DASHBOARD_LOGIN = _obj({"key": _NAME}, ("key",))
_MESSAGE_BATCH_CREATE = _obj({"requests": {"type": "array", "minItems": 1, "items": _obj({
    "custom_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
    "params": _ref("MessagesRequest"),
}, ("custom_id", "params"))}}, ("requests",))

# -- responses -------------------------------------------------------------------------------------
_ERROR = _obj({"error": _obj({"message": _STRING, "type": _STRING, "param": _NULLABLE_STRING,
                              "code": _NULLABLE_STRING}, ("message", "type", "param", "code"))}, ("error",))
_ANTHROPIC_ERROR = _obj({"type": {"const": "error"}, "error": _obj({"type": _STRING, "message": _STRING},
                                                                   ("type", "message"))}, ("type", "error"))

_SCHEMAS = {
    "Error": _ERROR,
    "AnthropicError": _ANTHROPIC_ERROR,
    "ChatContentPart": _CHAT_PART,
    "ChatMessage": _CHAT_MESSAGE,
    "ChatCompletionRequest": _CHAT_REQUEST,
    "EmbeddingsRequest": _EMBEDDINGS_REQUEST,
    "AnthropicContentBlock": _ANTHROPIC_BLOCK,
    "MessagesRequest": _MESSAGES_REQUEST,
    "CountTokensRequest": _COUNT_TOKENS_REQUEST,
    "ResponsesInputItem": _RESPONSES_ITEM,
    "ResponsesRequest": _RESPONSES_REQUEST,
    "KeyGenerateRequest": _KEY_GENERATE,
    "KeyUpdateRequest": _KEY_UPDATE,
    "KeyDeleteRequest": _KEY_DELETE,
    "TeamNewRequest": _TEAM,
    "TeamUpdateRequest": _TEAM_UPDATE,
    "TeamDeleteRequest": _TEAM_DELETE,
    "UserNewRequest": _USER,
    "UserUpdateRequest": _USER_UPDATE,
    "UserDeleteRequest": _USER_DELETE,
    "FeedbackRequest": _FEEDBACK,
    "BatchCreateRequest": _BATCH_CREATE,
    "FileUploadRequest": _FILE_UPLOAD,
    "MessageBatchCreateRequest": _MESSAGE_BATCH_CREATE,
    "DashboardLogin": _DASHBOARD_LOGIN,
}


def _errors(shape: str) -> dict[str, Any]:
    """The 4xx answers every operation may give, in ``shape`` (OpenAI's error, or Anthropic's on its APIs)."""
    content = {_JSON: {"schema": _ref(shape)}}
    return {"4XX": {"description": "The request was refused; the body says which field and why.",
                    "content": content},
            "5XX": {"description": "An upstream failure (502, 503, 504) after retries and fallbacks.",
                    "content": content}}


def _op(summary: str, *, tag: str, body: str | None = None, query: dict[str, Any] | None = None,
        path: tuple[str, ...] = (), public: bool = False, errors: str | None = "Error",
        ok: str = _JSON, form: str | None = None) -> dict[str, Any]:
    """One operation: a 200 in ``ok``'s media type, the error answers in the ``errors`` schema (None: a page,
    whose errors are pages too), auth unless ``public``; ``form`` is the body's media type when it is a form."""
    operation: dict[str, Any] = {"summary": summary, "tags": [tag],
                                 "responses": {"200": {"description": "OK", "content": {ok: {}}}}}
    parameters = [{"name": name, "in": "path", "required": True, "schema": _NAME} for name in path]
    parameters += [{"name": name, "in": "query", "schema": schema} for name, schema in (query or {}).items()]
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {form or _JSON: {"schema": _ref(body)}}}
    if public:
        operation["security"] = []
    if errors is not None:
        operation["responses"].update(_errors(errors))
    return operation


_LIMIT = {"type": "integer", "minimum": 1}
_TIME = {"type": "string", "description": "Epoch seconds, a date (2026-11-28) or an ISO 8601 time."}
_SPEND_FILTERS = {"start": _TIME, "end": _TIME, "start_date": _TIME, "end_date": _TIME}
_GROUPS = ["model", "model_group", "deployment", "key", "team", "tier", "rule", "provider", "cache"]

_PERIOD = {"type": "integer", "minimum": 60, "maximum": 90 * 86400, "description": "Seconds back from now."}
_PAGE = {"get": _op("The dashboard (its login page without a session)", tag="Dashboard", public=True, errors=None,
                    ok="text/html")}
_CHAT = {"post": _op("OpenAI chat completion, on any configured model", tag="OpenAI", body="ChatCompletionRequest")}
_EMBEDDINGS = {"post": _op("OpenAI embeddings", tag="OpenAI", body="EmbeddingsRequest")}
_RESPONSES = {"post": _op("OpenAI Responses API, served by any chat model", tag="OpenAI", body="ResponsesRequest")}
_MODELS = {"get": _op("The models this key may use (OpenAI's and Anthropic's list shapes)", tag="Models")}
_MODEL = {"get": _op("One model", tag="Models", path=("model",))}
_MODEL_INFO = {"get": _op("Deployments of the models this key may use: parameters without secrets, prices, limits",
                          tag="Models", query={"litellm_model_id": _STRING})}
_FEEDBACK_OP = {"post": _op("A score or label for an earlier answer", tag="Spend", body="FeedbackRequest")}

PATHS: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": _CHAT,
    "/chat/completions": _CHAT,
    "/v1/embeddings": _EMBEDDINGS,
    "/embeddings": _EMBEDDINGS,
    "/v1/responses": _RESPONSES,
    "/responses": _RESPONSES,
    "/v1/messages": {"post": _op("Anthropic Messages API, on any configured model", tag="Anthropic",
                                 body="MessagesRequest", errors="AnthropicError")},
    "/v1/messages/count_tokens": {"post": _op("Anthropic token count of a Messages request", tag="Anthropic",
                                              body="CountTokensRequest", errors="AnthropicError")},
    "/v1/models": _MODELS,
    "/models": _MODELS,
    "/v1/models/{model}": _MODEL,
    "/models/{model}": _MODEL,
    "/health/liveliness": {"get": _op("The process is up", tag="Health", public=True)},
    "/health/readiness": {"get": _op("The gateway is ready: database, models", tag="Health", public=True)},
    "/health": {"get": _op("Per-deployment health as the router sees it", tag="Health")},
    "/openapi.json": {"get": _op("This document", tag="Health", public=True)},
    "/key/generate": {"post": _op("Create a virtual key (admin)", tag="Keys", body="KeyGenerateRequest")},
    "/key/info": {"get": _op("One key's settings and spend (admin)", tag="Keys", query={"key": _NAME})},
    "/key/update": {"post": _op("Change a key's settings (admin)", tag="Keys", body="KeyUpdateRequest")},
    "/key/delete": {"post": _op("Delete keys (admin)", tag="Keys", body="KeyDeleteRequest")},
    "/key/list": {"get": _op("The keys, a page at a time (admin)", tag="Keys", query={
        "page": _LIMIT, "size": _LIMIT, "team_id": _STRING, "return_full_object": {"enum": ["true", "false"]}})},
    "/team/new": {"post": _op("Create a team (admin)", tag="Teams", body="TeamNewRequest")},
    "/team/info": {"get": _op("One team, its spend and its keys (admin)", tag="Teams", query={"team_id": _NAME})},
    "/team/update": {"post": _op("Change a team's settings (admin)", tag="Teams", body="TeamUpdateRequest")},
    "/team/delete": {"post": _op("Delete teams and their keys (admin)", tag="Teams", body="TeamDeleteRequest")},
    "/team/list": {"get": _op("The teams (admin)", tag="Teams", query={"page": _LIMIT, "size": _LIMIT})},
    "/user/new": {"post": _op("Create a user, with a key unless auto_create_key is false (admin)", tag="Users",
                              body="UserNewRequest")},
    "/user/info": {"get": _op("One user, their spend and their keys (admin)", tag="Users", query={"user_id": _NAME})},
    "/user/update": {"post": _op("Change a user's settings (admin)", tag="Users", body="UserUpdateRequest")},
    "/user/delete": {"post": _op("Delete users and their keys (admin)", tag="Users", body="UserDeleteRequest")},
    "/user/list": {"get": _op("The users (admin)", tag="Users", query={"page": _LIMIT, "size": _LIMIT})},
    "/model/info": _MODEL_INFO,
    "/v1/model/info": _MODEL_INFO,
    "/spend/logs": {"get": _op("Ledger rows, newest first (admin)", tag="Spend", query={
        "request_id": _STRING, "api_key": _STRING, "team_id": _STRING, "model": _STRING, "limit": _LIMIT,
        **_SPEND_FILTERS})},
    "/spend/report": {"get": _op("Spend grouped by a dimension, and what caching saved (admin)", tag="Spend",
                                 query={"group_by": {"enum": _GROUPS}, **_SPEND_FILTERS})},
    "/v1/feedback": _FEEDBACK_OP,
    "/feedback": _FEEDBACK_OP,
    "/metrics": {"get": _op("Prometheus metrics", tag="Health", ok="text/plain", public=True)},
    "/v1/files": {"post": _op("Upload a batch input file (JSONL)", tag="Batches", body="FileUploadRequest",
                              form="multipart/form-data")},
    "/v1/files/{file_id}": {"get": _op("A file's metadata", tag="Batches", path=("file_id",))},
    "/v1/files/{file_id}/content": {"get": _op("A file's content", tag="Batches", path=("file_id",),
                                               ok="application/octet-stream")},
    "/v1/batches": {
        "post": _op("Start an OpenAI batch on a batch-capable deployment", tag="Batches", body="BatchCreateRequest"),
        "get": _op("The caller's batches, newest first", tag="Batches",
                   query={"limit": {"type": "integer", "minimum": 1, "maximum": 100}, "after": _STRING}),
    },
    "/v1/batches/{batch_id}": {"get": _op("A batch, refreshed from upstream", tag="Batches", path=("batch_id",))},
    "/v1/batches/{batch_id}/cancel": {"post": _op("Cancel a batch", tag="Batches", path=("batch_id",))},
    "/v1/messages/batches": {
        "post": _op("Start an Anthropic Message Batch", tag="Anthropic", body="MessageBatchCreateRequest",
                    errors="AnthropicError"),
        "get": _op("The caller's message batches, newest first", tag="Anthropic", errors="AnthropicError",
                   query={"limit": {"type": "integer", "minimum": 1, "maximum": 1000}, "after_id": _STRING}),
    },
    "/v1/messages/batches/{batch_id}": {"get": _op("A message batch", tag="Anthropic", path=("batch_id",),
                                                   errors="AnthropicError")},
    "/v1/messages/batches/{batch_id}/results": {"get": _op("A message batch's results (JSONL)", tag="Anthropic",
                                                           path=("batch_id",), errors="AnthropicError",
                                                           ok="application/x-jsonl")},
    "/v1/messages/batches/{batch_id}/cancel": {"post": _op("Cancel a message batch", tag="Anthropic",
                                                           path=("batch_id",), errors="AnthropicError")},
    "/ui": _PAGE,
    "/ui/": _PAGE,
    "/ui/login": {"post": _op("Log in to the dashboard with a key: a session cookie, then a redirect to /ui",
                              tag="Dashboard", body="DashboardLogin", form="application/x-www-form-urlencoded",
                              public=True, errors=None, ok="text/html")},
    "/ui/logout": {"post": _op("Log out of the dashboard", tag="Dashboard", public=True, errors=None,
                               ok="text/html")},
    "/ui/static/{file}": {"get": _op("The dashboard's scripts and styles", tag="Dashboard", path=("file",),
                                     public=True, errors=None, ok="text/javascript")},
    "/ui/api/report": {"get": _op("Spend, requests and savings per group over a period, in time buckets",
                                  tag="Dashboard", query={"group_by": {"enum": _GROUPS}, "period": _PERIOD})},
    "/ui/api/decisions": {"get": _op("What the virtual models decided over a period", tag="Dashboard",
                                     query={"period": _PERIOD})},
    "/ui/api/live": {"get": _op("Finished requests as server-sent events (the dashboard's session cookie)",
                                tag="Dashboard", ok="text/event-stream")},
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "mmproxy",
        "version": __version__,
        "description": "A multi-model LLM gateway: OpenAI's and Anthropic's APIs in front of every configured "
                       f"model, LiteLLM's key and spend endpoints. Request bodies are JSON objects nested at most "
                       f"{MAX_DEPTH} levels deep and no larger than general_settings.max_request_size_mb.",
    },
    "security": [{"bearer": []}, {"x-api-key": []}],
    "paths": PATHS,
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "The master key or a virtual key: Authorization: Bearer sk-..."},
            "x-api-key": {"type": "apiKey", "in": "header", "name": "x-api-key",
                          "description": "The same keys as Anthropic's SDK sends them."},
        },
    },
}

BODY = orjson.dumps(DOCUMENT)
