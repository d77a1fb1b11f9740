"""What a LiteLLM model prefix (``openai/``, ``anthropic/``, ...) stands for: one record per provider.

A record names its adapter and batch classes by import path and loads them on first use, so reading the
registry (the config does, for defaults) imports no adapter, and a deployment list only loads the adapters
it uses. Callers decide by ``capabilities``, never by a provider's name or an adapter's type.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmproxy.providers.base import Provider
    from mmproxy.providers.batches import UpstreamBatches

CAPABILITIES = frozenset({
    "chat",  # OpenAI chat completions, translated to the provider's wire format where it differs
    "embeddings",  # OpenAI embeddings
    "messages_passthrough",  # Anthropic Messages requests go upstream as they are
    "count_tokens",  # the provider counts a Messages request's tokens itself
    "prompt_caching",  # the provider caches prompt prefixes where the request marks them (cache_control)
    "batches",  # the gateway's Batch API runs on the provider's own batch service (``batches`` below)
    "local",  # the model runs inside the operator's trust boundary: data does not leave their machines
    "json_output",  # the provider can be asked for a JSON object answer (OpenAI's response_format: json_object)
})


@dataclass(frozen=True, slots=True)
class Registration:
    name: str  # the LiteLLM model prefix
    adapter: str  # "module:Class" of the Provider subclass
    capabilities: frozenset[str]
    api_base: str | None = None  # None: the config must give api_base (or base_env must be set)
    key_env: str | None = None  # environment variable LiteLLM reads the key from
    base_env: str | None = None  # environment variable LiteLLM reads the base URL from
    batches: str | None = None  # "module:Class" of the UpstreamBatches subclass; set exactly with "batches"
    api_version: str | None = None  # the API version sent when the config names none
    version_env: str | None = None  # environment variable LiteLLM reads the API version from

    def __post_init__(self) -> None:
        unknown = self.capabilities - CAPABILITIES
        if unknown:
            raise ValueError(f"provider {self.name}: unknown capabilities {sorted(unknown)}")
        if ("batches" in self.capabilities) != (self.batches is not None):
            raise ValueError(f"provider {self.name}: the batches capability goes with a batch class")

    def adapter_class(self) -> type[Provider]:
        adapter: type[Provider] = _load(self.adapter)
        return adapter

    def batch_class(self) -> type[UpstreamBatches] | None:
        """The batch client's class, or None when the provider runs no batches the gateway can drive."""
        if "batches" not in self.capabilities or self.batches is None:
            return None
        client: type[UpstreamBatches] = _load(self.batches)
        return client


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(import_module(module), name)
