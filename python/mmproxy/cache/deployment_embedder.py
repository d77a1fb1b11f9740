"""Embeddings for the semantic cache from an embedding deployment of the registry, instead of the local model.

The call is routed like any other (strategy, health, retries, fallbacks) and made through the deployment's own
provider adapter and transport (any wire format: OpenAI, Gemini, Ollama, ...). It is not a client request, so it
has no ledger row and no budget; a failure is the caller's cache miss, never the request's error.
"""

from __future__ import annotations

import numpy as np
import orjson

from mmproxy.config import Deployment
from mmproxy.pipeline.upstreams import Upstreams
from mmproxy.router import Router, Trace
from mmproxy.upstream import fetch_whole


class DeploymentEmbedder:
    def __init__(self, router: Router, upstreams: Upstreams, model: str) -> None:
        self._router = router
        self._upstreams = upstreams
        self._model = model

    async def embed_one(self, text: str) -> np.ndarray:
        return await self._router.run(self._model, lambda deployment: self._embed(deployment, text), Trace())

    async def _embed(self, deployment: Deployment, text: str) -> np.ndarray:
        provider, transport = self._upstreams[deployment.id][1:]
        payload = {"model": self._model, "input": [text]}
        status, body, retry_after = await fetch_whole(transport, provider.embeddings_request(dict(payload)),
                                                      deployment.timeout, deployment.id)
        if status >= 300:
            raise provider.error(status, body, retry_after)
        answer, _ = provider.embeddings_response(body, payload)
        vector = np.asarray(orjson.loads(answer)["data"][0]["embedding"], dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector
