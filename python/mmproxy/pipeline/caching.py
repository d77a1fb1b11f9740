"""The response cache as a pipeline step: it may answer before any upstream call, and keeps what the upstream
answered for the next identical (or, with the semantic layer, equivalent) request. With the verified semantic
cache, a request that is not served may be explored: its answer is then compared with a cached one, by a judge
model when ``answer_equivalence`` is ``judge`` — a request of its own (its id the explored request's plus
``.judge1``), routed, limited, budgeted and in the ledger like any."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from mmproxy import tokens
from mmproxy.cache import policy
from mmproxy.cache.responses import Hit, Question, ResponseCache
from mmproxy.cache.store import CachedResponse
from mmproxy.errors import ProxyError
from mmproxy.pipeline.call import Call
from mmproxy.pipeline.sse import rewrite_usage_chunk
from mmproxy.spend.record import RequestRecord

if TYPE_CHECKING:
    from mmproxy.cache.answers import Judged
    from mmproxy.pipeline.pipeline import Pipeline

log = logging.getLogger("mmproxy")
_JSON = "application/json"
_NS_PER_MS = 1_000_000
_JUDGE_TOKENS = 256  # a grouping of two answers is a short JSON object


class CachePlan:
    """One request's dealings with the cache: its lookup plan and the semantic question to keep its answer by."""

    __slots__ = ("lookup", "question")

    def __init__(self, lookup: policy.Lookup | None, question: Question | None) -> None:
        self.lookup = lookup
        self.question = question


class CacheStep:
    def __init__(self, cache: ResponseCache, pipeline: Pipeline) -> None:
        self.cache = cache
        self.pipeline = pipeline  # for the judge's calls
        settings = cache.settings
        self._judge = settings.judge_model if settings.answer_equivalence == "judge" else None

    async def consult(self, headers: Mapping[str, str], call: Call, payload: dict[str, Any], raw: bytes,
                      target: str, endpoint: str, answer_headers: dict[str, str]) -> tuple[CachePlan, Hit | None]:
        """The request's cache plan, and a hit when there is one.

        Adds ``x-mmproxy-cache`` to ``answer_headers``; a stream that may be kept is captured as it is relayed.
        A cache failure (Redis down, embedder error) is a miss, never the request's error.
        """
        lookup = policy.plan(self.cache.settings, headers, payload, raw, target, call.caller.scope, endpoint)
        answer_headers["x-mmproxy-cache"] = "miss" if lookup is not None and lookup.read else "bypass"
        if lookup is None:
            return CachePlan(None, None), None
        question = None
        if lookup.read:
            try:
                hit, question = await self.cache.get(lookup, payload)
            except Exception as exc:
                log.warning("cache lookup failed (%s: %s); answering from upstream", type(exc).__name__, exc)
                hit = None
            if hit is not None:
                return CachePlan(lookup, None), hit
            call.record.cache = "miss"
            if question is not None and question.explored is not None:
                answer_headers["x-mmproxy-cache"] = call.record.cache = "explore"
        if lookup.store and payload.get("stream") is True:
            call.capture = []
        return CachePlan(lookup, question), None

    def store(self, plan: CachePlan, request: web.BaseRequest, call: Call, response: web.StreamResponse) -> None:
        """Keep a complete, successful answer (a stream as the bytes relayed)."""
        record = call.record
        lookup = plan.lookup
        if lookup is None or not lookup.store:
            return
        if response.status != 200 or record.error_code is not None or record.model_group is None:
            return
        if call.capture is not None:
            body = b"".join(call.capture)
            stream = True
        elif isinstance(response, web.Response) and isinstance(response.body, bytes):
            body, stream = response.body, False
        else:
            return
        question = plan.question
        judge = self._judged(request, call) if question is not None and question.explored is not None else None
        self.cache.put(lookup, CachedResponse(
            body=body, stream=stream, model_group=record.model_group, deployment=record.deployment or "",
            prompt_tokens=record.prompt_tokens, completion_tokens=record.completion_tokens,
            cost_usd=record.cost_usd, created=time.time()), question, judge)

    def _judged(self, request: web.BaseRequest, call: Call) -> Judged | None:
        """The judge equivalence for one explored request: its calls are the caller's, made after the answer left."""
        group = self._judge
        if group is None:
            return None
        from mmproxy.cache.answers import Judged
        from mmproxy.pipeline.subcalls import answer_text, chat_attempt

        pipeline, parent = self.pipeline, call.record
        made = 0

        async def ask(messages: list[dict[str, str]]) -> str:
            nonlocal made
            made += 1
            record = RequestRecord(f"{parent.request_id}.judge{made}", "chat")
            record.requested_model = group  # not a sub-call (its cost is not inside the explored request's)
            record.key_hash, record.key_alias, record.team_id = parent.key_hash, parent.key_alias, parent.team_id
            judge = Call(record, time.perf_counter_ns())
            judge.caller = call.caller
            body: dict[str, Any] = {"model": group, "messages": messages, "max_tokens": _JUDGE_TOKENS}
            attempt = chat_attempt(pipeline, request, judge, body, group)  # sets judge.inbound
            assert judge.inbound is not None
            try:
                if call.caller.key is not None:  # admitted as any request of the key's: priced, limited, reserved
                    judge.counted = tokens.count_chat(judge.inbound.chat_bytes(), group).count
                    await pipeline.admit(judge, group, group, judge.inbound)
                response = await pipeline.route(judge, group, attempt)
                assert isinstance(response, web.Response) and isinstance(response.body, bytes)
                return answer_text(response.body)
            except ProxyError as exc:
                record.status, record.error_code = exc.status, exc.code or exc.type
                raise
            except Exception:
                record.status, record.error_code = 500, "internal_error"
                raise
            finally:
                pipeline.accounting.finish(judge)

        return Judged(ask)

    @staticmethod
    async def serve(request: web.BaseRequest, call: Call, hit: Hit) -> web.StreamResponse:
        """Answer from the cache: no upstream call, no cost; the ledger notes what it saved."""
        entry = hit.response
        record = call.record
        record.cache, record.saved_usd = hit.kind, entry.cost_usd
        record.model_group, record.deployment = entry.model_group, entry.deployment
        record.prompt_tokens, record.completion_tokens = entry.prompt_tokens, entry.completion_tokens
        headers = {"x-mmproxy-request-id": record.request_id, "x-mmproxy-cache": hit.kind,
                   "x-mmproxy-deployment": entry.deployment, "x-mmproxy-cost-usd": "0"}
        if hit.similarity is not None:
            headers["x-mmproxy-cache-similarity"] = f"{hit.similarity:.4f}"
        if not entry.stream:
            record.overhead_ms = (time.perf_counter_ns() - call.started) / _NS_PER_MS
            return web.Response(body=entry.body, content_type=_JSON, headers=headers)
        body = entry.body
        if b"x_mmproxy_cost_usd" in body:  # the replay itself cost nothing
            body = rewrite_usage_chunk(body, True, _zero_cost)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               **headers})
        response.enable_chunked_encoding()
        await response.prepare(request)
        record.ttft_ms = record.overhead_ms = (time.perf_counter_ns() - call.started) / _NS_PER_MS
        await response.write(body)
        await response.write_eof()
        return response


def _zero_cost(chunk: dict[str, object]) -> None:
    chunk["x_mmproxy_cost_usd"] = 0.0
