"""OpenAI's Responses API in front of any chat model: translated to a chat completion and back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from mmproxy.inbound import responses as responses_inbound
from mmproxy.pipeline.apis import Inbound
from mmproxy.pipeline.apis.checks import check_chat
from mmproxy.pipeline.apis.via_chat import ViaChat
from mmproxy.providers.base import StreamTranslator
from mmproxy.validation import require_model, validate_chat

if TYPE_CHECKING:
    from collections.abc import Callable

    from mmproxy.pipeline.call import Call
    from mmproxy.pipeline.pipeline import Pipeline
    from mmproxy.pipeline.upstreams import Upstream


class Responses(ViaChat):
    endpoint = "responses"

    def parse(self, body: dict[str, Any], raw: bytes) -> Inbound:
        model = require_model(body)
        chat = responses_inbound.to_chat(body)
        validate_chat(chat)
        completion = chat.get("max_completion_tokens") or chat.get("max_tokens")
        return Inbound(model, body, raw, stream=chat.get("stream") is True, chat=chat,
                       completion=completion if isinstance(completion, int) else None)

    def cache_payload(self, inbound: Inbound) -> dict[str, Any]:
        # The key hashes the client's body; the plan and the semantic question read its chat translation.
        chat = inbound.chat
        assert chat is not None
        return {**chat, "cache": inbound.body["cache"]} if "cache" in inbound.body else chat

    def from_chat(self, inbound: Inbound, completion: bytes) -> bytes:
        return responses_inbound.from_chat(completion, inbound.body)

    def chat_stream(self, inbound: Inbound) -> responses_inbound.ChatToResponsesStream:
        return responses_inbound.ChatToResponsesStream(inbound.body)

    async def attempt(self, pipeline: Pipeline, request: web.BaseRequest, call: Call, inbound: Inbound,
                      upstream: Upstream, headers: dict[str, str]) -> web.StreamResponse:
        check_chat(upstream.deployment, inbound)
        chat = inbound.chat
        assert chat is not None

        def client_stream() -> tuple[StreamTranslator, Callable[[str, str], bytes]]:
            translator = self.chat_stream(inbound)
            return translator, translator.failure

        return await self.via_chat(pipeline, request, call, upstream, dict(chat), headers,
                                   client_stream, lambda completion: self.from_chat(inbound, completion))
