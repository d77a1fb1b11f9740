"""Checks a deployment makes of a request before it is sent: the kind of model, its context window."""

from __future__ import annotations

from mmproxy import tokens
from mmproxy.config import Deployment
from mmproxy.errors import ProxyError


def check_chat_model(deployment: Deployment, model: str) -> None:
    if deployment.mode == "embedding":
        raise ProxyError(400, f"model {model!r} is an embedding model; use /v1/embeddings", param="model")


def check_context(chat: bytes, deployment: Deployment) -> None:
    """A 400 with kind ``context`` (which context-window fallbacks act on) when the request cannot fit."""
    limit = deployment.max_input_tokens
    assert limit is not None
    try:
        counted = tokens.count_chat(chat, deployment.upstream_model)
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
