"""The provider registry: every LiteLLM prefix resolves to its adapter and batch client, capabilities decide."""

from __future__ import annotations

import pytest

from mmproxy.config import parse_config
from mmproxy.providers import REGISTRY, Provider, adapter, batches_for, registration
from mmproxy.providers.batches import UpstreamBatches
from mmproxy.providers.registration import CAPABILITIES, Registration

PREFIXES = ("openai", "openai_compatible", "hosted_vllm", "mistral", "groq", "deepseek", "together_ai",
            "openrouter", "azure", "anthropic", "gemini", "ollama", "ollama_chat")


def _deployment(model: str, **params: object):
    config = parse_config({"model_list": [{"model_name": "m", "litellm_params": {"model": model, **params}}]})
    return config.deployments[0]


def test_every_prefix_resolves_to_an_adapter_and_its_batch_client():
    assert set(REGISTRY) == set(PREFIXES)
    for name in PREFIXES:
        record = registration(name)
        assert record.name == name and record.capabilities <= CAPABILITIES and "chat" in record.capabilities
        assert issubclass(record.adapter_class(), Provider)
        client = record.batch_class()
        assert (client is not None) == ("batches" in record.capabilities)
        assert client is None or issubclass(client, UpstreamBatches)
    with pytest.raises(KeyError):
        registration("bedrock")


def test_capabilities():
    def having(capability: str) -> set[str]:
        return {name for name, record in REGISTRY.items() if capability in record.capabilities}

    assert having("local") == {"ollama", "ollama_chat"}
    assert having("messages_passthrough") == having("prompt_caching") == having("count_tokens") == {"anthropic"}
    assert having("batches") == {"openai", "openai_compatible", "groq", "together_ai", "azure", "anthropic", "gemini"}
    assert "embeddings" not in registration("anthropic").capabilities


def test_a_record_is_checked_when_it_is_declared():
    with pytest.raises(ValueError, match="unknown capabilities"):
        Registration("x", "m:C", frozenset({"chat", "telepathy"}))
    with pytest.raises(ValueError, match="batch class"):
        Registration("x", "m:C", frozenset({"chat", "batches"}))


async def _never(data: bytes) -> tuple[int, bytes, bytes | None]:
    raise AssertionError("nothing is sent")


def test_batches_follow_the_capability_not_the_wire_format():
    azure = adapter(_deployment("azure/gpt-4o-mini", api_base="https://res.openai.azure.com", api_key="k"))
    client = batches_for(azure, _never)
    assert type(client).__name__ == "AzureBatches" and client.provider is azure
    for model in ("deepseek/deepseek-chat", "ollama_chat/llama3.1"):  # OpenAI's wire or not: no batch service
        assert batches_for(adapter(_deployment(model)), _never) is None


def test_defaults_come_from_the_record_and_its_environment_variables(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GROQ_API_KEY", "gsk-env")
    groq = _deployment("groq/llama-3.3-70b-versatile")
    assert (groq.api_base, groq.api_key, groq.local) == ("https://api.groq.com/openai/v1", "gsk-env", False)

    monkeypatch.setenv("OLLAMA_API_BASE", "http://gpu-box:11434/")
    local = _deployment("ollama/llama3.1")
    assert (local.api_base, local.api_key, local.local) == ("http://gpu-box:11434", None, True)

    monkeypatch.setenv("AZURE_API_BASE", "https://res.openai.azure.com")
    monkeypatch.setenv("AZURE_API_KEY", "az-env")
    assert _deployment("azure/gpt-4o").api_version == "2024-10-21"
    monkeypatch.setenv("AZURE_API_VERSION", "2025-01-01-preview")
    azure = _deployment("azure/gpt-4o")
    assert (azure.api_base, azure.api_key, azure.api_version) == (
        "https://res.openai.azure.com", "az-env", "2025-01-01-preview")
    assert _deployment("azure/gpt-4o", api_version="2024-06-01").api_version == "2024-06-01"
    assert _deployment("openai/gpt-4o", api_key="k").api_version is None


def test_auto_prompt_cache_only_where_the_provider_caches_marked_prompts():
    config = parse_config({"model_list": [
        {"model_name": "a", "litellm_params": {"model": "anthropic/claude-sonnet-4-5", "auto_prompt_cache": True}},
        {"model_name": "o", "litellm_params": {"model": "openai/gpt-4o", "auto_prompt_cache": True}},
    ]})
    claude, gpt = config.deployments
    assert claude.auto_prompt_cache and not gpt.auto_prompt_cache
    assert [w for w in config.warnings if "auto_prompt_cache" in w] == [
        "model_list[1].litellm_params.auto_prompt_cache: openai takes no cache_control breakpoints (OpenAI and "
        "Gemini cache prefixes on their own); ignored"]


def test_an_adapter_frames_for_its_deployments_origin():
    provider = adapter(_deployment("openai/gpt-4o", api_base="http://127.0.0.1:8123/v1", api_key="k"))
    head = provider.chat_request({"model": "m", "messages": []}).split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[:3] == [b"POST /v1/chat/completions HTTP/1.1", b"Host: 127.0.0.1:8123", b"User-Agent: mmproxy"]
    assert b"Authorization: Bearer k" in head
    assert adapter(_deployment("gemini/gemini-2.5-pro", api_key="k")).host == "generativelanguage.googleapis.com"
