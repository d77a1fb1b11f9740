"""Offline evaluation of agreement-based acceptance (the consensus virtual model) over routing records: ask every
member, accept the majority answer when enough of them agree. What it buys is selective accuracy — the accuracy
of the answers accepted — at some coverage (the share accepted) and the cost of asking every member.

Answers are compared as the gateway compares them (``smart.agreement``: short answers exactly, free text by the
local embedding), so these figures are what a consensus in front of the same models would do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from mmproxy.smart import evaluate
from mmproxy.smart.agreement import exact_votes, similar_votes
from mmproxy.smart.features import Embedder
from mmproxy.smart.records import Price, Record, costs


@dataclass
class AgreementRow:
    task: str
    records: int
    coverage: float  # share of records whose agreement reached the threshold
    selective_accuracy: float | None  # quality of the accepted majority answers
    majority_accuracy: float  # quality of the majority answer over all records (accepted or not)
    member_accuracy: dict[str, float]
    cost: float  # USD per query, every member asked
    member_cost: dict[str, float | None]  # None through the gateway, where only the total is charged

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def votes(records: Sequence[Record], members: Sequence[str],
          embedder: Embedder) -> tuple[np.ndarray, np.ndarray]:
    """Per record: the agreement share and the index of the majority member."""
    agreement = np.zeros(len(records))
    majority = np.zeros(len(records), dtype=np.int64)
    free: list[int] = []
    for i, record in enumerate(records):
        voted = exact_votes([record.models[m].answer or "" for m in members])
        if voted is None:
            free.append(i)
        else:
            agreement[i], majority[i] = voted[0], voted[1]
    if free:
        texts = [records[i].models[m].answer or "" for i in free for m in members]
        vectors = embedder.embed(texts).reshape(len(free), len(members), -1)
        for row, i in enumerate(free):
            share, index, _ = similar_votes(vectors[row])
            agreement[i], majority[i] = share, index
    return agreement, majority


def answered_by_all(records: Sequence[Record], members: Sequence[str]) -> list[Record]:
    usable = [r for r in records if all(m in r.models and r.models[m].answer is not None for m in members)]
    if not usable:
        raise ValueError(f"no record holds an answer of every member ({', '.join(members)})")
    return usable


def evaluate_agreement(records: Sequence[Record], members: Sequence[str], prices: dict[str, Price],
                       embedder: Embedder, min_agreement: float) -> list[AgreementRow]:
    usable = answered_by_all(records, members)
    agreement, majority = votes(usable, members, embedder)
    cost = np.array(costs(usable, members, prices))
    return _rows(usable, members, agreement, majority, cost.sum(axis=1), cost, min_agreement)


def _rows(records: Sequence[Record], members: Sequence[str], agreement: np.ndarray, majority: np.ndarray,
          total: np.ndarray, member_cost: np.ndarray | None, min_agreement: float) -> list[AgreementRow]:
    quality = np.array([[r.models[m].quality for m in members] for r in records])
    rows = []
    for task in [*sorted({r.task for r in records}), "all"]:
        mask = np.array([task in ("all", r.task) for r in records])
        q = quality[mask]
        chosen = q[np.arange(len(q)), majority[mask]]
        accepted = agreement[mask] >= min_agreement - 1e-9
        rows.append(AgreementRow(
            task, int(mask.sum()), float(accepted.mean()),
            float(chosen[accepted].mean()) if accepted.any() else None, float(chosen.mean()),
            {m: float(q[:, j].mean()) for j, m in enumerate(members)}, float(total[mask].mean()),
            {m: None if member_cost is None else float(member_cost[mask][:, j].mean())
             for j, m in enumerate(members)}))
    return rows


async def through_gateway(records: Sequence[Record], members: Sequence[str], url: str, model: str,
                          min_agreement: float, api_key: str | None,
                          progress: Callable[[int, int], None] | None = None) -> list[AgreementRow]:
    """The same records through a running gateway's consensus ``model`` (its members replaying the records), one
    at a time: the agreement and majority it reported, and the cost it charged."""
    usable = answered_by_all(records, members)
    answers = await evaluate.through_gateway(usable, url, model, api_key, progress)
    agreement = np.array([float(a.headers["x-mmproxy-consensus-agreement"]) for a in answers])
    majority = np.array([list(members).index(a.model) for a in answers], dtype=np.int64)
    return _rows(usable, members, agreement, majority, np.array([a.charged for a in answers]), None, min_agreement)
