"""The check a deployment makes of a chat turn before it is sent: the kind of model, its context window."""

from __future__ import annotations

from mmproxy import tokens
from mmproxy.config import Deployment
from mmproxy.errors import ProxyError
from mmproxy.pipeline.apis import Inbound


def check_chat(deployment: Deployment, inbound: Inbound) -> None:
    """A chat turn may go to ``deployment``: it is no embedding model, and the request fits its context window
    when one is configured (else a 400 with kind ``context``, which context-window fallbacks act on)."""
    if deployment.mode == "embedding":
        raise ProxyError(400, f"model {inbound.model!r} is an embedding model; use /v1/embeddings", param="model")
    limit = deployment.max_input_tokens
    if limit is None:
        return
    try:
        counted = tokens.count_chat(inbound.chat_bytes(), deployment.upstream_model)
    except ValueError:
        return  # already validated as JSON; an uncountable shape is left to the upstream
    if counted.count > limit:
        kind = "" if counted.exact else " (estimated)"
        raise ProxyError(
            400,
            f"this request has {counted.count} input tokens{kind}, over the model's context window of {limit}",
            param="messages",
            code="context_length_exceeded",
            kind="context",
        )
