"""The learned router at run time: the quality model's predictions for some of its candidates, priced with the
deployments' prices, and the policy's choice. ``mmproxy router eval`` and the gateway both decide through it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmproxy.smart.model import QualityModel
from mmproxy.smart.policy import Decision, RouterPolicy, estimate_costs


@dataclass(frozen=True, slots=True)
class Routed:
    decision: Decision
    quality: np.ndarray  # (C,) predicted P(good answer) per candidate
    cost: np.ndarray  # (C,) estimated USD per candidate


class LearnedRouter:
    """Routes between ``columns`` of ``model`` (its candidates, in the caller's order) priced at ``input_prices``
    and ``output_prices`` (USD per token, same order)."""

    def __init__(self, model: QualityModel, columns: Sequence[int], input_prices: np.ndarray,
                 output_prices: np.ndarray, *, cost_weight: float | None = None, strong_share: float | None = None,
                 min_quality: float | None = None, window: int = 2000) -> None:
        self.model = model
        self.columns = np.asarray(columns)
        self.input_prices = np.asarray(input_prices, dtype=np.float64)
        self.output_prices = np.asarray(output_prices, dtype=np.float64)
        typical = model.meta.get("typical")
        if isinstance(typical, dict):
            answer = np.asarray(typical["answer_tokens"], dtype=np.float64)[self.columns]
            unit = float(estimate_costs(float(typical["prompt_tokens"]), self.input_prices, self.output_prices,
                                        answer).max())
        else:
            unit = float((self.input_prices + self.output_prices).max())
        reference = model.meta.get("reference")
        # The stored calibration sample holds for the whole candidate list (in any order) only; a subset starts
        # from λ's first estimate on live traffic instead.
        same = sorted(self.columns.tolist()) == list(range(len(model.candidates)))
        self.policy = RouterPolicy(unit_cost=unit, cost_weight=cost_weight, strong_share=strong_share,
                                   min_quality=min_quality, window=window,
                                   reference=[float(r) for r in reference] if same and isinstance(reference, list)
                                   else ())

    def predict(self, vectors: np.ndarray, cheap: np.ndarray,
                prompt_tokens: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """(quality, estimated cost), each (n, C) over this router's candidates."""
        quality, answer_tokens = self.model.predict(vectors, cheap)
        quality, answer_tokens = quality[:, self.columns], answer_tokens[:, self.columns]
        return quality, estimate_costs(prompt_tokens, self.input_prices, self.output_prices, answer_tokens)

    def route(self, vector: np.ndarray, cheap: np.ndarray, prompt_tokens: int) -> Routed:
        quality, cost = self.predict(vector[None, :], cheap[None, :], prompt_tokens)
        return Routed(self.policy.choose(quality[0], cost[0]), quality[0], cost[0])
