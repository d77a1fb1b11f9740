"""From predicted quality and estimated cost to one candidate: the one that maximises ``p[i] - λ * cost[i] / unit``.

``unit`` is the strongest (most expensive) candidate's estimated cost on a typical prompt, so λ reads as "quality
one strongest-model call is worth". Maximising quality minus priced cost is the Lagrangian of "least cost at a
quality target", so sweeping λ traces the best cost-quality curve the predictions allow, and a prompt that is
cheap to send to the strong model goes there before an expensive one with the same expected gain.

λ comes from one of:
- ``cost_weight``: λ itself;
- ``strong_share``: the share of calls the most expensive candidate may take (RouteLLM's calibration). The
  strongest wins exactly when λ is below ``min over cheaper i of (p[s] - p[i]) / (cost[s] - cost[i])``, so λ is
  the (1 - share) quantile of that value - over the model's training prompts at first, then over the most
  recent requests, so the share holds as traffic drifts;
- ``min_quality``: no λ; the cheapest candidate whose predicted quality reaches the target (else the best).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RECALIBRATE_EVERY = 64


@dataclass(frozen=True, slots=True)
class Decision:
    index: int  # the chosen candidate (position in the candidates' list)
    weight: float  # λ used (NaN under min_quality)


class RouterPolicy:
    def __init__(self, *, unit_cost: float, cost_weight: float | None = None, strong_share: float | None = None,
                 min_quality: float | None = None, reference: Sequence[float] = (), window: int = 2000) -> None:
        if sum(v is not None for v in (cost_weight, strong_share, min_quality)) != 1:
            raise ValueError("set exactly one of cost_weight, strong_share and min_quality")
        if strong_share is not None and not 0.0 <= strong_share <= 1.0:
            raise ValueError("strong_share must be within [0, 1]")
        self.unit_cost = max(unit_cost, 1e-15)
        self.strong_share = strong_share
        self.min_quality = min_quality
        self._recent: deque[float] = deque(reference[-window:], maxlen=window)
        self._since = 0
        self.weight = float(cost_weight) if cost_weight is not None else self._calibrated()

    def _calibrated(self) -> float:
        if self.strong_share is None or not self._recent:
            return 0.0
        return float(np.quantile(np.fromiter(self._recent, np.float64), 1.0 - self.strong_share))

    def choose(self, quality: np.ndarray, cost: np.ndarray) -> Decision:
        """The candidate for one request, from each candidate's predicted quality and estimated cost (USD)."""
        if self.min_quality is not None:
            order = np.argsort(cost, kind="stable")
            for i in order:
                if quality[i] >= self.min_quality:
                    return Decision(int(i), float("nan"))
            return Decision(int(np.argmax(quality)), float("nan"))
        relative = cost / self.unit_cost
        if self.strong_share is not None:
            self._recent.append(float(break_even(quality[None, :], relative[None, :])[0]))
            self._since += 1
            if self._since >= RECALIBRATE_EVERY:
                self._since = 0
                self.weight = self._calibrated()
        return Decision(int(np.argmax(quality - self.weight * relative)), self.weight)


def break_even(quality: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Per row of (n, C) predictions, the λ below which the most expensive candidate wins: the smallest
    ``(p[s] - p[i]) / (cost[s] - cost[i])`` over the cheaper candidates i (the value strong_share takes
    quantiles of)."""
    strongest = cost.argmax(axis=1)
    rows = np.arange(len(quality))
    gain = quality[rows, strongest][:, None] - quality
    extra = cost[rows, strongest][:, None] - cost
    ratio = np.where(extra > 0, gain / np.where(extra > 0, extra, 1.0), np.inf)
    return ratio.min(axis=1)


def estimate_costs(prompt_tokens: float | np.ndarray, input_prices: np.ndarray, output_prices: np.ndarray,
                   output_tokens: np.ndarray) -> np.ndarray:
    """Each candidate's expected cost of one call before it is made: the prompt's tokens at its input price and
    its expected answer length (``QualityModel.predict``) at its output price."""
    return np.asarray(prompt_tokens)[..., None] * input_prices + output_tokens * output_prices
