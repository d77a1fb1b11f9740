"""A FrugalGPT cascade: ask the cheapest stage first and accept its answer when a scorer trusts it, else escalate.

The learned scorer estimates P(answer is good | prompt, answer) from the answer's embedding and shape features
(``features.answer_features``), the prompt's cheap features, and the router's prediction for that stage's model
(how likely that model was to get this prompt right before seeing its answer). FrugalGPT trains DistilBERT on
(query, answer); this is the same idea on the gateway's local embedding.

Thresholds are fitted on out-of-fold scores (two folds by prompt id) so that the threshold is not chosen on
scores the scorer was trained on.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmproxy.smart import files
from mmproxy.smart.model import fit_logistic, sigmoid

FORMAT = "mmproxy-cascade/1"


def scorer_features(answer_vectors: np.ndarray, shape: np.ndarray, cheap: np.ndarray,
                    prior: np.ndarray) -> np.ndarray:
    """The learned scorer's input rows: answer embedding, answer shape, prompt features, the router's prior."""
    return np.hstack([answer_vectors, shape, cheap, prior.reshape(-1, 1)]).astype(np.float32)


@dataclass(slots=True)
class CascadePlan:
    """The stages (model names, cheapest first), the learned scorer of every stage but the last, and the
    threshold each stage's score must reach to be accepted."""

    stages: tuple[str, ...]
    weights: list[np.ndarray]  # per non-final stage: (d + 1,) scorer weights
    thresholds: list[float]  # per non-final stage
    meta: dict[str, object]

    def score(self, stage: int, rows: np.ndarray) -> np.ndarray:
        w = self.weights[stage]
        return sigmoid(rows @ w[:-1] + w[-1])

    def save(self, path: str | Path) -> None:
        files.write(path, FORMAT, {"stages": list(self.stages), "thresholds": self.thresholds, "meta": self.meta},
                    {f"w{i}": w.astype(np.float32) for i, w in enumerate(self.weights)})

    @classmethod
    def load(cls, path: str | Path) -> CascadePlan:
        header, data = files.read(path, FORMAT)
        try:
            stages = tuple(header["stages"])
            weights = [data[f"w{i}"].astype(np.float64) for i in range(len(stages) - 1)]
            return cls(stages, weights, [float(t) for t in header["thresholds"]], header["meta"])
        except (KeyError, TypeError, ValueError) as exc:
            raise files.ModelFileError(f"{path}: cannot read the cascade ({exc})") from None

def walk(scores: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Per row, the stage that answers: the first non-final stage whose score reaches its threshold, else the
    last. ``scores``: (n, stages - 1)."""
    n, inner = scores.shape
    answered = np.full(n, inner, dtype=np.int64)
    for stage in range(inner - 1, -1, -1):
        answered = np.where(scores[:, stage] >= thresholds[stage], stage, answered)
    return answered


def outcome(answered: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> tuple[float, float]:
    """(mean quality, mean cost) when each row is answered by ``answered``; a row pays every stage up to it."""
    rows = np.arange(len(answered))
    paid = np.cumsum(cost, axis=1)[rows, answered]
    return float(quality[rows, answered].mean()), float(paid.mean())


def choose_thresholds(scores: np.ndarray, quality: np.ndarray, cost: np.ndarray, *,
                      min_quality: float | None = None, max_cost: float | None = None,
                      grid: int = 41) -> tuple[list[float], float, float]:
    """Thresholds that reach ``min_quality`` at the least cost, or the best quality within ``max_cost`` (both
    per query), searched over a grid of the scores' quantiles. Returns (thresholds, quality, cost)."""
    if (min_quality is None) == (max_cost is None):
        raise ValueError("give exactly one of min_quality and max_cost")
    inner = scores.shape[1]
    candidates = [[*np.unique(np.quantile(scores[:, s], np.linspace(0, 1, grid))).tolist(), np.inf]
                  for s in range(inner)]
    best: tuple[float, float, list[float]] | None = None
    for combo in itertools.product(*candidates):
        q, c = outcome(walk(scores, combo), quality, cost)
        if min_quality is not None:
            ok, key = q >= min_quality - 1e-12, (c, -q)
        else:
            assert max_cost is not None
            ok, key = c <= max_cost + 1e-12, (-q, c)
        if ok and (best is None or key < best[:2]):
            best = (key[0], key[1], [float(t) for t in combo])
    if best is None:  # unreachable target: always escalate to the last stage
        always = [float(np.inf)] * inner
        q, c = outcome(walk(scores, always), quality, cost)
        return always, q, c
    thresholds = best[2]
    q, c = outcome(walk(scores, thresholds), quality, cost)
    return thresholds, q, c


def fit_scorers(rows: list[np.ndarray], targets: list[np.ndarray], ids: Sequence[str], l2: float,
                fold_of: Callable[[str], bool]) -> tuple[list[np.ndarray], np.ndarray]:
    """Per non-final stage: the scorer's weights on all rows, and out-of-fold scores (n, stages - 1) from two
    folds split by prompt id, for choosing thresholds on scores the scorer did not train on."""
    folds = np.array([fold_of(i) for i in ids])
    weights, held_out = [], np.zeros((len(ids), len(rows)))
    for stage, (x, y) in enumerate(zip(rows, targets, strict=True)):
        weights.append(fit_logistic(x, y, l2))
        for side in (True, False):
            w = fit_logistic(x[folds == side], y[folds == side], l2)
            held_out[folds != side, stage] = sigmoid(x[folds != side] @ w[:-1] + w[-1])
    return weights, held_out
