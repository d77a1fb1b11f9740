"""Upstream providers: one folder per provider, each holding its adapter (a wire format and nothing else),
its batch client and its registration record(s).

``REGISTRY`` gathers the records by LiteLLM prefix; ``adapter`` and ``batches_for`` build a deployment's
adapter and batch client from its record, loading the provider's modules on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmproxy.providers import anthropic, azure, gemini, ollama, openai
from mmproxy.providers.base import Provider
from mmproxy.providers.registration import Registration

if TYPE_CHECKING:
    from mmproxy.config import Deployment
    from mmproxy.providers.batches import Fetch, UpstreamBatches

REGISTRY: dict[str, Registration] = {
    record.name: record
    for package in (openai, azure, anthropic, gemini, ollama)
    for record in package.REGISTRATIONS
}


def registration(name: str) -> Registration:
    """The record of LiteLLM prefix ``name`` (a deployment's ``provider``); KeyError for an unknown one."""
    return REGISTRY[name]


def adapter(deployment: Deployment) -> Provider:
    return REGISTRY[deployment.provider].adapter_class()(deployment)


def batches_for(provider: Provider, fetch: Fetch) -> UpstreamBatches | None:
    """The deployment's batch client sending through ``fetch``, or None when its provider runs no batches."""
    client = REGISTRY[provider.deployment.provider].batch_class()
    return None if client is None else client(provider, fetch)


__all__ = ["REGISTRY", "Provider", "Registration", "adapter", "batches_for", "registration"]
