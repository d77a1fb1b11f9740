"""Google Gemini (Generative Language API): chat, embeddings and batch mode on Gemini's wire format."""

from mmproxy.providers.registration import Registration

REGISTRATIONS = (
    Registration("gemini", "mmproxy.providers.gemini.adapter:GeminiProvider",
                 frozenset({"chat", "embeddings", "batches", "json_output"}), "https://generativelanguage.googleapis.com/v1beta",
                 "GEMINI_API_KEY", batches="mmproxy.providers.gemini.batches:GeminiBatches"),
)
