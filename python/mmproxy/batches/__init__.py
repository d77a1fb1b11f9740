"""OpenAI's Batch API through the gateway: files, upstream batches on an OpenAI-wire deployment, discounted pricing."""
