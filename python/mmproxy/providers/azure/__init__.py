"""Azure OpenAI: the OpenAI wire format under a resource's ``/openai`` root, versioned and keyed per call."""

from mmproxy.providers.registration import Registration

API_VERSION = "2024-10-21"  # the GA data-plane version sent when neither the config nor AZURE_API_VERSION names one

REGISTRATIONS = (
    Registration("azure", "mmproxy.providers.azure.adapter:AzureProvider",
                 frozenset({"chat", "embeddings", "batches", "json_output"}), None, "AZURE_API_KEY", "AZURE_API_BASE",
                 batches="mmproxy.providers.azure.batches:AzureBatches", api_version=API_VERSION,
                 version_env="AZURE_API_VERSION"),
)
