"""OpenAI's Responses API (``POST /v1/responses``) in front of any chat model.

The request becomes a chat completion request (``to_chat``), the answer a Response object (``from_chat``) or, for a
stream, the Responses API's typed events (``ChatToResponsesStream``), so every provider the gateway speaks serves
it. What a chat completion cannot express is refused with a 400 naming the field, never dropped: server-side
state (``previous_response_id``, ``conversation``, ``background``, stored prompts) and built-in tools (web or
file search, computer use, code interpreter). Facts of the wire format follow OpenAI's API reference: input items
(messages with ``input_text``/``input_image`` parts, ``function_call`` and ``function_call_output``),
``instructions``, ``max_output_tokens``, ``text.format``, ``reasoning.effort``; output items (``message`` with
``output_text`` parts, ``function_call``); usage as ``input_tokens``/``output_tokens``; stream events each with a
``sequence_number``, ending with ``response.completed`` or ``response.incomplete`` (there is no ``[DONE]``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from mmproxy.errors import ProxyError, bad_request
from mmproxy.inbound.chat_stream import ChatChunkTranslator

_UNSUPPORTED = ("previous_response_id", "conversation", "background", "prompt")
_PASSED = ("temperature", "top_p", "parallel_tool_calls", "user", "seed", "service_tier", "top_logprobs")
_ROLES = frozenset({"user", "assistant", "system", "developer"})


def _id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(12).hex()}"


# -- request ----------------------------------------------------------------------------------------
def to_chat(request: dict[str, Any]) -> dict[str, Any]:
    """The chat completion request for a Responses request; ``ProxyError`` 400 naming the field otherwise."""
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string", param="model")
    for name in _UNSUPPORTED:
        if request.get(name) is not None:
            raise bad_request(f"'{name}' needs state kept by the provider; the gateway is stateless: send the "
                              "whole conversation in 'input'", param=name, code="unsupported_parameter")
    messages: list[dict[str, Any]] = []
    instructions = request.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise bad_request("'instructions' must be a string", param="instructions")
        messages.append({"role": "system", "content": instructions})
    messages += _input_messages(request.get("input"))
    chat: dict[str, Any] = {"model": model, "messages": messages}
    limit = request.get("max_output_tokens")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise bad_request("'max_output_tokens' must be a positive integer", param="max_output_tokens")
        chat["max_tokens"] = limit
    for name in _PASSED:
        if request.get(name) is not None:
            chat[name] = request[name]
    if request.get("stream") is True:
        chat["stream"] = True
    tools = request.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise bad_request("'tools' must be a list", param="tools")
        chat["tools"] = [_tool(tool, i) for i, tool in enumerate(tools)]
    choice = request.get("tool_choice")
    if choice is not None:
        chat["tool_choice"] = _tool_choice(choice)
    _text_format(request.get("text"), chat)
    reasoning = request.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
    return chat


def _input_messages(items: Any) -> list[dict[str, Any]]:
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise bad_request("'input' is required: a string or a non-empty list of input items", param="input")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad_request(f"{where} must be an object", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if not isinstance(role, str) or role not in _ROLES:
                raise bad_request(f"{where}.role must be one of {', '.join(sorted(_ROLES))}", param=f"{where}.role")
            messages.append({"role": "system" if role == "developer" else role,
                             "content": _content(item.get("content"), where)})
        elif kind == "function_call":
            call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments") or "{}"
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise bad_request(f"{where} needs a call_id and a name", param=where)
            if not isinstance(arguments, str):
                raise bad_request(f"{where}.arguments must be a string of JSON", param=f"{where}.arguments")
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls") is not None:
                last["tool_calls"].append(call)  # parallel calls of one turn share one assistant message
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            if not isinstance(item.get("call_id"), str):
                raise bad_request(f"{where}.call_id is required", param=f"{where}.call_id")
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": output if isinstance(output, str) else orjson.dumps(output).decode()})
        elif kind == "reasoning":
            continue  # a provider's own reasoning from an earlier turn: chat completions have no place for it
        else:
            raise bad_request(f"{where}.type {kind!r} is not supported through the gateway", param=f"{where}.type")
    return messages


def _content(content: Any, where: str) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or a list of parts", param=f"{where}.content")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise bad_request(f"{where}.content[{j}]: only input_text, output_text and input_image (by URL) parts "
                              "are supported", param=f"{where}.content[{j}]")
    return parts


def _tool(tool: Any, i: int) -> dict[str, Any]:
    where = f"tools[{i}]"
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("name"), str):
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise bad_request(f"{where}: only function tools are supported through the gateway (got {kind!r})",
                          param=where, code="unsupported_parameter")
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise bad_request("'tool_choice' must be auto, none, required or {type: function, name}", param="tool_choice")


def _text_format(text: Any, chat: dict[str, Any]) -> None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return
    if fmt["type"] == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt["type"] == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    else:
        raise bad_request(f"text.format.type {fmt['type']!r} is not supported", param="text.format.type")


# -- response ---------------------------------------------------------------------------------------
def _usage(usage: Any) -> dict[str, Any]:
    usage = usage if isinstance(usage, dict) else {}
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached}, "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": reasoning}, "total_tokens": prompt + completion}


def _shell(request: dict[str, Any], model: str, response_id: str, created: int, status: str) -> dict[str, Any]:
    """The Response object's fields that come from the request."""
    return {
        "id": response_id, "object": "response", "created_at": created, "status": status, "model": model,
        "error": None, "incomplete_details": None, "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"), "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "temperature": request.get("temperature"), "top_p": request.get("top_p"),
        "tool_choice": request.get("tool_choice", "auto"), "tools": request.get("tools") or [],
        "text": request.get("text") or {"format": {"type": "text"}}, "reasoning": request.get("reasoning"),
        "metadata": request.get("metadata") or {}, "store": False, "truncation": "disabled", "usage": None,
        "user": request.get("user"),
    }


def _finish(response: dict[str, Any], finish: str | None) -> None:
    if finish == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish == "content_filter":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "content_filter"}
    else:
        response["status"] = "completed"


def from_chat(completion: bytes, request: dict[str, Any]) -> bytes:
    """A Response object for a chat completion; ``request`` is the client's Responses request."""
    try:
        data = orjson.loads(completion)
        choice = data["choices"][0]
        message = choice["message"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        raise ProxyError(502, "upstream returned a chat completion the gateway cannot read", type="upstream_error",
                         code="upstream_bad_response") from None
    response = _shell(request, request["model"], _id("resp"), int(data.get("created") or time.time()), "completed")
    output = response["output"]
    text = message.get("content")
    if text or not message.get("tool_calls"):
        output.append(_message_item(_id("msg"), text or "", "completed"))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        output.append(_call_item(_id("fc"), call.get("id"), function.get("name"), function.get("arguments") or "",
                                 "completed"))
    _finish(response, choice.get("finish_reason"))
    response["usage"] = _usage(data.get("usage"))
    return orjson.dumps(response)


def _message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _call_item(item_id: str, call_id: Any, name: Any, arguments: str, status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


# -- stream -----------------------------------------------------------------------------------------
class ChatToResponsesStream(ChatChunkTranslator):
    """OpenAI chat chunks in, Responses API events out: ``response.created`` and ``response.in_progress`` first;
    per output item ``output_item.added``, its deltas and its ``.done`` events (a message's text part, or a
    function call's arguments); ``response.completed`` (or ``response.incomplete``) with the whole response and
    its usage once the chat stream reaches ``[DONE]``. An upstream error becomes ``response.failed``."""

    def __init__(self, request: dict[str, Any]) -> None:
        super().__init__()
        self._response = _shell(request, request["model"], _id("resp"), int(time.time()), "in_progress")
        self._sequence = 0
        self._started = False
        self._text: str | None = None  # the open message item's text so far; None when none is open
        self._text_index = -1
        self._calls: dict[Any, int] = {}  # chat tool-call index -> output index
        self._finish: str | None = None

    def _emit(self, out: list[bytes], kind: str, fields: dict[str, Any]) -> None:
        body = orjson.dumps({"type": kind, "sequence_number": self._sequence, **fields})
        self._sequence += 1
        out.append(b"event: " + kind.encode() + b"\ndata: " + body + b"\n\n")

    def _start(self, out: list[bytes]) -> None:
        self._started = True
        self._emit(out, "response.created", {"response": self._response})
        self._emit(out, "response.in_progress", {"response": self._response})

    def _chunk(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        if not self._started:
            self._start(out)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        if not choices:
            return
        choice = choices[0]
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if text:
            if self._text is None:
                self._open_text(out)
            self._text = (self._text or "") + text
            item = self._response["output"][self._text_index]
            self._emit(out, "response.output_text.delta", {"item_id": item["id"], "output_index": self._text_index,
                                                           "content_index": 0, "delta": text, "logprobs": []})
        for call in delta.get("tool_calls") or ():
            self._call_delta(call, out)
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]

    def _open_text(self, out: list[bytes]) -> None:
        item = _message_item(_id("msg"), None, "in_progress")
        self._text_index = len(self._response["output"])
        self._response["output"].append(item)
        self._text = ""
        self._emit(out, "response.output_item.added", {"output_index": self._text_index, "item": item})
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        self._emit(out, "response.content_part.added", {"item_id": item["id"], "output_index": self._text_index,
                                                        "content_index": 0, "part": part})

    def _close_text(self, out: list[bytes]) -> None:
        if self._text is None:
            return
        index, text = self._text_index, self._text
        item = self._response["output"][index]
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        self._emit(out, "response.output_text.done", {"item_id": item["id"], "output_index": index,
                                                      "content_index": 0, "text": text, "logprobs": []})
        self._emit(out, "response.content_part.done", {"item_id": item["id"], "output_index": index,
                                                       "content_index": 0, "part": part})
        item["content"], item["status"] = [part], "completed"
        self._emit(out, "response.output_item.done", {"output_index": index, "item": item})
        self._text = None

    def _call_delta(self, call: dict[str, Any], out: list[bytes]) -> None:
        key = call.get("index", call.get("id"))
        function = call.get("function") or {}
        index = self._calls.get(key)
        if index is None:
            self._close_text(out)
            item = _call_item(_id("fc"), call.get("id"), function.get("name") or "", "", "in_progress")
            index = self._calls[key] = len(self._response["output"])
            self._response["output"].append(item)
            self._emit(out, "response.output_item.added", {"output_index": index, "item": item})
        item = self._response["output"][index]
        arguments = function.get("arguments")
        if arguments:
            item["arguments"] += arguments
            self._emit(out, "response.function_call_arguments.delta", {"item_id": item["id"], "output_index": index,
                                                                      "delta": arguments})

    def _done(self, out: list[bytes]) -> None:
        if not self._started:
            self._start(out)
        self._close_text(out)
        for index in self._calls.values():
            item = self._response["output"][index]
            item["status"] = "completed"
            self._emit(out, "response.function_call_arguments.done", {"item_id": item["id"], "output_index": index,
                                                                     "arguments": item["arguments"]})
            self._emit(out, "response.output_item.done", {"output_index": index, "item": item})
        response = self._response
        _finish(response, self._finish)
        response["usage"] = _usage(self.usage)
        self._emit(out, f"response.{response['status']}", {"response": response})
        self.complete = True

    def _fail(self, out: list[bytes], message: str, kind: str) -> None:
        if not self._started:
            self._start(out)
        response = self._response
        response["status"] = "failed"
        response["error"] = {"code": "server_error" if kind == "api_error" else kind, "message": message}
        self._emit(out, "response.failed", {"response": response})
        self.failed = True

    def failure(self, message: str, code: str) -> bytes:
        """The ``response.failed`` event for a stream the gateway has to end (cut or timed out upstream), numbered
        after the events already sent."""
        out: list[bytes] = []
        self._fail(out, message, code)
        return b"".join(out)
