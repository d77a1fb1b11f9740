"""A cascade as a virtual model: ask the cheapest stage, score its answer, accept it or escalate to the next stage;
the last stage's answer is always accepted (``mmproxy.smart.cascade``).

Every sub-call (each stage, each consistency sample, each judge call) goes through the pipeline's route step, so
it has routing, limits, failover and cost, all added to the one request's record. The client receives the
accepted answer; a streaming client receives it as a stream once it is accepted (a cascade buffers: an answer
cannot be streamed before it is judged). Scorers:

- ``learned``: P(good answer) from the answer and the prompt (``smart.cascade``), from the cascade plan;
- ``consistency``: ``samples`` answers of the stage at a sampling temperature; their agreement is the score;
- ``judge``: another model grades the answer, seeing only the question and the answer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from aiohttp import web

from mmproxy._native import prompt_features
from mmproxy.cache.embedder import LocalEmbedder
from mmproxy.config import CascadeSettings, CascadeStage
from mmproxy.errors import ProxyError
from mmproxy.pipeline.apis import ClientAPI, Inbound, last_user_text
from mmproxy.pipeline.smart_routing import SHIPPED_MODEL, VirtualModelError, quality_model
from mmproxy.pipeline.subcalls import Answer, MultiCallKind, SubCalls, answer_allowance
from mmproxy.router.groups import ModelGroup
from mmproxy.smart.agreement import exact_votes, judge_prompt, judge_score, similarity_agreement
from mmproxy.smart.cascade import CascadePlan, scorer_features
from mmproxy.smart.features import answer_features
from mmproxy.smart.model import QualityModel

if TYPE_CHECKING:
    pass

log = logging.getLogger("mmproxy")

SHIPPED_PLAN = SHIPPED_MODEL.parent / "cascade.npz"
SAMPLE_TEMPERATURE = 0.7  # consistency samples of a request that asked for greedy (or unset) decoding
DEFAULT_THRESHOLDS = {"consistency": 2 / 3, "judge": 0.7}
JUDGE_MAX_TOKENS = 200  # a grade and one sentence


@dataclass(slots=True)
class _Stage:
    group: str
    scorer: str | None
    threshold: float
    samples: int
    judge: str | None
    plan_index: int | None  # learned: the stage's scorer in the plan
    prior_column: int | None  # learned: the stage's model in the quality model (None: no prior, 0.5)


class _Cascade:
    def __init__(self, name: str, stages: list[_Stage], plan: CascadePlan | None, model: QualityModel | None) -> None:
        self.name = name
        self.stages = stages
        self.plan = plan
        self.model = model


@functools.cache
def _cascade_plan(path: str) -> CascadePlan:
    """A cascade plan file, read once per process whatever number of cascades use it."""
    return CascadePlan.load(path)


class Cascading(MultiCallKind[CascadeSettings]):
    what = "a cascade"

    def __init__(self, settings: dict[str, CascadeSettings], groups: Mapping[str, ModelGroup],
                 embedder: LocalEmbedder) -> None:
        super().__init__(settings, groups)
        self._embedder = embedder
        self._cascades: dict[str, _Cascade] = {}
        for name, cascade in settings.items():
            plan = model = None
            if any(s.scorer == "learned" for s in cascade.stages):
                try:
                    plan = _cascade_plan(cascade.plan or str(SHIPPED_PLAN))
                    model = quality_model(cascade.router_model or str(SHIPPED_MODEL))
                except ValueError as exc:
                    raise VirtualModelError(f"cascade {name!r}: {exc}") from None
            stages = [self._stage(name, s, groups[s.model].members[0].upstream_model, plan, model)
                      for s in cascade.stages]
            self._cascades[name] = _Cascade(name, stages, plan, model)

    @staticmethod
    def _stage(name: str, stage: CascadeStage, upstream: str, plan: CascadePlan | None,
               model: QualityModel | None) -> _Stage:
        plan_index = prior = None
        threshold = stage.threshold
        if stage.scorer == "learned":
            assert plan is not None and model is not None
            learned = stage.learned_as or upstream
            scored = plan.stages[:-1]
            if learned not in scored:
                raise VirtualModelError(
                    f"cascade {name!r}: stage {stage.model!r} is {learned!r} to the cascade plan, which scores "
                    f"{', '.join(scored)}; set learned_as or fit a plan with `mmproxy cascade fit`")
            plan_index = scored.index(learned)
            prior = model.candidates.index(learned) if learned in model.candidates else None
            threshold = plan.thresholds[plan_index] if threshold is None else threshold
        elif stage.scorer is not None and threshold is None:
            threshold = DEFAULT_THRESHOLDS[stage.scorer]
        return _Stage(stage.model, stage.scorer, float("inf") if threshold is None else threshold, stage.samples,
                      stage.judge, plan_index, prior)

    def worst_cost(self, name: str, prompt: int, completion: int | None) -> float:
        """The most one request may cost: every stage asked (each sample of a consistency stage) and every judge
        consulted, each on its dearest deployment. What a virtual key's budget reserves."""
        total = 0.0
        for stage in self._cascades[name].stages:
            asked = stage.samples if stage.scorer == "consistency" else 1
            total += asked * self._most(stage.group, prompt, completion)
            if stage.judge is not None:  # the judge reads the question and the answer
                total += self._most(stage.judge, prompt + answer_allowance(completion), JUDGE_MAX_TOKENS)
        return total

    async def answer(self, settings: CascadeSettings, calls: SubCalls, api: ClientAPI, inbound: Inbound,
                     body: dict[str, Any], headers: dict[str, str]) -> web.StreamResponse:
        cascade, call = self._cascades[settings.model_name], calls.call
        question = last_user_text(body.get("messages") or [])
        prompt: tuple[np.ndarray, np.ndarray] | None = None
        report: list[dict[str, Any]] = []
        answer: Answer | None = None
        answered = cascade.stages[0]  # the stage whose answer is held
        for stage in cascade.stages:
            try:
                if stage.scorer == "consistency":
                    staged = await self._consistent(calls, body, stage)
                else:
                    staged = await calls.ask(body, stage.group)
            except ProxyError:
                if answer is None:
                    raise
                # An earlier stage's answer is paid for: it goes out rather than an error.
                report.append({"model": stage.group, "failed": True})
                log.warning("request %s: cascade %s: stage %s failed; answering with %s's answer",
                            call.record.request_id, cascade.name, stage.group, answered.group)
                break
            answer = staged
            answered = stage
            if stage.scorer not in (None, "consistency"):
                if stage.scorer == "learned":
                    if prompt is None:
                        prompt = (await self._embedder.embed_one(question),
                                  np.asarray(prompt_features(question), dtype=np.float32))
                    answer.score = await self._learned(cascade, stage, prompt, answer.text)
                elif stage.scorer == "judge":
                    answer.score = await self._judged(calls, stage, question, answer.text)
            if stage is cascade.stages[-1]:
                report.append({"model": stage.group, "accepted": True})
                break
            accepted = answer.score is not None and answer.score >= stage.threshold
            report.append({"model": stage.group, "scorer": stage.scorer, "threshold": round(stage.threshold, 4),
                           "score": None if answer.score is None else round(answer.score, 4), "accepted": accepted})
            if accepted:
                break
        assert answer is not None
        calls.answered_by(answer)
        call.record.decision = orjson.dumps({"cascade": cascade.name, "answered_by": answered.group,
                                             "stages": report}).decode()
        headers["x-mmproxy-cascade"] = cascade.name
        headers["x-mmproxy-cascade-stage"] = answered.group
        scored = [f"{s['model']}={s['score']}" for s in report if "score" in s]
        if scored:
            headers["x-mmproxy-cascade-scores"] = ",".join(scored)
        return await calls.respond(api, inbound, answer, headers)

    async def _consistent(self, calls: SubCalls, body: dict[str, Any], stage: _Stage) -> Answer:
        sampled = dict(body)
        if not sampled.get("temperature"):
            sampled["temperature"] = SAMPLE_TEMPERATURE
        answers = await asyncio.gather(*(calls.ask(sampled, stage.group) for _ in range(stage.samples)))
        texts = [a.text for a in answers]
        voted = exact_votes(texts)
        if voted is None:
            vectors = np.stack(await asyncio.gather(*(self._embedder.embed_one(t) for t in texts)))  # one batch
            score, index = similarity_agreement(vectors)
        else:
            score, index, _ = voted
        chosen = answers[index]
        chosen.score = score
        return chosen

    async def _learned(self, cascade: _Cascade, stage: _Stage, prompt: tuple[np.ndarray, np.ndarray],
                       text: str) -> float:
        assert cascade.plan is not None and cascade.model is not None and stage.plan_index is not None
        vector, cheap = prompt
        prior = 0.5
        if stage.prior_column is not None:
            quality, _ = cascade.model.predict(vector[None, :], cheap[None, :])
            prior = float(quality[0, stage.prior_column])
        answer_vector = await self._embedder.embed_one(text)
        shape = np.asarray(answer_features(text), dtype=np.float32)
        rows = scorer_features(answer_vector[None, :], shape[None, :], cheap[None, :], np.array([prior]))
        return float(cascade.plan.score(stage.plan_index, rows)[0])

    async def _judged(self, calls: SubCalls, stage: _Stage, question: str, answer: str) -> float | None:
        assert stage.judge is not None
        body = {"model": stage.judge, "temperature": 0, "max_tokens": JUDGE_MAX_TOKENS,
                "messages": judge_prompt(question, answer)}
        try:
            verdict = await calls.ask(body, stage.judge, json_output=True)
        except ProxyError as exc:
            log.warning("request %s: judge %s failed (%s); the answer is escalated", calls.call.record.request_id,
                        stage.judge, exc.code or exc.type)
            return None
        score = judge_score(verdict.text)
        if score is None:
            log.warning("request %s: judge %s gave no grade; the answer is escalated",
                        calls.call.record.request_id, stage.judge)
        return score

