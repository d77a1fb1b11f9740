"""What ``mmproxy bench`` sends: the target's API dialect, its URL, and the prompts.

A dialect is the few facts the load generator needs to speak and check one API: the endpoint path, the
auth headers, where streamed text and the output token count sit in a reply, and the event that ends a
stream.  Prompts come from a file or are generated at an exact token length (``mmproxy.tokens``), so a
run states its input size instead of guessing it.
"""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from mmproxy import tokens
from mmproxy.bench.loadgen import Request

ANTHROPIC_VERSION = "2023-06-01"
GENERATED_PROMPTS = 64  # distinct generated prompts, so a cache in front of the target cannot answer them all


@dataclass(frozen=True)
class Dialect:
    """One API as the load generator speaks it."""

    path: str  # endpoint under the API root (…/v1)
    content_key: bytes  # JSON key of streamed text
    usage_key: bytes  # JSON key of the output token count (its last value in a reply)
    end_marker: bytes  # a stream is whole once this went by
    key_header: str  # the header carrying the API key ...
    key_prefix: str = ""  # ... after this prefix
    fixed_headers: tuple[tuple[str, str], ...] = ()
    ask_stream_usage: bool = False  # a stream reports its usage only when asked (stream_options.include_usage)
    system_field: bool = False  # system prompts go in a top-level "system", not in the messages

    def headers(self, api_key: str | None) -> tuple[tuple[str, str], ...]:
        key = ((self.key_header, self.key_prefix + api_key),) if api_key else ()
        return (*key, *self.fixed_headers)


DIALECTS = {
    "openai": Dialect("/chat/completions", b'"content"', b'"completion_tokens"', b"[DONE]", "Authorization",
                      key_prefix="Bearer ", ask_stream_usage=True),
    "anthropic": Dialect("/messages", b'"text"', b'"output_tokens"', b"message_stop", "x-api-key",
                         fixed_headers=(("anthropic-version", ANTHROPIC_VERSION),), system_field=True),
}


class WorkloadError(ValueError):
    """A bench setting or prompts file that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Endpoint:
    """Where one target's requests go."""

    host: str
    port: int
    path: str
    tls: ssl.SSLContext | None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}{self.path}"


def endpoint(url: str, api: str) -> Endpoint:
    """The endpoint of ``url``: a full endpoint URL, an API root (``…/v1``) or a bare server (``/v1`` added)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WorkloadError(f"{url!r} is not an http:// or https:// URL")
    path = parts.path.rstrip("/")
    suffix = DIALECTS[api].path
    if not path.endswith(suffix):
        path = (path if path.endswith("/v1") else path + "/v1") + suffix
    tls = ssl.create_default_context() if parts.scheme == "https" else None
    return Endpoint(parts.hostname, parts.port or (443 if tls else 80), path, tls)


def load_prompts(path: Path) -> list[list[dict[str, Any]]]:
    """Chat message lists from a JSONL file: per line a message list, an object with ``messages``, or text.

    A line that is not JSON is a prompt in plain text, so a file of one question per line works as is.
    """
    out: list[list[dict[str, Any]]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"cannot read --prompts {path}: {exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item: Any = orjson.loads(line)
        except orjson.JSONDecodeError:
            item = line
        if isinstance(item, dict):
            item = item.get("messages")
        if isinstance(item, str):
            item = [{"role": "user", "content": item}]
        if not (isinstance(item, list) and item and all(isinstance(m, dict) and "role" in m for m in item)):
            raise WorkloadError(f"--prompts {path}:{number}: expected a list of chat messages, an object with "
                                f"'messages', or a line of text")
        out.append(item)
    if not out:
        raise WorkloadError(f"--prompts {path} holds no prompt")
    return out


def generated_prompts(input_tokens: int, model: str, count: int = GENERATED_PROMPTS) -> list[list[dict[str, Any]]]:
    """``count`` distinct one-message prompts of exactly ``input_tokens`` input tokens each.

    Counted as the gateway counts a chat request (``tokens.count_chat``, message framing included; an
    estimate for models without a public tokenizer), so ``input_tokens`` is what the target is billed.
    """
    rng = random.Random(input_tokens)
    return [[{"role": "user", "content": _prompt_text(f"{i}:", input_tokens, model, rng)}] for i in range(count)]


def _prompt_text(prefix: str, input_tokens: int, model: str, rng: random.Random) -> str:
    """``prefix`` and random common words, grown then trimmed to ``input_tokens`` (or the framing alone)."""
    words = [prefix]

    def size() -> int:
        return tokens.count_chat(_chat_body(model, " ".join(words)), model).count

    while (have := size()) < input_tokens:
        # Three quarters of the gap per step: estimated counts (x1.25) would overshoot a full step.
        words += rng.choices(_WORDS, k=max(1, (input_tokens - have) * 3 // 4))
    while len(words) > 1 and size() > input_tokens:
        words.pop()
    return " ".join(words)


def _chat_body(model: str, text: str) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": text}]})


def build_requests(api: str, target: Endpoint, model: str, api_key: str | None, prompts: list[list[dict[str, Any]]],
                   *, stream: bool, output_tokens: int, simulator: bool) -> list[Request]:
    """One request per prompt; ``simulator`` asks mmproxy's simulator for exactly ``output_tokens`` tokens."""
    dialect = DIALECTS[api]
    headers = dialect.headers(api_key)
    requests = []
    for messages in prompts:
        payload: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": output_tokens,
                                   "stream": stream}
        system = [m.get("content") for m in messages if m.get("role") == "system"]
        if system and dialect.system_field:
            payload["messages"] = [m for m in messages if m.get("role") != "system"]
            payload["system"] = "\n\n".join(c for c in system if isinstance(c, str))
        if stream and dialect.ask_stream_usage:
            payload["stream_options"] = {"include_usage": True}  # the final chunk carries the output tokens
        if simulator:
            payload["sim"] = {"tokens": output_tokens, "chunks": 0}  # one content event per token
        requests.append(Request(orjson.dumps(payload), stream=stream, path=target.path, headers=headers,
                                end_marker=dialect.end_marker, content_key=dialect.content_key,
                                usage_key=dialect.usage_key))
    return requests


_WORDS = (  # common English words: about one token each, so a prompt's length converges in a few steps
    "time person year way day thing man world life hand part child eye woman place work week case point "
    "government company number group problem fact water room mother area money story month lot right study "
    "book job word business issue side kind head house service friend father power hour game line end member "
    "law car city community name president team minute idea kid body information back parent face others level"
).split()
