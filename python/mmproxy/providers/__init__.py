"""Upstream providers: each module knows one wire format and nothing else."""

from mmproxy.providers.base import Provider
from mmproxy.providers.openai import OpenAIProvider

_PROVIDERS: dict[str, type[Provider]] = {
    "openai": OpenAIProvider,
    "openai_compatible": OpenAIProvider,
}


def provider_for(name: str) -> type[Provider]:
    return _PROVIDERS[name]


__all__ = ["Provider", "provider_for"]
