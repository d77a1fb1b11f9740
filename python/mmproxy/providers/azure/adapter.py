"""Azure OpenAI: the OpenAI wire format at a per-deployment path, with ``api-version`` and ``api-key``."""

from __future__ import annotations

from urllib.parse import quote

from mmproxy.providers.azure import API_VERSION
from mmproxy.providers.openai.adapter import OpenAIProvider


class AzureProvider(OpenAIProvider):
    def endpoint(self, base_path: str, operation: str) -> str:
        # api_base is the resource root (https://NAME.openai.azure.com); the model is the deployment name.
        deployment = quote(self.deployment.upstream_model, safe="")
        return self.resource_target(base_path, f"deployments/{deployment}/{operation}")

    def resource_target(self, base_path: str, path: str) -> str:
        """Request target of ``path`` under the resource's data-plane root, which wants the API version on
        every call."""
        version = quote(self.deployment.api_version or API_VERSION, safe="")
        return f"{base_path}/openai/{path}?api-version={version}"

    def auth_headers(self) -> list[str]:
        key = self.deployment.api_key
        return [f"api-key: {key}"] if key else []
