"""What the client APIs that are not chat completions share: an attempt answered by a chat completion and
translated into the client's shape, whole or as a stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from mmproxy.pipeline.apis import ClientAPI
from mmproxy.providers.base import ChainedTranslator, StreamTranslator

if TYPE_CHECKING:
    from mmproxy.pipeline.call import Call
    from mmproxy.pipeline.pipeline import Pipeline
    from mmproxy.pipeline.upstreams import Upstream

# A stream translator from OpenAI chat chunks into the client's events, and its error event maker.
ClientStream = Callable[[], tuple[StreamTranslator, Callable[[str, str], bytes]]]


class ViaChat(ClientAPI):
    @staticmethod
    async def via_chat(pipeline: Pipeline, request: web.BaseRequest, call: Call, upstream: Upstream,
                       payload: dict[str, Any], headers: dict[str, str], client_stream: ClientStream,
                       client_answer: Callable[[bytes], bytes]) -> web.StreamResponse:
        """One attempt answered by a chat completion: ``client_stream`` makes the translator of a chat stream
        (and its error event), ``client_answer`` translates a whole chat completion."""
        provider = upstream.provider
        provider.check_params(payload)
        forwarder = pipeline.forwarder
        redaction = call.redaction
        if payload.get("stream") is True:
            inner = provider.chat_stream(payload)
            if redaction is not None:  # restored in the chat chunks, before they take the client's shape
                inner = redaction.stream(inner)
            outer, stream_error = client_stream()
            translator = outer if inner is None else ChainedTranslator(inner, outer)
            return await forwarder.relay_stream(request, call, upstream, provider.chat_request(payload),
                                                translator, stream_error, headers)

        def translate(upstream_body: bytes) -> tuple[bytes, dict[str, Any] | None]:
            completion, usage = provider.chat_response(upstream_body)
            return client_answer(completion), usage

        return await forwarder.forward(upstream, provider.chat_request(payload),
                                       translate if redaction is None else redaction.answers(translate), call, headers)
