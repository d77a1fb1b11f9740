"""Anthropic: the Messages API, spoken natively to Anthropic clients and translated for OpenAI ones."""

from mmproxy.providers.registration import Registration

REGISTRATIONS = (
    Registration("anthropic", "mmproxy.providers.anthropic.adapter:AnthropicProvider",
                 frozenset({"chat", "messages_passthrough", "count_tokens", "prompt_caching", "batches"}),
                 "https://api.anthropic.com", "ANTHROPIC_API_KEY",
                 batches="mmproxy.providers.anthropic.batches:AnthropicBatches"),
)
