"""Anthropic's Messages API in front of any model: passed through to a provider that speaks it, translated
to a chat completion and back for the others."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from mmproxy.errors import ProxyError
from mmproxy.inbound import anthropic as anthropic_inbound
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


class Messages(ViaChat):
    endpoint = "messages"

    @staticmethod
    def render_error(error: ProxyError) -> bytes:
        return anthropic_inbound.anthropic_error(error)

    def parse(self, body: dict[str, Any], raw: bytes) -> Inbound:
        model = require_model(body)
        chat = anthropic_inbound.to_openai(body)  # translating validates: a 400 naming the Messages field
        validate_chat(chat)
        max_tokens = body.get("max_tokens")
        return Inbound(model, body, raw, stream=body.get("stream") is True, chat=chat,
                       completion=max_tokens if isinstance(max_tokens, int) else None)

    def from_chat(self, inbound: Inbound, completion: bytes) -> bytes:
        return anthropic_inbound.from_openai(completion, inbound.model)

    def chat_stream(self, inbound: Inbound) -> StreamTranslator:
        return anthropic_inbound.OpenAIToAnthropicStream(inbound.model)

    async def attempt(self, pipeline: Pipeline, request: web.BaseRequest, call: Call, inbound: Inbound,
                      upstream: Upstream, headers: dict[str, str]) -> web.StreamResponse:
        deployment, provider = upstream.deployment, upstream.provider
        check_chat(deployment, inbound)
        body = {k: v for k, v in inbound.body.items() if k != "cache"}  # the gateway's own control field
        # A redacted request goes via OpenAI's shape, where its answer's placeholders are restored.
        passthrough = provider.messages_request(body) if call.redaction is None else None
        forwarder = pipeline.forwarder
        if passthrough is not None:  # the upstream speaks Messages itself: no detour via OpenAI's shape
            if inbound.stream:
                return await forwarder.relay_stream(request, call, upstream, passthrough, provider.messages_stream(),
                                                    _stream_error, headers)
            return await forwarder.forward(upstream, passthrough, provider.messages_response, call, headers)

        def client_stream() -> tuple[StreamTranslator, Callable[[str, str], bytes]]:
            return self.chat_stream(inbound), _stream_error

        assert inbound.chat is not None
        payload = {k: v for k, v in inbound.chat.items() if k != "cache"}
        return await self.via_chat(pipeline, request, call, upstream, payload, headers,
                                   client_stream, lambda completion: self.from_chat(inbound, completion))


def _stream_error(message: str, code: str) -> bytes:
    return anthropic_inbound.stream_error(message, "timeout_error" if code == "upstream_timeout" else "api_error")
