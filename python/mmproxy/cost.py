"""The price of a request from its token usage and the deployment's prices.

Usage arrives in OpenAI's shape from every adapter: ``prompt_tokens`` includes the tokens read from the
provider's prompt cache (``prompt_tokens_details.cached_tokens``) and, for Anthropic, those written to it
(``cache_creation_input_tokens``). Each kind has its own price; an unknown cache price falls back to the
input price, so a missing figure never makes tokens free.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from mmproxy.config import Deployment
from mmproxy.spend.record import RequestRecord


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_tokens(usage: dict[str, Any]) -> tuple[int, int, int, int]:
    """(prompt, completion, cached read, cache write) from an OpenAI-shaped usage object."""
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    cached = cached or _int(usage.get("cache_read_input_tokens"))
    return (_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")), cached,
            _int(usage.get("cache_creation_input_tokens")))


def price(deployment: Deployment, prompt: int, completion: int, cached: int = 0,
          cache_write: int = 0) -> tuple[float, float] | None:
    """(cost, saved by prompt-cache reads) in USD, or None when the deployment has no prices."""
    in_price = deployment.input_cost_per_token
    out_price = deployment.output_cost_per_token
    if in_price is None and out_price is None:
        return None
    in_price = in_price or 0.0
    read_price = deployment.cache_read_cost_per_token
    read_price = in_price if read_price is None else read_price
    write_price = deployment.cache_write_cost_per_token
    write_price = in_price if write_price is None else write_price
    fresh = max(prompt - cached - cache_write, 0)
    cost = fresh * in_price + cached * read_price + cache_write * write_price + completion * (out_price or 0.0)
    # Rounded to a millionth of a micro-dollar: 90 tokens at $2.5/M is 0.000225, not 0.00022500000000000002, in
    # every header, JSON field and ledger row.
    return round(cost, _DIGITS), round(cached * (in_price - read_price), _DIGITS)


_DIGITS = 12


def charge(record: RequestRecord, deployment: Deployment, usage: dict[str, Any] | None,
           estimated: Callable[[], tuple[int, int]] | None = None) -> float | None:
    """Add one upstream answer's tokens and cost to ``record``; the cost, or None when unpriced.

    Without usage from the provider, ``estimated`` gives (prompt, completion) tokens by the gateway's own
    count, so a request is never recorded as free just because the upstream said nothing.
    """
    if usage is not None:
        prompt, completion, cached, written = usage_tokens(usage)
    elif estimated is not None:
        (prompt, completion), cached, written = estimated(), 0, 0
    else:
        prompt = completion = cached = written = 0
    record.prompt_tokens += prompt
    record.completion_tokens += completion
    record.cached_tokens += cached
    record.cache_write_tokens += written
    priced = price(deployment, prompt, completion, cached, written)
    if priced is None:
        return None
    cost, saved = priced
    record.cost_usd += cost
    record.saved_usd += saved
    return cost


def format_usd(cost: float) -> str:
    """Plain decimal notation: header consumers should not have to parse exponents."""
    text = f"{cost:.12f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


DEFAULT_COMPLETION_ESTIMATE = 1024
"""Completion tokens assumed for a budget reservation when the request sets no ``max_tokens`` and the model group
has answered nothing yet."""


class CompletionLengths:
    """How long each model group's answers run: a running mean of completion tokens (recent answers weigh more).

    Why: a budget reserves each request's cost before the call, so concurrent requests cannot overspend. Reserving
    a request without ``max_tokens`` at ``DEFAULT_COMPLETION_ESTIMATE`` tokens left most of a small budget unused
    (room for 5 answers of ~400 tokens, 100 at once: 2 admitted). Reserving what the group's answers really take,
    with a margin, admits about as many as the budget pays for; an answer longer than reserved overspends by its
    excess at most, and only while other requests are in flight."""

    MARGIN = 1.25
    WEIGHT = 0.05  # of the newest answer in the mean: about the last 20 count

    def __init__(self) -> None:
        self._mean: dict[str, float] = {}

    def observe(self, group: str, tokens: int) -> None:
        mean = self._mean.get(group)
        self._mean[group] = float(tokens) if mean is None else mean + self.WEIGHT * (tokens - mean)

    def expected(self, group: str, limit: int | None) -> int | None:
        """Completion tokens to reserve for a request to ``group`` that allows ``limit`` (None: no limit set);
        None when nothing is known (``estimate`` then assumes its default)."""
        mean = self._mean.get(group)
        if mean is None:
            return limit
        typical = math.ceil(mean * self.MARGIN)
        return typical if limit is None else min(limit, typical)


def estimate(deployments: Iterable[Deployment], prompt: int, completion: int | None) -> float:
    """The most this request could cost on any of ``deployments``: what a budget reserves before the call.

    ``completion``: the output tokens the request allows (None: ``DEFAULT_COMPLETION_ESTIMATE``).
    """
    if completion is None:
        completion = DEFAULT_COMPLETION_ESTIMATE
    most = 0.0
    for deployment in deployments:
        priced = price(deployment, prompt, completion)
        if priced is not None and priced[0] > most:
            most = priced[0]
    return most
