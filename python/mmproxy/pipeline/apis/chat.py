"""OpenAI's chat completions: the gateway's native shape, sent to each provider in its own dialect."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from mmproxy.cache.prompt import PromptCachePlanner
from mmproxy.pipeline.apis import ClientAPI, Inbound
from mmproxy.pipeline.apis.checks import check_chat
from mmproxy.pipeline.forwarding import UsageChunk
from mmproxy.pipeline.sse import error_event
from mmproxy.providers.chunks import wants_usage
from mmproxy.validation import require_model, validate_chat

if TYPE_CHECKING:
    from mmproxy.pipeline.call import Call
    from mmproxy.pipeline.pipeline import Pipeline
    from mmproxy.pipeline.upstreams import Upstream


class ChatCompletions(ClientAPI):
    endpoint = "chat"

    def __init__(self) -> None:
        self._prompt_cache = PromptCachePlanner()

    def parse(self, body: dict[str, Any], raw: bytes) -> Inbound:
        model = require_model(body)
        validate_chat(body)
        completion = body.get("max_completion_tokens") or body.get("max_tokens")
        return Inbound(model, body, raw, stream=body.get("stream") is True, chat=body, chat_bytes=raw,
                       completion=completion if isinstance(completion, int) else None)

    def attempt(self, pipeline: Pipeline, request: web.BaseRequest, call: Call, inbound: Inbound,
                upstream: Upstream, headers: dict[str, str]) -> Awaitable[web.StreamResponse]:
        deployment, provider = upstream.deployment, upstream.provider
        body = dict(inbound.body)  # adapters rewrite and drop fields; a retry starts from the client's request
        body.pop("cache", None)  # the gateway's own control field
        check_chat(deployment, inbound)
        provider.check_params(body)
        if deployment.auto_prompt_cache:  # config keeps it only where the provider has "prompt_caching"
            self._prompt_cache.plan(inbound.raw, body, deployment.upstream_model)
        forwarder = pipeline.forwarder
        redaction = call.redaction
        if inbound.stream:
            translator = provider.chat_stream(body)
            data = provider.chat_request(body, stream_usage=pipeline.stream_usage or call.caller.key is not None)
            on_usage = UsageChunk(call, deployment, wants_usage(inbound.body) or translator is not None)
            if redaction is not None:
                translator = redaction.stream(translator)
            return forwarder.relay_stream(request, call, upstream, data, translator, error_event, headers, on_usage)
        translate = provider.chat_response if redaction is None else redaction.answers(provider.chat_response)
        return forwarder.forward(upstream, provider.chat_request(body), translate, call, headers)
