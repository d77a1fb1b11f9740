"""Ollama: models the operator runs themselves, through ``/api/chat`` (``ollama_chat/``) or ``/api/generate``."""

from mmproxy.providers.registration import Registration

_LOCAL = frozenset({"chat", "embeddings", "local", "json_output"})

REGISTRATIONS = (
    Registration("ollama_chat", "mmproxy.providers.ollama.adapter:OllamaChatProvider", _LOCAL,
                 "http://localhost:11434", None, "OLLAMA_API_BASE"),
    Registration("ollama", "mmproxy.providers.ollama.adapter:OllamaGenerateProvider", _LOCAL,
                 "http://localhost:11434", None, "OLLAMA_API_BASE"),
)
