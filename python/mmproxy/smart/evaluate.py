"""Offline evaluation of routing policies over routing records: quality, cost, cost per successful output, share
of calls to the strongest model, APGR, and the cost saving at a share of the strongest model's quality.

Policies, all scored on the same records: each single model, random routing, the oracle (the cheapest model
with the best outcome), a lexical complexity heuristic (length and code/math/reasoning markers, as rule-based
auto-routers do), the learned router at its operating point and over its whole threshold sweep, and a cascade.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from mmproxy import tokens
from mmproxy._native import PROMPT_FEATURE_NAMES
from mmproxy.smart.cascade import CascadePlan, outcome, walk
from mmproxy.smart.features import Embedder, prompt_matrix
from mmproxy.smart.model import QualityModel
from mmproxy.smart.policy import break_even
from mmproxy.smart.records import Price, Record, costs
from mmproxy.smart.router import LearnedRouter
from mmproxy.smart.train import outcome_matrix, stage_rows

LEVELS = (0.5, 0.8, 0.95)  # shares of the strongest model's quality the savings are reported at
_LEXICAL = ("words", "math", "code", "reasoning", "constraints")


@dataclass
class PolicyRow:
    policy: str
    quality: float
    cost: float  # USD per query
    strong_share: float | None = None
    apgr: float | None = None
    saving: dict[str, float | None] = field(default_factory=dict)  # level -> 1 - cost / strongest's cost

    @property
    def cost_per_success(self) -> float | None:
        return self.cost / self.quality if self.quality > 0 else None

    def as_dict(self) -> dict[str, object]:
        return dict(asdict(self), cost_per_success=self.cost_per_success)


@dataclass
class TaskReport:
    task: str
    records: int
    rows: list[PolicyRow]
    curves: dict[str, list[tuple[float, float]]]  # policy -> (cost share of the strongest, quality) points


def curve_stats(order_scores: np.ndarray, quality: np.ndarray, cost: np.ndarray, weak: int,
                strong: int) -> tuple[list[tuple[float, float, float]], float]:
    """Two-model sweep: the prompts with the highest ``order_scores`` go to ``strong``. Returns (share, quality,
    cost) points at every share and the APGR (mean PGR over ten share bins, as RouteLLM reports it)."""
    order = np.argsort(-order_scores, kind="stable")
    n = len(order)
    gain_q = (quality[order, strong] - quality[order, weak]).cumsum()
    gain_c = (cost[order, strong] - cost[order, weak]).cumsum()
    base_q, base_c = quality[:, weak].sum(), cost[:, weak].sum()
    points = [(0.0, base_q / n, base_c / n)] + [((i + 1) / n, (base_q + gain_q[i]) / n, (base_c + gain_c[i]) / n)
                                                for i in range(n)]
    q_weak, q_strong = quality[:, weak].mean(), quality[:, strong].mean()
    span = q_strong - q_weak
    pgr = [((points[round(n * b / 10)][1]) - q_weak) / span if span else 1.0 for b in range(1, 11)]
    return points, float(np.mean(pgr))


def savings(points: Sequence[tuple[float, float, float]], strong_quality: float,
            strong_cost: float) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for level in LEVELS:
        reachable = [c for _, q, c in points if q >= level * strong_quality - 1e-12]
        out[f"{level:.0%}"] = None if not reachable else 1 - min(reachable) / strong_cost
    return out


def evaluate(records: Sequence[Record], router: LearnedRouter, embedder: Embedder, prices: dict[str, Price],
             cascade: CascadePlan | None = None, by_task: bool = True) -> list[TaskReport]:
    """Every policy on ``records`` (those holding an outcome of each of the router's candidates); the learned
    router decides request by request in record order, as the gateway would (its calibration moves with them)."""
    model = router.model
    candidates = [model.candidates[c] for c in router.columns]
    usable = [r for r in records if all(c in r.models for c in candidates)]
    vectors, cheap = prompt_matrix(embedder, [r.prompt for r in usable])
    prompt_tokens = np.array([tokens.count(r.prompt) for r in usable])
    predicted, estimated = router.predict(vectors, cheap, prompt_tokens)
    quality, _ = outcome_matrix(usable, candidates)
    cost = np.array(costs(usable, candidates, prices))
    unit = np.array([prices[c].input + prices[c].output for c in candidates])
    chosen = np.array([router.policy.choose(predicted[i], estimated[i]).index for i in range(len(usable))])
    order = break_even(predicted, estimated / router.policy.unit_cost)
    lexical_columns = [PROMPT_FEATURE_NAMES.index(name) for name in _LEXICAL]
    lexical = cheap[:, lexical_columns].sum(axis=1)
    cascade_scores = cascade_quality = cascade_cost = None
    if cascade is not None:
        cascade_scores, cascade_quality, cascade_cost = _cascade_inputs(usable, cascade, model, embedder, prices)
    tasks = sorted({r.task for r in usable}) if by_task else []
    reports = []
    for task in [*tasks, "all"]:
        rows = np.array([task in ("all", r.task) for r in usable])
        if not rows.any():
            continue
        reports.append(_task_report(task, rows, candidates, unit, quality, cost, order, chosen, lexical,
                                    cascade, cascade_scores, cascade_quality, cascade_cost))
    return reports


def _cascade_inputs(records: Sequence[Record], cascade: CascadePlan, model: QualityModel, embedder: Embedder,
                    prices: dict[str, Price]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores (NaN where a stage's answer is missing), quality and cost of the cascade's stages per record."""
    stages = list(cascade.stages)
    has = np.array([all(s in r.models and r.models[s].answer is not None for s in stages) for r in records])
    scores = np.full((len(records), len(stages) - 1), np.nan)
    quality = np.zeros((len(records), len(stages)))
    cost = np.zeros_like(quality)
    subset = [r for r, h in zip(records, has, strict=True) if h]
    if subset:
        rows, _ = stage_rows(subset, stages, model, embedder)
        for s in range(len(stages) - 1):
            scores[has, s] = cascade.score(s, rows[s])
        quality[has] = outcome_matrix(subset, stages)[0]
        cost[has] = np.array(costs(subset, stages, prices))
    return scores, quality, cost


def _task_report(task: str, rows: np.ndarray, candidates: list[str], unit: np.ndarray, quality: np.ndarray,
                 cost: np.ndarray, order: np.ndarray, chosen: np.ndarray, lexical: np.ndarray,
                 cascade: CascadePlan | None, cascade_scores: np.ndarray | None,
                 cascade_quality: np.ndarray | None, cascade_cost: np.ndarray | None) -> TaskReport:
    q, c = quality[rows], cost[rows]
    n = int(rows.sum())
    weak, strong = int(np.argmin(unit)), int(np.argmax(unit))
    q_strong, c_strong = float(q[:, strong].mean()), float(c[:, strong].mean())
    out: list[PolicyRow] = []
    curves: dict[str, list[tuple[float, float]]] = {}
    for i, name in enumerate(candidates):
        out.append(PolicyRow(f"only {name}", float(q[:, i].mean()), float(c[:, i].mean()), float(i == strong)))
    # Random routing at every share: the straight line between the two single models.
    line = [(s, (1 - s) * q[:, weak].mean() + s * q_strong, (1 - s) * c[:, weak].mean() + s * c_strong)
            for s in np.linspace(0, 1, 101)]
    half = line[50]
    out.append(PolicyRow("random (50% strongest)", half[1], half[2], 0.5, 0.5, savings(line, q_strong, c_strong)))
    curves["random"] = [(cc / c_strong, qq) for _, qq, cc in line]
    best = q.max(axis=1, keepdims=True)
    cheapest_best = np.where(q >= best, c, np.inf).argmin(axis=1)
    pick = np.arange(n)
    out.append(PolicyRow("oracle", float(q[pick, cheapest_best].mean()), float(c[pick, cheapest_best].mean()),
                         float((cheapest_best == strong).mean())))
    for name, score in (("lexical heuristic", lexical[rows]), ("learned router", order[rows])):
        points, apgr = curve_stats(score, q, c, weak, strong)
        curves[name] = [(cc / c_strong, qq) for _, qq, cc in points]
        row = PolicyRow(f"{name} (sweep)", float("nan"), float("nan"), None, apgr, savings(points, q_strong, c_strong))
        if name == "learned router":
            here = chosen[rows]
            out.append(PolicyRow("learned router (operating point)", float(q[pick, here].mean()),
                                 float(c[pick, here].mean()), float((here == strong).mean())))
        out.append(row)
    if cascade is not None and cascade_scores is not None and cascade_quality is not None \
            and cascade_cost is not None:
        has = rows & ~np.isnan(cascade_scores).any(axis=1)
        if has.any():
            answered = walk(cascade_scores[has], cascade.thresholds)
            cq, cc = outcome(answered, cascade_quality[has], cascade_cost[has])
            last_q, last_c = float(cascade_quality[has, -1].mean()), float(cascade_cost[has, -1].mean())
            out.append(PolicyRow(f"cascade ({int(has.sum())} records with answers)", cq, cc,
                                 float((answered == len(cascade.stages) - 1).mean()), None,
                                 {"vs last stage alone": 1 - cc / last_c if last_c else None,
                                  "quality of last stage": last_q}))
    return TaskReport(task, n, out, curves)


@dataclass(frozen=True)
class Replayed:
    """One record's answer from a running gateway: the record model that answered (the completion's ``model``),
    the cost the gateway charged (``x-mmproxy-cost-usd``) and the response's headers."""

    record: Record
    model: str
    charged: float
    headers: Mapping[str, str]  # case-insensitive


async def through_gateway(records: Sequence[Record], url: str, model: str, api_key: str | None,
                          progress: Callable[[int, int], None] | None = None) -> list[Replayed]:
    """Each record's prompt sent to ``model`` on a running gateway (its upstreams a replay of the same records),
    one at a time in record order, as the offline evaluations decide them."""
    import aiohttp

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    out = []
    async with aiohttp.ClientSession(base_url=url.rstrip("/") + "/", headers=headers) as session:
        for done, record in enumerate(records, 1):
            body = {"model": model, "messages": [{"role": "user", "content": record.prompt}]}
            async with session.post("v1/chat/completions", json=body) as response:
                answer = await response.json(content_type=None)
                if response.status != 200:
                    raise ValueError(f"{url}: record {record.id}: HTTP {response.status}: "
                                     f"{answer.get('error', {}).get('message') if isinstance(answer, dict) else ''}")
                out.append(Replayed(record, str(answer.get("model")),
                                    float(response.headers.get("x-mmproxy-cost-usd", "0")), response.headers.copy()))
            if progress is not None:
                progress(done, len(records))
    return out


def gateway_rows(answers: Sequence[Replayed], model: str, strongest: str,
                 by_task: bool = True) -> dict[str, PolicyRow]:
    """Per task (and "all"), the row of what the gateway did: quality of the answering model's recorded outcome,
    the cost it charged, the strongest model's share."""
    tasks = sorted({a.record.task for a in answers}) if by_task else []
    rows = {}
    for task in [*tasks, "all"]:
        mine = [a for a in answers if task in ("all", a.record.task)]
        quality = [a.record.models[a.model].quality if a.model in a.record.models else 0.0 for a in mine]
        rows[task] = PolicyRow(f"{model} through the gateway", float(np.mean(quality)),
                               float(np.mean([a.charged for a in mine])),
                               float(np.mean([a.model == strongest for a in mine])))
    return rows
