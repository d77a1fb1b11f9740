"""OpenAI's embeddings API, sent to each embedding deployment in its provider's dialect."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from mmproxy.errors import ProxyError
from mmproxy.pipeline.apis import ClientAPI, Inbound
from mmproxy.validation import require_model, validate_embeddings

if TYPE_CHECKING:
    from mmproxy.pipeline.call import Call
    from mmproxy.pipeline.pipeline import Pipeline
    from mmproxy.pipeline.upstreams import Upstream


class Embeddings(ClientAPI):
    endpoint = "embeddings"
    chat = False

    def parse(self, body: dict[str, Any], raw: bytes) -> Inbound:
        model = require_model(body)
        validate_embeddings(body)
        return Inbound(model, body, raw, completion=0)

    async def attempt(self, pipeline: Pipeline, request: web.BaseRequest, call: Call, inbound: Inbound,
                      upstream: Upstream, headers: dict[str, str]) -> web.StreamResponse:
        if not upstream.deployment.serves_embeddings:
            raise ProxyError(400, f"model {inbound.model!r} is not an embedding model (set model_info.mode: embedding)",
                             param="model")
        provider = upstream.provider
        payload = {k: v for k, v in inbound.body.items() if k != "cache"}  # the gateway's own control field

        def translate(body: bytes) -> tuple[bytes, dict[str, Any] | None]:
            return provider.embeddings_response(body, payload)

        return await pipeline.forwarder.forward(upstream, provider.embeddings_request(dict(payload)), translate, call,
                                                headers)
