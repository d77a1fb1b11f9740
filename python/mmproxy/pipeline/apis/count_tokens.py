"""Anthropic's ``count_tokens`` (which Claude Code calls before each turn): the upstream's own count when the
deployment's provider offers one, else the gateway's — exact for OpenAI's encodings, an estimate otherwise
(``x-mmproxy-token-count`` says which). Routed like any call, but not against rpm/tpm limits, and not
accounted: it costs nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from mmproxy import tokens
from mmproxy.errors import ProxyError
from mmproxy.inbound import anthropic as anthropic_inbound
from mmproxy.upstream import fetch_whole
from mmproxy.validation import require_model

if TYPE_CHECKING:
    from mmproxy.pipeline.call import Call
    from mmproxy.pipeline.pipeline import Pipeline
    from mmproxy.pipeline.upstreams import Upstream

_JSON = "application/json"


class CountTokens:
    @staticmethod
    def render_error(error: ProxyError) -> bytes:
        return anthropic_inbound.anthropic_error(error)

    async def serve(self, pipeline: Pipeline, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        await pipeline.authorize(request, call)
        body, _ = await pipeline.read_json(request)
        model = require_model(body)
        # Translating validates the request; max_tokens is required there but plays no part in a count.
        chat = orjson.dumps(anthropic_inbound.to_openai({**body, "max_tokens": 1}))

        async def attempt(upstream: Upstream) -> web.StreamResponse:
            deployment, provider = upstream.deployment, upstream.provider
            data = provider.count_tokens_request(dict(body))
            if data is not None:
                status, answer, retry_after = await fetch_whole(upstream.transport, data, deployment.timeout,
                                                                deployment.id)
                if status >= 300:
                    raise provider.error(status, answer, retry_after)
                return web.Response(body=answer, content_type=_JSON, headers={"x-mmproxy-token-count": "upstream"})
            counted = tokens.count_chat(chat, deployment.upstream_model)
            return web.Response(body=orjson.dumps({"input_tokens": counted.count}), content_type=_JSON,
                                headers={"x-mmproxy-token-count": "exact" if counted.exact else "estimate"})

        return await pipeline.route(call, model, attempt, limited=False)
