"""Consensus as a virtual model: the same request to several models in parallel, within a deadline; once a quorum
has answered, the answers are compared and the majority answer returned, with how far they agree and what the
others said. Divergence is the signal: where models that fail independently give different answers, at least one
of them is wrong.

Comparison: numbers, option letters and short answers exactly once normalised (``smart.agreement``); free text by
a ``judge`` group that groups the answers saying the same thing when one is configured, else (or when it fails)
by the local embedding (two answers agree at cosine ≥ 0.85). Below ``min_agreement``, per config: answer with the
flag (``flag``), ask ``escalate_to`` (``escalate``), or a 409 ``no_consensus`` error that lists the answers
(``error``). A member that fails or misses the deadline is left out (``x-mmproxy-consensus-answered``); fewer
than ``quorum`` answers is a 504. Every answer that arrived is paid for and in the request's cost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from aiohttp import web

from mmproxy.cache.embedder import LocalEmbedder
from mmproxy.config import ConsensusSettings
from mmproxy.errors import ProxyError
from mmproxy.pipeline.apis import ClientAPI, Inbound, last_user_text
from mmproxy.pipeline.subcalls import Answer, MultiCallKind, SubCalls, answer_allowance
from mmproxy.router.groups import ModelGroup
from mmproxy.smart.agreement import grouper_prompt, judged_votes, short_answer, similar_votes, votes_of

if TYPE_CHECKING:
    pass

log = logging.getLogger("mmproxy")

GROUPING_MAX_TOKENS = 200  # a judge's grouping of the answers


class Consensus(MultiCallKind[ConsensusSettings]):
    what = "a consensus of models"

    def __init__(self, settings: dict[str, ConsensusSettings], groups: Mapping[str, ModelGroup],
                 embedder: LocalEmbedder) -> None:
        super().__init__(settings, groups)
        self._embedder = embedder

    def worst_cost(self, name: str, prompt: int, completion: int | None) -> float:
        settings = self._settings[name]
        total = sum(self._most(m, prompt, completion) for m in settings.members)
        if settings.escalate_to is not None:
            total += self._most(settings.escalate_to, prompt, completion)
        if settings.judge is not None:  # reads every answer
            reads = prompt + len(settings.members) * answer_allowance(completion)
            total += self._most(settings.judge, reads, GROUPING_MAX_TOKENS)
        return total

    async def answer(self, settings: ConsensusSettings, calls: SubCalls, api: ClientAPI, inbound: Inbound,
                     body: dict[str, Any], headers: dict[str, str]) -> web.StreamResponse:
        target, call = settings.model_name, calls.call
        answers, missing = await self._gather(calls, settings, body)
        members = [m for m in settings.members if m in answers]
        headers["x-mmproxy-consensus-answered"] = f"{len(members)}/{len(settings.members)}"
        if len(members) < settings.quorum:
            raise ProxyError(504, f"consensus {target!r}: {len(members)} of {len(settings.members)} models answered "
                             f"within {settings.deadline:g} s, {settings.quorum} needed "
                             f"(missing: {', '.join(missing)})", type="upstream_error", code="consensus_timeout",
                             headers=headers)
        texts = [answers[m].text for m in members]
        keys = [short_answer(t) for t in texts]
        voted = votes_of(keys)
        if voted is None and settings.judge is not None:
            voted = await self._judged(calls, settings.judge, body, texts)
        if voted is None:
            vectors = np.stack(await asyncio.gather(*(self._embedder.embed_one(t) for t in texts)))
            voted = similar_votes(vectors)
        agreement, index, agrees = voted
        majority = answers[members[index]]
        votes = [{"model": m, "answer": key or text[:200], "agrees": a}
                 for m, key, text, a in zip(members, keys, texts, agrees, strict=True)]
        report: dict[str, Any] = {"agreement": round(agreement, 4), "majority": members[index], "answers": votes,
                                  "missing": missing, "action": "none"}
        headers["x-mmproxy-consensus-agreement"] = f"{agreement:.3f}"
        headers["x-mmproxy-consensus-majority"] = members[index]
        chosen = majority
        if agreement < settings.min_agreement:
            report["action"] = settings.on_disagreement
            if settings.on_disagreement == "error":
                call.record.decision = orjson.dumps({"consensus": target, **report}).decode()
                raise ProxyError(409, f"consensus {target!r}: the models disagree (agreement {agreement:.2f} below "
                                 f"{settings.min_agreement:g}): "
                                 + "; ".join(f"{v['model']}: {v['answer']}" for v in votes),
                                 code="no_consensus", headers=headers)
            if settings.on_disagreement == "escalate":
                assert settings.escalate_to is not None
                chosen = await calls.ask(body, settings.escalate_to)
                report["action"] = "escalated"
            else:
                report["action"] = "flagged"
        headers["x-mmproxy-consensus-action"] = str(report["action"])
        calls.answered_by(chosen)
        call.record.decision = orjson.dumps({"consensus": target, **report}).decode()
        return await calls.respond(api, inbound, chosen, headers, ("x_mmproxy_consensus", report))

    @staticmethod
    async def _judged(calls: SubCalls, judge: str, body: dict[str, Any],
                      texts: list[str]) -> tuple[float, int, list[bool]] | None:
        """Free-text answers grouped by a judge model; None (the embedding decides) when it fails or its reply
        holds no grouping."""
        question = last_user_text(body.get("messages") or [])
        ask = {"model": judge, "temperature": 0, "max_tokens": GROUPING_MAX_TOKENS,
               "messages": grouper_prompt(question, texts)}
        try:
            reply = await calls.ask(ask, judge, json_output=True)
        except ProxyError as exc:
            log.warning("request %s: consensus judge %s failed (%s); comparing by embedding",
                        calls.call.record.request_id, judge, exc.code or exc.type)
            return None
        return judged_votes(reply.text, len(texts))

    @staticmethod
    async def _gather(calls: SubCalls, settings: ConsensusSettings,
                      body: dict[str, Any]) -> tuple[dict[str, Answer], list[str]]:
        """Every member's answer that arrives within the deadline (all of them if they do); the members that
        failed or were too slow."""
        loop = asyncio.get_running_loop()
        tasks = {loop.create_task(calls.ask(body, member)): member for member in settings.members}
        done, pending = await asyncio.wait(tasks, timeout=settings.deadline)
        for task in pending:
            task.cancel()
        answers, missing = {}, [tasks[t] for t in pending]
        for task in done:
            failure = task.exception()
            if failure is None:
                answers[tasks[task]] = task.result()
            else:
                log.warning("request %s: consensus member %s failed: %s", calls.call.record.request_id, tasks[task],
                            failure)
                missing.append(tasks[task])
        return answers, sorted(missing, key=settings.members.index)
