"""The client APIs the pipeline serves: each says how its body enters the pipeline and how an answer, a stream
and an error leave it in its own shape. Everything between (auth, limits, cache, routing, accounting) is the
pipeline's, the same for all of them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from mmproxy.errors import ProxyError

if TYPE_CHECKING:
    from mmproxy.pipeline.call import Call
    from mmproxy.pipeline.pipeline import Pipeline
    from mmproxy.pipeline.upstreams import Upstream
    from mmproxy.providers.base import StreamTranslator


class Inbound:
    """A client request once parsed and validated: what the pipeline's later steps read."""

    __slots__ = ("_chat_bytes", "body", "chat", "completion", "model", "raw", "stream")

    def __init__(self, model: str, body: dict[str, Any], raw: bytes, *, stream: bool = False,
                 chat: dict[str, Any] | None = None, chat_bytes: bytes | None = None,
                 completion: int | None = None) -> None:
        self.model = model
        self.body = body  # the client's JSON body
        self.raw = raw  # its bytes, as the cache key hashes them
        self.stream = stream
        self.chat = chat  # the request in OpenAI's chat shape (None: not a chat turn)
        self._chat_bytes = chat_bytes
        self.completion = completion  # output tokens the request allows; None: not said

    def redact(self, redact: Callable[[Any], Any]) -> None:
        """Every text of the request passed through ``redact`` (mmproxy.privacy), in the client's body and in its
        chat shape, before any upstream request is made from either."""
        body = self.body
        self.body = redact(body)
        self.chat = self.body if self.chat is body else redact(self.chat)
        self.raw = orjson.dumps(self.body)
        self._chat_bytes = None

    def chat_bytes(self) -> bytes:
        """The chat shape as JSON bytes, which token counts and routing rules read (made once, when needed)."""
        if self._chat_bytes is None:
            self._chat_bytes = b"" if self.chat is None else orjson.dumps(self.chat)
        return self._chat_bytes


class ClientAPI(ABC):
    """One client API: parsing its requests, one attempt on a deployment, its error shape."""

    endpoint: str  # its name in the ledger, the metrics and the cache's ``supported_call_types``
    chat = True  # a chat turn: its tokens are counted and routing rules apply

    @staticmethod
    def render_error(error: ProxyError) -> bytes:
        """An error response body in this API's shape."""
        return error.body()

    @abstractmethod
    def parse(self, body: dict[str, Any], raw: bytes) -> Inbound:
        """Validate the client's body; a malformed request is a 400 naming the field, before anything else."""

    def from_chat(self, inbound: Inbound, completion: bytes) -> bytes:
        """A whole OpenAI chat completion as this API's answer: how a virtual model, whose sub-calls are chat
        completions, answers in the client's shape."""
        return completion

    def chat_stream(self, inbound: Inbound) -> StreamTranslator | None:
        """A translator of OpenAI chat-chunk events into this API's stream events (None: they are its own)."""
        return None

    def cache_payload(self, inbound: Inbound) -> dict[str, Any]:
        """What the cache plans on and the semantic layer reads as the question (with the ``cache`` field)."""
        return inbound.body

    @abstractmethod
    def attempt(self, pipeline: Pipeline, request: web.BaseRequest, call: Call, inbound: Inbound,
                upstream: Upstream, headers: dict[str, str]) -> Awaitable[web.StreamResponse]:
        """One attempt on one deployment: the upstream request made, sent, its answer or stream relayed in this
        API's shape with ``headers``. A failure worth another deployment raises a ``ProxyError`` with a kind.

        An awaitable rather than a coroutine function, so an API may check and build the request, then hand
        back the forwarder's coroutine without a frame of its own (chat completions, the hot path, does)."""


def last_user_text(messages: list[Any]) -> str:
    """The text of the last user message (its text parts joined); empty when there is none."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
            return ""
    return ""
