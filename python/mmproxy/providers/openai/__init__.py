"""OpenAI and every server that speaks its wire format: one adapter, one record per LiteLLM prefix.

The records differ only in their defaults (base URL, key variable) and in what the service behind them offers:
the Files and Batch APIs run on OpenAI, Groq and Together AI, and on an ``openai_compatible`` server that is
assumed to offer what OpenAI does.
"""

from mmproxy.providers.registration import Registration

_ADAPTER = "mmproxy.providers.openai.adapter:OpenAIProvider"
_BATCHES = "mmproxy.providers.openai.batches:OpenAIBatches"
_WITH_BATCHES = frozenset({"chat", "embeddings", "batches", "json_output"})
_CHAT_EMBEDDINGS = frozenset({"chat", "embeddings", "json_output"})


def _record(name: str, capabilities: frozenset[str], api_base: str | None, key_env: str | None = None,
            base_env: str | None = None) -> Registration:
    return Registration(name, _ADAPTER, capabilities, api_base, key_env, base_env,
                        batches=_BATCHES if "batches" in capabilities else None)


REGISTRATIONS = (
    _record("openai", _WITH_BATCHES, "https://api.openai.com/v1", "OPENAI_API_KEY", "OPENAI_API_BASE"),
    _record("openai_compatible", _WITH_BATCHES, None),
    _record("hosted_vllm", _CHAT_EMBEDDINGS, None, "HOSTED_VLLM_API_KEY", "HOSTED_VLLM_API_BASE"),
    _record("mistral", _CHAT_EMBEDDINGS, "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    _record("groq", frozenset({"chat", "batches", "json_output"}), "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    _record("deepseek", frozenset({"chat", "json_output"}), "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    _record("together_ai", _WITH_BATCHES, "https://api.together.xyz/v1", "TOGETHERAI_API_KEY"),
    _record("openrouter", frozenset({"chat", "json_output"}), "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
)
