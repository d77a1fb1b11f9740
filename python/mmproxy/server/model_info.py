"""LiteLLM's ``GET /model/info``: each deployment's parameters and metadata, as scripts and dashboards read them.

Values come from the config (prices and context windows there always win) and from the shipped registry for what
the config leaves out. Nothing secret is shown: no API key, and no credentials or query string of an ``api_base``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mmproxy.config import Deployment
from mmproxy.registry import defaults_for


def describe(deployment: Deployment) -> dict[str, Any]:
    """One entry of ``data``: ``model_name``, ``litellm_params`` and ``model_info`` under LiteLLM's names."""
    shipped = defaults_for(deployment.upstream_model)
    max_input = deployment.max_input_tokens or (shipped.max_input_tokens if shipped is not None else None)
    max_output = shipped.max_output_tokens if shipped is not None else None
    params: dict[str, Any] = {
        "model": f"{deployment.provider}/{deployment.upstream_model}",
        "api_base": _public(deployment.api_base),
        "api_version": deployment.api_version,
        "timeout": deployment.timeout,
        "stream_timeout": deployment.stream_timeout,
        "rpm": deployment.rpm,
        "tpm": deployment.tpm,
        "weight": deployment.weight,
        "drop_params": deployment.drop_params,
    }
    info = {
        "id": deployment.id,
        "key": deployment.upstream_model,
        "litellm_provider": deployment.provider,
        "mode": deployment.mode,
        "max_tokens": max_output,  # LiteLLM's name for the longest answer
        "max_input_tokens": max_input,
        "max_output_tokens": max_output,
        "input_cost_per_token": deployment.input_cost_per_token,
        "output_cost_per_token": deployment.output_cost_per_token,
        "cache_read_input_token_cost": deployment.cache_read_cost_per_token,
        "cache_creation_input_token_cost": deployment.cache_write_cost_per_token,
        "tier": deployment.tier,
        "strengths": list(deployment.strengths),
        "db_model": False,  # from the config file, not added through an API
    }
    return {"model_name": deployment.model_name,
            "litellm_params": {name: value for name, value in params.items() if value is not None},
            "model_info": info}


def _public(url: str) -> str:
    """``url`` without user, password or query string, which may carry credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
