"""Upstream providers: each module knows one wire format and nothing else.

``provider_for`` maps a LiteLLM model prefix to its adapter class; modules are
imported on first use so a deployment list only loads the adapters it needs.
"""

from __future__ import annotations

from importlib import import_module

from mmproxy.providers.base import Provider

_ADAPTERS: dict[str, str] = {
    "openai": "openai:OpenAIProvider",
    "openai_compatible": "openai:OpenAIProvider",
    "hosted_vllm": "openai:OpenAIProvider",
    "mistral": "openai:OpenAIProvider",
    "groq": "openai:OpenAIProvider",
    "deepseek": "openai:OpenAIProvider",
    "together_ai": "openai:OpenAIProvider",
    "openrouter": "openai:OpenAIProvider",
    "azure": "azure:AzureProvider",
    "anthropic": "anthropic:AnthropicProvider",
    "gemini": "gemini:GeminiProvider",
    "ollama_chat": "ollama:OllamaChatProvider",
    "ollama": "ollama:OllamaGenerateProvider",
}


def provider_for(name: str) -> type[Provider]:
    module, _, cls = _ADAPTERS[name].partition(":")
    adapter: type[Provider] = getattr(import_module(f"mmproxy.providers.{module}"), cls)
    return adapter


__all__ = ["Provider", "provider_for"]
