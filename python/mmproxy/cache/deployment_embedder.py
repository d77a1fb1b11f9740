"""Embeddings for the semantic cache from an embedding deployment of the registry, instead of the local model.

The call goes straight to one healthy deployment of the group through the gateway's own provider adapter
and connection pool (any wire format: OpenAI, Gemini, Ollama, ...); it is not a client request, so it has
no retries, no ledger row and no budget. A failure is the caller's cache miss, never the request's error.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import orjson

from mmproxy.errors import ProxyError
from mmproxy.health import Health
from mmproxy.router import STRATEGIES, Router
from mmproxy.upstream.http1 import UpstreamPool
from mmproxy.usage import Usage


class DeploymentEmbedder:
    def __init__(self, router: Router, health: Health, usage: Usage, model: str,
                 pool_for: Callable[[str], UpstreamPool]) -> None:
        self._router = router
        self._health = health
        self._usage = usage
        self._model = model
        self._pool_for = pool_for

    async def embed_one(self, text: str) -> np.ndarray:
        group = self._router.group(self._model)
        provider = group.pick(self._health, self._usage, STRATEGIES["simple-shuffle"], 0) if group else None
        if provider is None:
            raise ProxyError(503, f"no healthy deployment of {self._model!r} to embed with", kind="overloaded")
        payload = {"model": self._model, "input": [text]}
        pool = self._pool_for(provider.deployment.id)
        exchange = await pool.fetch(provider.embeddings_request(dict(payload)), provider.deployment.timeout)
        status, body, retry_after = exchange.status, exchange.body(), exchange.header(b"retry-after")
        exchange.release()
        if status >= 300:
            raise provider.error(status, body, retry_after)
        answer, _ = provider.embeddings_response(body, payload)
        vector = np.asarray(orjson.loads(answer)["data"][0]["embedding"], dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector
