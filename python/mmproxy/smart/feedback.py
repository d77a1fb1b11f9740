"""Learning from the gateway's own traffic: a learned router with ``learn: true`` keeps, in each routed request's
ledger ``decision``, the prompt's features (its embedding at half precision and its cheap features, never its
text) and the chosen candidate; ``/v1/feedback`` scores the answer. Together they are training rows whose one
known outcome is the chosen candidate's (the others were not asked).

``retrain`` refits a model on its original training set plus these rows and keeps the new one only if it
predicts held-out feedback (the newest fifth) at least as well as the model in use.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mmproxy.smart.model import QualityModel, TrainingSet

HELD_OUT = 0.2  # the newest share of rated requests a retrained model is judged on


def encode_features(vector: np.ndarray, cheap: np.ndarray) -> str:
    """A prompt's features for the ledger: float16 embedding then float16 cheap features, base64."""
    raw = np.concatenate([vector, cheap]).astype(np.float16).tobytes()
    return base64.b64encode(raw).decode()


def decode_features(text: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    values = np.frombuffer(base64.b64decode(text), dtype=np.float16).astype(np.float32)
    return values[:dim], values[dim:]


def rated_rows(rows: Iterable[Mapping[str, Any]], candidates: Sequence[str], dim: int) -> TrainingSet | None:
    """Training rows from the ledger's rated decisions (``Database.rated_decisions``), oldest first; None when
    none is usable (no features: the router did not have ``learn: true``; a candidate the model does not
    know)."""
    vectors, cheap, outcomes, known, lengths, prompt_tokens, started = [], [], [], [], [], [], []
    for row in rows:
        try:
            decision = orjson.loads(str(row["decision"]))
            column = candidates.index(decision["learned_as"])
            vector, features = decode_features(decision["features"], dim)
            score = float(row["feedback_score"])
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
            continue
        outcome = np.zeros(len(candidates), dtype=np.float32)
        mask = np.zeros_like(outcome)
        length = np.zeros_like(outcome)
        outcome[column], mask[column] = min(max(score, 0.0), 1.0), 1.0
        length[column] = float(row.get("completion_tokens") or 0)
        vectors.append(vector)
        cheap.append(features)
        outcomes.append(outcome)
        known.append(mask)
        lengths.append(length)
        prompt_tokens.append(int(decision.get("prompt_tokens") or 0))
        started.append(float(row["started"]))
    if not vectors:
        return None
    data = TrainingSet(np.stack(vectors), np.stack(cheap), np.stack(outcomes), np.stack(known), np.stack(lengths),
                       np.asarray(prompt_tokens))
    return data.rows(np.argsort(started, kind="stable"))


def held_out_error(model: QualityModel, data: TrainingSet) -> float:
    """Mean squared error of the model's predicted quality against the known outcomes of ``data`` (Brier score
    for right/wrong feedback)."""
    quality, _ = model.predict(data.vectors, data.cheap)
    mask = data.known > 0
    return float(((quality - data.outcomes)[mask] ** 2).mean())


@dataclass(frozen=True)
class Retrained:
    model: QualityModel | None  # None: kept the model in use
    old_error: float
    new_error: float
    rows: int


def retrain(base: QualityModel, current: QualityModel, rated: TrainingSet) -> Retrained:
    """Fit ``base``'s training set plus the rated requests but the newest fifth; if that model's error on the
    newest fifth is not above ``current``'s, refit with all of them and return it."""
    cut = int(len(rated) * (1 - HELD_OUT))
    held = rated.rows(np.arange(cut, len(rated)))
    l2 = base.meta.get("l2")
    l2 = float(l2) if isinstance(l2, (int, float)) else 10.0
    trial = QualityModel.fit(base.candidates, base.data + rated.rows(np.arange(cut)), l2=l2, k=base.k)
    old, new = held_out_error(current, held), held_out_error(trial, held)
    if new > old:
        return Retrained(None, old, new, len(rated))
    meta = dict(base.meta, retrained_on=len(rated))
    return Retrained(QualityModel.fit(base.candidates, base.data + rated, l2=l2, k=base.k, meta=meta), old, new,
                     len(rated))
