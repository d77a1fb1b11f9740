"""Training from routing records: the router's quality model and a cascade's scorers and thresholds."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mmproxy import tokens
from mmproxy.smart.cascade import CascadePlan, choose_thresholds, fit_scorers, scorer_features
from mmproxy.smart.features import Embedder, answer_matrix, prompt_matrix
from mmproxy.smart.model import QualityModel, TrainingSet
from mmproxy.smart.policy import break_even, estimate_costs
from mmproxy.smart.records import Price, Record, costs, in_first_part

Progress = Callable[[str], None]


def outcome_matrix(records: Sequence[Record], candidates: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(quality, known): per record and candidate, the answer's quality and whether the record has it."""
    quality = np.zeros((len(records), len(candidates)), dtype=np.float32)
    known = np.zeros_like(quality)
    for r, record in enumerate(records):
        for c, name in enumerate(candidates):
            outcome = record.models.get(name)
            if outcome is not None:
                quality[r, c], known[r, c] = outcome.quality, 1.0
    return quality, known


def records_set(records: Sequence[Record], candidates: Sequence[str], embedder: Embedder) -> TrainingSet:
    """The training rows of routing records: embedded prompts, outcomes, answer and prompt lengths."""
    vectors, cheap = prompt_matrix(embedder, [r.prompt for r in records])
    quality, known = outcome_matrix(records, candidates)
    lengths = np.array([[tokens.count(r.models[c].answer or "") if c in r.models else 0 for c in candidates]
                        for r in records], dtype=np.float32).reshape(len(records), len(candidates))
    return TrainingSet(vectors, cheap, quality, known, lengths, np.array([tokens.count(r.prompt) for r in records]))


def train_router(records: Sequence[Record], candidates: Sequence[str], embedder: Embedder,
                 prices: dict[str, Price], *, l2: float = 10.0, k: int = 30,
                 meta: dict[str, object] | None = None) -> QualityModel:
    return fit_router(candidates, records_set(records, candidates, embedder), prices, l2=l2, k=k, meta=meta)


def fit_router(candidates: Sequence[str], data: TrainingSet, prices: dict[str, Price], *, l2: float = 10.0,
               k: int = 30, meta: dict[str, object] | None = None) -> QualityModel:
    """The quality model of ``data``, with what the policy needs at run time: the unit of cost (the strongest
    candidate on the typical, mean, call) and the sample strong_share calibration starts from (the break-even
    weights of the training prompts, each left out of its own neighbours, at ``prices``)."""
    model = QualityModel.fit(candidates, data, l2=l2, k=k, meta=meta)
    predicted, answer_tokens = model.predict(data.vectors, data.cheap, leave_out_same=True)
    price_in = np.array([prices[c].input for c in candidates])
    price_out = np.array([prices[c].output for c in candidates])
    cost = estimate_costs(data.prompt_tokens, price_in, price_out, answer_tokens)
    typical_prompt, typical_answer = float(data.prompt_tokens.mean()), answer_tokens.mean(axis=0)
    model.meta["typical"] = {"prompt_tokens": typical_prompt, "answer_tokens": [float(t) for t in typical_answer]}
    unit = float(estimate_costs(typical_prompt, price_in, price_out, typical_answer).max())
    model.meta["reference"] = [round(float(g), 6) for g in break_even(predicted, cost / unit)]
    model.meta["prices"] = {c: [prices[c].input, prices[c].output] for c in candidates}
    return model


def train_cascade(records: Sequence[Record], stages: Sequence[str], model: QualityModel, embedder: Embedder,
                  prices: dict[str, Price], *, min_quality: float | None = None, max_cost: float | None = None,
                  l2: float = 10.0, meta: dict[str, object] | None = None) -> CascadePlan:
    """Scorers for every stage but the last, and thresholds reaching ``min_quality`` at the least cost (default:
    the last stage's own quality on these records) or the best quality within ``max_cost`` (a share of the last
    stage's cost). Uses the records that hold every stage's answer."""
    usable = [r for r in records if all(s in r.models and r.models[s].answer is not None for s in stages)]
    if not usable:
        raise ValueError("no record holds an answer of every stage")
    rows, targets = stage_rows(usable, stages, model, embedder, seen=True)
    weights, held_out = fit_scorers(rows, targets, [r.id for r in usable], l2,
                                    lambda i: in_first_part(i, 0.5, "fold"))
    quality, _ = outcome_matrix(usable, stages)
    cost = np.array(costs(usable, stages, prices))
    last_quality, last_cost = float(quality[:, -1].mean()), float(cost[:, -1].mean())
    if min_quality is None and max_cost is None:
        min_quality = last_quality
    thresholds, q, c = choose_thresholds(held_out, quality, cost, min_quality=min_quality,
                                         max_cost=None if max_cost is None else max_cost * last_cost)
    info = dict(meta or {}, l2=l2, records=len(usable), fitted_quality=q, fitted_cost_share=c / last_cost,
                last_stage_quality=last_quality)
    return CascadePlan(tuple(stages), weights, [float(t) for t in thresholds], info)


def stage_rows(records: Sequence[Record], stages: Sequence[str], model: QualityModel, embedder: Embedder, *,
               seen: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per non-final stage, the scorer's input rows and the answers' quality. ``seen``: the router model may have
    been trained on these prompts, so each leaves itself out of its neighbours (else its own outcome leaks in)."""
    vectors, cheap = prompt_matrix(embedder, [r.prompt for r in records])
    prior, _ = model.predict(vectors, cheap, leave_out_same=seen)
    rows, targets = [], []
    for stage in stages[:-1]:
        answers, shape = answer_matrix(embedder, [r.models[stage].answer or "" for r in records])
        column = model.candidates.index(stage) if stage in model.candidates else None
        stage_prior = prior[:, column] if column is not None else np.full(len(records), 0.5)
        rows.append(scorer_features(answers, shape, cheap, stage_prior))
        targets.append(np.array([r.models[stage].quality for r in records]))
    return rows, targets
