"""The learned router's step: a request to a ``router`` virtual model goes to the candidate group the quality
model and the policy choose (``mmproxy.smart``), before admission, so limits and budgets see the real target.

The prompt the model reads is the text of the last user message, as in the routing records it was trained on.
Its embedding runs in the local embedder's thread (batched with concurrent requests), never on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mmproxy import cost, tokens
from mmproxy._native import prompt_features
from mmproxy.cache.embedder import LocalEmbedder
from mmproxy.config import Deployment, SmartRouterSettings
from mmproxy.db import Database
from mmproxy.errors import bad_request
from mmproxy.pipeline.apis import last_user_text
from mmproxy.pipeline.call import Call
from mmproxy.router.groups import ModelGroup
from mmproxy.smart.feedback import encode_features, rated_rows, retrain
from mmproxy.smart.model import QualityModel
from mmproxy.smart.router import LearnedRouter

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "data" / "smart" / "router.npz"
RETRAIN_ROWS = 200_000  # the newest rated requests a retraining reads

log = logging.getLogger("mmproxy")


@functools.cache
def quality_model(path: str) -> QualityModel:
    """A router model file, read once per process (its neighbour graph takes about a second to build) whatever
    number of routers and cascades use it. Read-only once loaded: a retraining makes a new model."""
    return QualityModel.load(path)


class VirtualModelError(Exception):
    """A virtual model that cannot run (a model file, a candidate the model does not know); safe to print."""


class _SmartRouter:
    def __init__(self, settings: SmartRouterSettings, model: QualityModel, groups: Mapping[str, ModelGroup]) -> None:
        self.name = settings.model_name
        self.candidates = settings.candidates
        self.settings = settings
        self.base = model  # the model file's: a retraining starts from its training set
        columns = []
        for group in settings.candidates:
            learned = settings.learned_as.get(group) or groups[group].members[0].upstream_model
            if learned not in model.candidates:
                raise VirtualModelError(
                    f"router {self.name!r}: candidate {group!r} is {learned!r} to the router model, which knows "
                    f"{', '.join(model.candidates)}; set router.learned_as")
            columns.append(model.candidates.index(learned))
        first = [groups[group].members[0] for group in settings.candidates]  # a group's price: its first deployment's
        for group, deployment in zip(settings.candidates, first, strict=True):
            if cost.price(deployment, 1, 1, 0, 0) is None:
                log.warning("router %s: candidate %s has no price (model_info.input_cost_per_token / "
                            "output_cost_per_token); the router takes it for free", self.name, group)
        self.learned_names = [model.candidates[c] for c in columns]
        self.learned = LearnedRouter(model, columns, np.array([_unit_price(d, 1, 0) for d in first]),
                                     np.array([_unit_price(d, 0, 1) for d in first]),
                                     cost_weight=settings.cost_weight, strong_share=settings.strong_share,
                                     min_quality=settings.min_quality, window=settings.window)


def _unit_price(deployment: Deployment, prompt: int, completion: int) -> float:
    priced = cost.price(deployment, prompt, completion, 0, 0)
    return 0.0 if priced is None else priced[0]


class SmartRouting:
    def __init__(self, settings: dict[str, SmartRouterSettings], groups: Mapping[str, ModelGroup],
                 embedder: LocalEmbedder) -> None:
        self._routers: dict[str, _SmartRouter] = {}
        for name, router in settings.items():
            try:
                model = quality_model(router.model or str(SHIPPED_MODEL))
            except ValueError as exc:
                raise VirtualModelError(f"router {name!r}: {exc}") from None
            self._routers[name] = _SmartRouter(router, model, groups)
        self._embedder = embedder

    def names(self) -> list[str]:
        return list(self._routers)

    def __contains__(self, name: str) -> bool:
        return name in self._routers

    async def choose(self, name: str, chat: dict[str, Any] | None, call: Call, headers: dict[str, str]) -> str:
        """The candidate group for this request; the decision goes into ``headers`` and the request's record."""
        router = self._routers[name]
        if chat is None:
            raise bad_request(f"model {name!r} is a learned router, which routes chat requests only", param="model")
        text = last_user_text(chat.get("messages") or [])
        vector = await self._embedder.embed_one(text)
        cheap = np.asarray(prompt_features(text), dtype=np.float32)
        prompt_tokens = tokens.count(text)  # as the model's records were counted
        routed = router.learned.route(vector, cheap, prompt_tokens)
        group = router.candidates[routed.decision.index]
        scores = {c: round(float(q), 4) for c, q in zip(router.candidates, routed.quality, strict=True)}
        headers["x-mmproxy-router"] = name
        headers["x-mmproxy-router-choice"] = group
        headers["x-mmproxy-router-scores"] = ",".join(f"{c}={q}" for c, q in scores.items())
        weight = routed.decision.weight
        decision: dict[str, Any] = {
            "router": name, "choice": group, "scores": scores,
            "estimated_cost_usd": {c: float(f"{v:.3g}") for c, v in zip(router.candidates, routed.cost, strict=True)},
            "cost_weight": None if weight != weight else round(weight, 6)}
        if router.settings.learn:
            decision.update(learned_as=router.learned_names[routed.decision.index], prompt_tokens=prompt_tokens,
                            features=encode_features(vector, cheap))
        call.record.decision = orjson.dumps(decision).decode()
        return group

    def jobs(self, db: Database) -> list[Coroutine[Any, Any, None]]:
        """The retraining loops of the routers with ``retrain_every``."""
        return [self._retraining(router, db) for router in self._routers.values() if router.settings.retrain_every]

    async def _retraining(self, router: _SmartRouter, db: Database) -> None:
        """Every ``retrain_every`` seconds, once ``retrain_min`` new rated requests exist: refit on the model
        file's training set plus the rated requests; swap the model in only if it predicts the newest rated
        requests no worse (``smart.feedback.retrain``). Each worker process retrains its own copy."""
        settings = router.settings
        assert settings.retrain_every is not None
        used = 0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(settings.retrain_every)
            try:
                rows = await db.rated_decisions(router.name, RETRAIN_ROWS)
                rated = rated_rows(rows, router.base.candidates, router.base.data.vectors.shape[1])
                if rated is None or len(rated) - used < settings.retrain_min:
                    continue
                used = len(rated)
                result = await loop.run_in_executor(None, retrain, router.base, router.learned.model, rated)
            except Exception:
                log.exception("router %s: retraining failed; the model in use stays", router.name)
                continue
            if result.model is not None:
                router.learned.model = result.model
            log.info("router %s: %s a model retrained on %d rated requests (held-out error %.4f, in use %.4f)",
                     router.name, "switched to" if result.model is not None else "kept the model in use over",
                     result.rows, result.new_error, result.old_error)
