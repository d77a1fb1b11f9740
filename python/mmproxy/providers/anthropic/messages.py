"""OpenAI chat messages and tools as an Anthropic Messages request.

What the mapping bridges: system prompts are a top-level field, tool calls and results are content blocks
(results go in a *user* turn, and a run of parallel results is one turn), images are ``source`` blocks, and roles
must alternate. Blocks already in Anthropic's shape (and Anthropic's own tools) pass as they are.
"""

from __future__ import annotations

from typing import Any

import orjson

from mmproxy.errors import ProxyError

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def _invalid(message: str, param: str) -> ProxyError:
    return ProxyError(400, message, param=param, code="invalid_request")


def to_anthropic_messages(messages: list[dict[str, Any]]) -> tuple[str | list[dict[str, Any]] | None,
                                                                    list[dict[str, Any]]]:
    """OpenAI messages -> (Anthropic ``system``, ``messages``).

    System and developer messages are lifted to ``system``; tool results become ``tool_result``
    blocks in a user turn; consecutive turns of one role are merged so roles alternate.
    """
    system: list[dict[str, Any]] = []
    system_is_text = True
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        role = msg.get("role")
        content = msg.get("content")
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            system_is_text = system_is_text and isinstance(content, str) and "cache_control" not in msg
            blocks = _content_blocks(content, where)
        elif role == "user":
            blocks = _content_blocks(content, where)
        elif role == "assistant":
            blocks = _assistant_blocks(msg, where)
        elif role == "tool":
            role = "user"
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": msg.get("tool_call_id")}
            if content is not None:
                result["content"] = content if isinstance(content, str) else _content_blocks(content, where)
            blocks = [result]
        else:
            raise _invalid(f"{where}: role {role!r} is not supported by Anthropic (use tools/tool messages)",
                           f"{where}.role")
        if not blocks:
            continue
        if "cache_control" in msg:  # LiteLLM's shorthand: the mark applies to the message's last block
            blocks[-1] = {**blocks[-1], "cache_control": msg["cache_control"]}
        if role in ("system", "developer"):
            system.extend(blocks)
        elif out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    for msg in out:  # a lone plain text block is sent in the string shorthand
        blocks = msg["content"]
        if len(blocks) == 1 and blocks[0].keys() == {"type", "text"} and blocks[0]["type"] == "text":
            msg["content"] = blocks[0]["text"]
    if not system:
        return None, out
    if system_is_text:
        return "\n".join(b["text"] for b in system), out
    return system, out


def _content_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]


def _part(part: Any, where: str) -> dict[str, Any]:
    """One OpenAI content part as an Anthropic block; blocks already in Anthropic's shape pass as they are."""
    if not isinstance(part, dict):
        raise _invalid(f"{where} must be an object", where)
    kind = part.get("type")
    if kind == "text":
        block: dict[str, Any] = {"type": "text", "text": part.get("text", "")}
    elif kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            raise _invalid(f"{where}.image_url.url is required", where)
        block = {"type": "image", "source": _source(url, f"{where}.image_url.url", _IMAGE_TYPES)}
    elif kind == "file":
        data = (part.get("file") or {}).get("file_data")
        if not isinstance(data, str):
            raise _invalid(f"{where}: only inline files (file.file_data) can be sent to Anthropic", where)
        block = {"type": "document", "source": _source(data, f"{where}.file.file_data", None)}
    else:
        return part
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _source(url: str, where: str, media_types: frozenset[str] | None) -> dict[str, Any]:
    """A ``data:`` URL becomes a base64 source, an http(s) URL a url source."""
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type:
            raise _invalid(f"{where}: data URLs must be 'data:<media type>;base64,<data>'", where)
        if media_types is not None and media_type not in media_types:
            raise _invalid(f"{where}: image type {media_type!r} is not supported by Anthropic "
                           f"({', '.join(sorted(media_types))})", where)
        return {"type": "base64", "media_type": media_type, "data": data}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise _invalid(f"{where} must be a data: URL or an http(s) URL", where)


def _assistant_blocks(msg: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    thinking = msg.get("thinking_blocks")
    if isinstance(thinking, list):  # must precede the text and tool calls they led to
        blocks.extend(thinking)
    content = msg.get("content")
    if isinstance(content, str):
        if content:  # Anthropic rejects empty text blocks
            blocks.append({"type": "text", "text": content})
    elif content:
        blocks.extend(b for b in _content_blocks(content, where) if b.get("type") != "text" or b.get("text"))
    for j, call in enumerate(msg.get("tool_calls") or ()):
        fn = call.get("function") or {}
        arguments = fn.get("arguments") or "{}"
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            param = f"{where}.tool_calls[{j}].function.arguments"
            raise _invalid(f"{param} must be a JSON object (Anthropic tool input)", param)
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": parsed})
    return blocks


def to_tool(tool: Any, index: int) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise _invalid(f"tools[{index}] must be an object", f"tools[{index}]")
    if tool.get("type") != "function":
        return tool  # an Anthropic tool (web search, bash, ...) given in its own shape
    fn = tool.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise _invalid(f"tools[{index}].function.name is required", f"tools[{index}].function")
    out: dict[str, Any] = {"name": fn["name"]}
    if fn.get("description"):
        out["description"] = fn["description"]
    out["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
    if "cache_control" in tool:
        out["cache_control"] = tool["cache_control"]
    return out


def to_tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
        if isinstance(name, str):
            return {"type": "tool", "name": name}
        if choice.get("type") in ("auto", "any", "tool", "none"):
            return dict(choice)  # already Anthropic's shape
    raise _invalid("tool_choice must be 'auto', 'required', 'none' or {'type': 'function', 'function': "
                   "{'name': ...}}", "tool_choice")
