"""Azure OpenAI: the OpenAI wire format at a per-deployment path, with ``api-version`` and ``api-key``."""

from __future__ import annotations

from urllib.parse import quote

from mmproxy.config import AZURE_DEFAULT_API_VERSION
from mmproxy.providers.openai import OpenAIProvider


class AzureProvider(OpenAIProvider):
    def endpoint(self, base_path: str, operation: str) -> str:
        # api_base is the resource root (https://NAME.openai.azure.com); the model is the deployment name.
        deployment = quote(self.deployment.upstream_model, safe="")
        version = quote(self.deployment.api_version or AZURE_DEFAULT_API_VERSION, safe="")
        return f"{base_path}/openai/deployments/{deployment}/{operation}?api-version={version}"

    def auth_headers(self) -> list[str]:
        key = self.deployment.api_key
        return [f"api-key: {key}"] if key else []
