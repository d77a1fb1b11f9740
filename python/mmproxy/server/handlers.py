"""The gateway's own endpoints that call no model: health, readiness, the model list, and the 404/405 answers."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from mmproxy import __version__
from mmproxy.errors import ProxyError, error_body
from mmproxy.pipeline.call import Call
from mmproxy.server import model_info, openapi
from mmproxy.server.gateway import Gateway

_JSON = "application/json"


class Handlers:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def health_report(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """Per-deployment health as the router sees it (cooldowns, recent failures)."""
        await self._gateway.pipeline.authorize(request)
        deployments = self._gateway.router.report()
        healthy = sum(1 for d in deployments if d["healthy"])
        body = {"healthy_count": healthy, "unhealthy_count": len(deployments) - healthy, "deployments": deployments}
        return web.Response(body=orjson.dumps(body), content_type=_JSON)

    async def models(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """``GET /v1/models`` (and ``/v1/models/{id}``) in a shape both SDKs read: OpenAI's list fields and
        Anthropic's (``type``, ``display_name``, ``created_at``, paging ids). A key sees the models it may use."""
        caller = await self._gateway.pipeline.authorize(request)
        names = [name for name in self._gateway.model_names() if caller.may_use(name)]
        wanted = request.path.partition("/models/")[2]
        if wanted:
            if wanted not in names:
                raise ProxyError(404, f"model {wanted!r} is not served here (or not to this key)",
                                 code="model_not_found", param="model")
            return web.Response(body=orjson.dumps(_model(wanted)), content_type=_JSON)
        data = [_model(name) for name in names]
        body = {"object": "list", "data": data, "has_more": False,
                "first_id": names[0] if names else None, "last_id": names[-1] if names else None}
        return web.Response(body=orjson.dumps(body), content_type=_JSON)

    async def model_info(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """LiteLLM's ``GET /model/info``: any valid key may ask, and sees the deployments of the models it may use;
        ``litellm_model_id`` picks one deployment."""
        caller = await self._gateway.pipeline.authorize(request)
        wanted = request.query.get("litellm_model_id")
        data = [model_info.describe(deployment) for deployment in self._gateway.config.deployments
                if caller.may_use(deployment.model_name) and (wanted is None or deployment.id == wanted)]
        return web.Response(body=orjson.dumps({"data": data}), content_type=_JSON)

    async def liveliness(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=b'"I\'m alive!"', content_type=_JSON)

    async def readiness(self, request: web.BaseRequest) -> web.StreamResponse:
        gateway = self._gateway
        body = {"status": "healthy", "db": "connected" if gateway.db is not None else "Not connected", "cache": None,
                "mmproxy_version": __version__, "models": len(gateway.router.groups)}
        return web.Response(body=orjson.dumps(body), content_type=_JSON)

    @staticmethod
    async def openapi(request: web.BaseRequest) -> web.StreamResponse:
        """The OpenAPI document of every route, public as the health checks are: it holds no configuration."""
        return web.Response(body=openapi.BODY, content_type=_JSON)

    @staticmethod
    async def not_found(request: web.BaseRequest) -> web.StreamResponse:
        body = error_body(f"no route for {request.method} {request.path}", "invalid_request_error", "not_found")
        return web.Response(status=404, body=body, content_type=_JSON)

    @staticmethod
    async def method_not_allowed(request: web.BaseRequest) -> web.StreamResponse:
        body = error_body(f"method {request.method} is not allowed on {request.path}",
                          "invalid_request_error", "method_not_allowed")
        return web.Response(status=405, body=body, content_type=_JSON)


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "mmproxy", "type": "model",
            "display_name": name, "created_at": "1970-01-01T00:00:00Z"}
