"""The price of a request from its token usage and the deployment's prices."""

from __future__ import annotations

from typing import Any

from mmproxy.config import Deployment


def usage_cost(deployment: Deployment, usage: Any) -> float | None:
    """USD cost of ``usage`` (OpenAI shape), or None when prices or usage are unknown."""
    if not isinstance(usage, dict):
        return None
    in_price = deployment.input_cost_per_token
    out_price = deployment.output_cost_per_token
    if in_price is None and out_price is None:
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens") or 0
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return prompt * (in_price or 0.0) + completion * (out_price or 0.0)


def format_usd(cost: float) -> str:
    """Plain decimal notation: header consumers should not have to parse exponents."""
    text = f"{cost:.12f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
