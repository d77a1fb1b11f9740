"""Anthropic wire format: ``POST /v1/messages`` (plain, streamed, tool use) with Anthropic's errors.

Shapes follow Anthropic's Messages API reference (and what the ``anthropic`` SDK parses): the
key in ``x-api-key`` (or as a Bearer token, which recent SDKs send) when the simulator has one,
a required ``anthropic-version`` header, unknown body fields rejected ("Extra inputs are not
permitted"), consecutive same-role turns combined, and ``tool_use``/``tool_result`` pairing
checked as the real API does. Deterministic rules:

* Tokens: input = ceil(chars / 4), chars = the compact sorted-key JSON length of each tool, each
  system block and each message's content (block by block); output = words, as in ``behaviour``.
* Prompt cache (``behaviour.PromptCache``): a tool, system block or content block carrying
  ``cache_control`` is a breakpoint (order: tools, system, messages). The prefix up to the last
  breakpoint is written on first sight (``cache_creation_input_tokens``) when it has at least 1,024
  tokens; the longest prefix written before, within five minutes, is read
  (``cache_read_input_tokens``); the rest stay ``input_tokens``.
* Tools: ``tool_choice`` none -> text; ``tool`` -> that tool; ``any``, or ``auto`` unless the last
  user turn holds a ``tool_result`` -> the first tool and, when there are two or more and
  ``disable_parallel_tool_use`` is not set, the second one too (parallel calls). With the
  ``content`` knob set, a text block with it precedes the tool calls.
* Faults: the ``503`` fault is Anthropic's ``529 overloaded_error``; ``400_context`` is a 400
  "prompt is too long"; 429 and 529 carry ``retry-after``.
"""

from __future__ import annotations

import itertools
import re
import secrets
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

_ID_PREFIX = secrets.token_hex(4)
_ids = itertools.count(1)

# Top-level request fields the Messages API accepts (plus the simulator's own ``sim`` knobs).
_FIELDS = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature", "top_p",
    "top_k", "tools", "tool_choice", "thinking", "service_tier", "container", "cache_control", "inference_geo",
    "output_config", "speed", "diagnostics", "mcp_servers", "context_management", "sim",
})
_BLOCKS = {
    "user": frozenset({"text", "image", "document", "tool_result", "search_result"}),
    "assistant": frozenset({"text", "tool_use", "thinking", "redacted_thinking", "server_tool_use",
                            "web_search_tool_result"}),
}
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")

# fault kind -> (status, error type, message template)
_FAULT_ERRORS: dict[str, tuple[int, str, str]] = {
    "400": (400, "invalid_request_error", "Simulated invalid request."),
    "400_context": (400, "invalid_request_error", "prompt is too long: 209871 tokens > 200000 maximum"),
    "400_policy": (400, "invalid_request_error", "Output blocked by content filtering policy"),
    "401": (401, "authentication_error", "invalid x-api-key"),
    "404": (404, "not_found_error", "model: {model}"),
    "429": (429, "rate_limit_error", "This request would exceed the rate limit for your organization of 50 "
                                     "requests per minute. Please retry after {retry} seconds."),
    "500": (500, "api_error", "Internal server error"),
    "502": (502, "api_error", "Bad gateway"),
    "503": (529, "overloaded_error", "Overloaded"),
}


# --- errors ---------------------------------------------------------------------------------------


def _new_id(prefix: str) -> str:
    return f"{prefix}{_ID_PREFIX}{next(_ids):016x}"


def error_reply(status: int, err_type: str, message: str, headers: bytes = b"") -> Reply:
    """``{"type": "error", "error": {"type", "message"}, "request_id"}`` plus a ``request-id`` header."""
    request_id = _new_id("req_")
    body = {"type": "error", "error": {"type": err_type, "message": message}, "request_id": request_id}
    return Reply(status, orjson.dumps(body), headers=b"request-id: %s\r\n%s" % (request_id.encode(), headers))


def invalid(message: str) -> Reply:
    return error_reply(400, "invalid_request_error", message)


def knob_error(exc: KnobError) -> Reply:
    return invalid(f"{exc.param}: {exc}")


def fault_error(fault: Fault, model: str) -> Reply:
    status, err_type, template = _FAULT_ERRORS[fault.kind]
    retry = format_seconds(fault.retry_after)
    headers = b"retry-after: %s\r\n" % retry.encode() if status in (429, 529) else b""
    return error_reply(status, err_type, template.format(model=model, retry=retry), headers)


def check_auth(app: SimApp, req: Request) -> Reply | None:
    """The key in ``x-api-key``, or as a Bearer token (what recent ``anthropic`` SDKs send)."""
    key = req.header(b"x-api-key")
    if same_secret(key, app.bearer[len(b"Bearer "):]):
        return None
    bearer = req.header(b"authorization")
    if same_secret(bearer, app.bearer):
        return None
    missing = key is None and bearer is None
    return error_reply(401, "authentication_error", "x-api-key header is required" if missing else "invalid x-api-key")


# --- validation -----------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_block(block: Any, role: str, where: str) -> str | None:
    """Why a content block is invalid, or None."""
    if not isinstance(block, dict):
        return f"{where}: Input should be a valid dictionary"
    kind = block.get("type")
    if kind not in _BLOCKS[role]:
        return f"{where}.type: Input tag '{kind}' found using 'type' is not valid for {role} messages"
    if kind == "text":
        if not isinstance(block.get("text"), str):
            return f"{where}.text: Field required"
        if not block["text"]:
            return "messages: text content blocks must be non-empty"
    elif kind in ("image", "document"):
        source = block.get("source")
        if not isinstance(source, dict):
            return f"{where}.source: Field required"
        if source.get("type") == "base64":
            if not isinstance(source.get("data"), str) or not source["data"]:
                return f"{where}.source.base64.data: Field required"
            if kind == "image" and source.get("media_type") not in _IMAGE_TYPES:
                return (f"{where}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
                        "'image/gif' or 'image/webp'")
        elif source.get("type") == "url":
            url = source.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                return f"{where}.source.url.url: Input should be a valid URL"
        elif kind == "image":
            return f"{where}.source: Input tag '{source.get('type')}' found using 'type' does not match any of " \
                   "the expected tags: 'base64', 'url'"
    elif kind == "tool_use":
        if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
            return f"{where}: tool_use blocks need 'id' and 'name'"
        if not isinstance(block.get("input"), dict):
            return f"{where}.input: Input should be a valid dictionary"
    elif kind == "tool_result":
        if not isinstance(block.get("tool_use_id"), str):
            return f"{where}.tool_use_id: Field required"
        content = block.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") not in ("text", "image", "document",
                                                                          "search_result"):
                    return f"{where}.content.{j}: tool_result content must be text, image or document blocks"
        elif content is not None and not isinstance(content, str):
            return f"{where}.content: Input should be a valid string or list"
    return None


def _turns(messages: Any) -> list[dict[str, Any]] | str:
    """Messages checked and normalised to block lists, consecutive same-role turns combined."""
    if not isinstance(messages, list):
        return "messages: Input should be a valid list"
    if not messages:
        return "messages: at least one message is required"
    turns: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            return f"messages.{i}: Input should be a valid dictionary"
        role = msg.get("role")
        if role not in ("user", "assistant"):
            if role == "system":
                return ('messages: Unexpected role "system". The Messages API accepts a top-level `system` '
                        "parameter, not \"system\" as an input message role.")
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        content = msg.get("content")
        if isinstance(content, str):
            if not content and i != len(messages) - 1:
                return "messages: text content blocks must be non-empty"
            blocks = [{"type": "text", "text": content}] if content else []
        elif isinstance(content, list):
            for j, block in enumerate(content):
                problem = _check_block(block, role, f"messages.{i}.content.{j}")
                if problem:
                    return problem
            blocks = list(content)
        else:
            return f"messages.{i}.content: Field required" if content is None else \
                f"messages.{i}.content: Input should be a valid string or list"
        if not blocks and not (role == "assistant" and i == len(messages) - 1):
            return f"messages.{i}: all messages must have non-empty content except for the optional final " \
                   "assistant message"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks, "index": i})
    for t, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        uses = [b["id"] for b in turn["content"] if b.get("type") == "tool_use"]
        following = turns[t + 1]["content"] if t + 1 < len(turns) else None
        if following is None:
            continue
        answered = {b.get("tool_use_id") for b in following if b.get("type") == "tool_result"}
        missing = [u for u in uses if u not in answered]
        if missing:
            return (f"messages.{turns[t + 1]['index']}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a corresponding "
                    "`tool_result` block in the next message.")
    for t, turn in enumerate(turns):
        if turn["role"] != "user":
            continue
        previous = turns[t - 1]["content"] if t > 0 else []
        used = {b.get("id") for b in previous if b.get("type") == "tool_use"}
        for block in turn["content"]:
            if block.get("type") == "tool_result" and block["tool_use_id"] not in used:
                return (f"messages.{turn['index']}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{block['tool_use_id']}. Each `tool_result` block must have a corresponding `tool_use` "
                        "block in the previous message.")
    return turns


def _system(system: Any) -> list[dict[str, Any]] | str:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"type": "text", "text": system}] if system else []
    if not isinstance(system, list):
        return "system: Input should be a valid string or list"
    for j, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            return f"system.{j}: Input should be a text block"
    return system


def _tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any] | None] | str:
    """(all tools, custom tools, tool_choice) or why they are invalid."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools is None:
        if choice is not None:
            return "tool_choice: tool_choice may only be specified while providing tools"
        return [], [], None
    if not isinstance(tools, list):
        return "tools: Input should be a valid list"
    custom = []
    for j, tool in enumerate(tools):
        if not isinstance(tool, dict):
            return f"tools.{j}: Input should be a valid dictionary"
        if tool.get("type") not in (None, "custom"):
            continue  # a server tool (web search, bash, ...): accepted, never called by the simulator
        if not isinstance(tool.get("name"), str) or not _TOOL_NAME.match(tool["name"]):
            return f"tools.{j}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            return f"tools.{j}.custom.input_schema: Field required"
        if schema.get("type") != "object":
            return f"tools.{j}.custom.input_schema.type: Input should be 'object'"
        custom.append(tool)
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
            return "tool_choice: Input tag found using 'type' does not match any of the expected tags: 'auto', " \
                   "'any', 'tool', 'none'"
        if choice["type"] == "tool" and not any(t["name"] == choice.get("name") for t in custom):
            return f"tool_choice: Tool '{choice.get('name')}' not found in 'tools'"
        if not isinstance(choice.get("disable_parallel_tool_use", False), bool):
            return "tool_choice.disable_parallel_tool_use: Input should be a valid boolean"
    return tools, custom, choice


def _check_params(body: dict[str, Any]) -> str | None:
    for key in body:
        if key not in _FIELDS:
            return f"{key}: Extra inputs are not permitted"
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        return "max_tokens: Field required"
    if not _is_int(max_tokens) or max_tokens < 0:
        return "max_tokens: Input should be a valid integer greater than or equal to 0"
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and (not _is_number(value) or not 0 <= value <= 1):
            return f"{name}: Input should be a number between 0 and 1"
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        return "top_k: Input should be a valid integer greater than or equal to 0"
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        return "stop_sequences: Input should be a valid list of strings"
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or set(metadata) - {"user_id"}:
            return "metadata: only 'user_id' is permitted"
        if metadata.get("user_id") is not None and not isinstance(metadata["user_id"], str):
            return "metadata.user_id: Input should be a valid string"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "stream: Input should be a valid boolean"
    return None


# --- answers --------------------------------------------------------------------------------------


def _pieces(tools: list[dict[str, Any]], system: list[dict[str, Any]], turns: list[dict[str, Any]]
            ) -> list[dict[str, Any]]:
    """What the prompt is made of, in cache-prefix order."""
    pieces = list(tools) + list(system)
    for turn in turns:
        pieces.extend(turn["content"])
    return pieces


def _prompt_usage(app: SimApp, model: str, pieces: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(uncached input tokens, cache-write tokens, cache-read tokens) by the module's token and cache rules."""
    dumped = [canonical_json(p) for p in pieces]
    marks = [i for i, p in enumerate(pieces) if p.get("cache_control")]
    total = approx_tokens(sum(len(d) for d in dumped))
    read, written = app.state.prompt_cache.explicit(model, dumped, marks)
    return total - read - written, written, read


def _chosen_tools(custom: list[dict[str, Any]], choice: dict[str, Any] | None, turns: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    if not custom:
        return []
    kind = (choice or {}).get("type", "auto")
    if kind == "none":
        return []
    if kind == "tool":
        return [t for t in custom if t["name"] == choice["name"]][:1]  # type: ignore[index]
    last = turns[-1]
    if kind == "auto" and last["role"] == "user" and any(b.get("type") == "tool_result" for b in last["content"]):
        return []  # answer the tool results in text, so agent loops terminate
    parallel = not (choice or {}).get("disable_parallel_tool_use", False)
    return custom[:2] if parallel else custom[:1]


def _last_user_text(turns: list[dict[str, Any]]) -> str:
    for turn in reversed(turns):
        if turn["role"] == "user":
            return "".join(b.get("text", "") for b in turn["content"] if b.get("type") == "text")
    return ""


def _text(knobs: Knobs, turns: list[dict[str, Any]], seed: int, max_tokens: int, stops: list[str]
          ) -> tuple[list[str], str, str | None]:
    """(tokens, stop_reason, stop_sequence) of a text answer."""
    if knobs.content is not None:
        tokens = split_tokens(knobs.content)
    elif knobs.echo:
        tokens = split_tokens(_last_user_text(turns))
    else:
        tokens = corpus_tokens(seed, knobs.tokens)
    full = "".join(tokens)
    tokens, finish = limit_tokens(tokens, max_tokens, stops)
    if finish == "length":
        return tokens, "max_tokens", None
    found = [(full.find(s), s) for s in stops if s and s in full]
    if found:
        return tokens, "stop_sequence", min(found)[1]
    return tokens, "end_turn", None


def _build(app: SimApp, body: dict[str, Any], model: str, knobs: Knobs) -> Reply:
    problem = _check_params(body)
    if problem is not None:
        return invalid(problem)
    system = _system(body.get("system"))
    turns = _turns(body.get("messages"))
    tools = _tools(body)
    for checked in (system, turns, tools):
        if isinstance(checked, str):
            return invalid(checked)
    assert not isinstance(system, str) and not isinstance(turns, str) and not isinstance(tools, str)
    all_tools, custom, choice = tools

    seed = content_seed(canonical_json([system, body["messages"]]))
    input_tokens, written, cached = _prompt_usage(app, model, _pieces(all_tools, system, turns))
    blocks: list[dict[str, Any]] = []
    pieces: list[list[str]] = []
    output_tokens = 0
    calls = _chosen_tools(custom, choice, turns)
    if calls:
        if knobs.content:
            words = split_tokens(knobs.content)
            blocks.append({"type": "text", "text": knobs.content})
            pieces.append(group(words, knobs.chunks))
            output_tokens += len(words)
        for k, tool in enumerate(calls):
            args = fake_value(tool["input_schema"], seed + k)
            text = orjson.dumps(args).decode()
            blocks.append({"type": "tool_use", "id": f"toolu_{(seed + k) & ((1 << 96) - 1):024x}",
                           "name": tool["name"], "input": args})
            pieces.append(group(list(text), knobs.chunks))
            output_tokens += approx_tokens(len(tool["name"]) + len(text))
        stop_reason, stop_sequence = "tool_use", None
    else:
        stops = body.get("stop_sequences") or []
        tokens, stop_reason, stop_sequence = _text(knobs, turns, seed, body["max_tokens"], stops)
        blocks.append({"type": "text", "text": "".join(tokens)})
        pieces.append(group(tokens, knobs.chunks))
        output_tokens += len(tokens)
    usage = {"input_tokens": input_tokens, "cache_creation_input_tokens": written, "cache_read_input_tokens": cached,
             "output_tokens": output_tokens}
    message = {"id": _new_id("msg_"), "type": "message", "role": "assistant", "model": model, "content": blocks,
               "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": usage}
    headers = b"request-id: %s\r\n" % _new_id("req_").encode()
    if body.get("stream") is True:
        return _stream(message, pieces, knobs, headers)
    return Reply(200, orjson.dumps(message), headers=headers)


def _event(kind: bytes, obj: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (kind, orjson.dumps(obj))


_PING = _event(b"ping", {"type": "ping"})
_BAD_EVENT = b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": \n\n'


def _stream(message: dict[str, Any], pieces: list[list[str]], knobs: Knobs, headers: bytes) -> Reply:
    """message_start, per block (start, deltas, stop) with a ping after the first start, message_delta, stop."""
    blocks = message["content"]
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": 1}}
    # (event, is_delta): only deltas are paced; the structural events between blocks follow at once.
    middle: list[tuple[bytes, bool]] = []
    for index, (block, parts) in enumerate(zip(blocks, pieces, strict=True)):
        opening: dict[str, Any]
        if block["type"] == "text":
            opening = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in parts]
        else:
            opening = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in parts]
        middle.append((_event(b"content_block_start",
                              {"type": "content_block_start", "index": index, "content_block": opening}), False))
        if index == 0:
            middle.append((_PING, False))
        middle.extend((_event(b"content_block_delta", {"type": "content_block_delta", "index": index,
                                                        "delta": d}), True) for d in deltas)
        middle.append((_event(b"content_block_stop", {"type": "content_block_stop", "index": index}), False))
    head = [_event(b"message_start", {"type": "message_start", "message": start})]
    # The first block's start and the ping go out with message_start, as the real API does.
    head.extend(event for event, _ in middle[:2])
    middle = middle[2:]
    tail = [
        _event(b"message_delta", {"type": "message_delta", "delta": {"stop_reason": message["stop_reason"],
                                                                     "stop_sequence": message["stop_sequence"]},
                                  "usage": {"output_tokens": usage["output_tokens"]}}),
        _event(b"message_stop", {"type": "message_stop"}),
    ]
    n_deltas = sum(1 for _, is_delta in middle if is_delta)
    due = schedule(len(head), n_deltas, len(tail), knobs, usage["output_tokens"])
    events = list(head)
    times = due[: len(head)]
    delta_due = iter(due[len(head): len(head) + n_deltas])
    last = times[-1]
    for event, is_delta in middle:
        if is_delta:
            last = next(delta_due)
        events.append(event)
        times.append(last)
    events.extend(tail)
    times.extend(max(last, t) for t in due[len(head) + n_deltas:])
    return Reply(200, headers=headers, stream=StreamBody(events, times, bad_event=_BAD_EVENT))


# --- route ----------------------------------------------------------------------------------------


def read_object(req: Request) -> dict[str, Any] | Reply:
    """The request's JSON object (recorded for ``/_sim/requests``), or the error reply Anthropic gives without a
    version header, for bad JSON or for JSON that is not an object."""
    if req.header(b"anthropic-version") is None:
        return invalid("anthropic-version: header is required")
    try:
        body = orjson.loads(req.body)
    except orjson.JSONDecodeError:
        return invalid("There was an error parsing the body of your request: invalid JSON")
    if not isinstance(body, dict):
        return invalid("The request body must be a JSON object")
    req.json = body
    return body


def messages(app: SimApp, req: Request) -> Reply:
    body = read_object(req)
    if isinstance(body, Reply):
        return body
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return invalid("model: Field required")
    req.model = model
    if "messages" not in body:
        return invalid("messages: Field required")
    return app.serve_model(req, body, model, _build, _WIRE)


_COUNT_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers"})


def count_tokens(app: SimApp, req: Request) -> Reply:
    """``POST /v1/messages/count_tokens``: the prompt's size by the same token rule ``/v1/messages`` bills."""
    body = read_object(req)
    if isinstance(body, Reply):
        return body
    extra = next((key for key in body if key not in _COUNT_FIELDS), None)
    if extra is not None:
        return invalid(f"{extra}: Extra inputs are not permitted")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return invalid("model: Field required")
    req.model = model
    system, turns, tools = _system(body.get("system")), _turns(body.get("messages")), _tools(body)
    for checked in (system, turns, tools):
        if isinstance(checked, str):
            return invalid(checked)
    assert not isinstance(system, str) and not isinstance(turns, str) and not isinstance(tools, str)
    pieces = _pieces(tools[0], system, turns)
    total = approx_tokens(sum(len(canonical_json(piece)) for piece in pieces))
    return Reply(200, body=orjson.dumps({"input_tokens": total}), content_type=b"application/json")


class _AnthropicWire:
    """Error renderers ``SimApp.serve_model`` needs from a wire format."""

    knob_error = staticmethod(knob_error)
    fault_error = staticmethod(fault_error)


_WIRE = _AnthropicWire()


def register(app: SimApp) -> None:
    app.route("POST", "/v1/messages", messages, check_auth)
    app.route("POST", "/v1/messages/count_tokens", count_tokens, check_auth)
