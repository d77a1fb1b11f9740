"""Azure OpenAI's Batch and Files APIs: OpenAI's, under the resource's ``/openai`` root with ``api-version``.

Facts of the wire format (Azure OpenAI's REST reference, data plane 2024-10-21): ``POST {endpoint}/openai/files``
(multipart, ``purpose=batch``), ``POST {endpoint}/openai/batches``, ``GET {endpoint}/openai/batches/{id}``,
``POST {endpoint}/openai/batches/{id}/cancel`` and ``GET {endpoint}/openai/files/{id}/content``, each with the
``api-version`` query parameter and the ``api-key`` header. The batch endpoint, and each input line's ``url``, is
``/chat/completions``; a line's ``model`` is the name of a Global-Batch deployment.
"""

from __future__ import annotations

from mmproxy.providers.azure.adapter import AzureProvider
from mmproxy.providers.batches import Fetch
from mmproxy.providers.openai.batches import OpenAIBatches


class AzureBatches(OpenAIBatches):
    endpoint = "/chat/completions"

    def __init__(self, provider: AzureProvider, fetch: Fetch) -> None:
        super().__init__(provider, fetch)
        self._azure = provider

    def _target(self, operation: str) -> str:
        return self._azure.resource_target(self._azure.base_path, operation)
