"""What the virtual models that call several models share (cascades, verification, consensus): sub-calls that
are chat completions routed, limited, failed over and billed to the one request like any call, and the answer
that leaves in the client's own API shape, whole or as a stream.

A virtual model buffers: it answers once it has decided (an answer is judged whole), so a streaming client
receives the decided answer as a stream of chat chunks translated into its API's events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import orjson
from aiohttp import web

from mmproxy import cost
from mmproxy.errors import ProxyError, bad_request
from mmproxy.pipeline.apis import ClientAPI, Inbound
from mmproxy.pipeline.apis.chat import ChatCompletions
from mmproxy.pipeline.call import Call
from mmproxy.pipeline.upstreams import Upstream
from mmproxy.router.groups import ModelGroup
from mmproxy.spend.record import RequestRecord

if TYPE_CHECKING:
    from mmproxy.pipeline.pipeline import Pipeline

_JSON = "application/json"


class MultiCall(Protocol):
    """A kind of virtual model that answers by calling several models (cascades, verification, consensus); one
    object serves every virtual model of its kind, by name."""

    def names(self) -> list[str]: ...

    async def serve(self, pipeline: Pipeline, api: ClientAPI, request: web.BaseRequest, call: Call,
                    inbound: Inbound, target: str, headers: dict[str, str]) -> web.StreamResponse:
        """The request answered by the virtual model ``target``."""

    def worst_cost(self, name: str, prompt: int, completion: int | None) -> float:
        """The most one request may cost: every sub-call it may make. What a virtual key's budget reserves."""


S = TypeVar("S")


class MultiCallKind(Generic[S]):
    """What every kind of multi-call virtual model keeps: its virtual models' settings by name, and the router's
    model groups (for the worst-case cost a budget reserves)."""

    what = "a virtual model"  # how a refusal names the kind

    def __init__(self, settings: dict[str, S], groups: Mapping[str, ModelGroup]) -> None:
        self._settings = settings
        self._groups = groups

    def _most(self, group: str, prompt: int, completion: int | None) -> float:
        """The most one call to ``group`` may cost: on its dearest deployment."""
        return cost.estimate(self._groups[group].members, prompt, completion)

    def names(self) -> list[str]:
        return list(self._settings)

    def __contains__(self, name: str) -> bool:
        return name in self._settings

    async def serve(self, pipeline: Pipeline, api: ClientAPI, request: web.BaseRequest, call: Call,
                    inbound: Inbound, target: str, headers: dict[str, str]) -> web.StreamResponse:
        """The request answered by the virtual model ``target``: a 400 unless it is a chat turn (chat
        completions, Messages, Responses), then ``answer``."""
        if inbound.chat is None:
            raise bad_request(f"model {target!r} is {self.what}, which answers chat requests (chat completions, "
                              "Messages, Responses) only", param="model")
        return await self.answer(self._settings[target], SubCalls(pipeline, request, call), api, inbound,
                                 chat_body(inbound), headers)

    async def answer(self, settings: S, calls: SubCalls, api: ClientAPI, inbound: Inbound, body: dict[str, Any],
                     headers: dict[str, str]) -> web.StreamResponse:
        """The answer of one virtual model of this kind to ``body`` (the client's request in chat shape)."""
        raise NotImplementedError


@dataclass(slots=True)
class Answer:
    """One sub-call's answer: the chat completion response, its text, and a score when one was given."""

    response: web.Response
    text: str
    score: float | None = None

    @property
    def deployment(self) -> str | None:
        return self.response.headers.get("x-mmproxy-deployment")


def answer_allowance(completion: int | None) -> int:
    """The tokens an answer may have (what a judge or verifier reads of it): the request's limit, else the
    default a budget reserves for."""
    return completion if completion is not None else cost.DEFAULT_COMPLETION_ESTIMATE


def chat_body(inbound: Inbound) -> dict[str, Any]:
    """The client's request in chat shape for sub-calls: not streamed, no gateway control field."""
    assert inbound.chat is not None
    return {k: v for k, v in inbound.chat.items() if k not in ("stream", "stream_options", "cache")}


class SubCalls:
    """The sub-calls of one client request. Each is a ledger row of its own (``request_id`` of the client
    request plus ``.1``, ``.2``...; ``parent_id`` the client request's), and its cost, tokens, retries and
    fallbacks are added to the client request's record, whose cost the key's budget is charged."""

    def __init__(self, pipeline: Pipeline, request: web.BaseRequest, call: Call) -> None:
        self.pipeline = pipeline
        self.request = request
        self.call = call
        self._made = 0

    async def ask(self, body: dict[str, Any], group: str, json_output: bool = False) -> Answer:
        """One non-streaming answer of ``group`` to ``body``, routed and accounted like any request.
        ``json_output``: ask for a JSON object answer where the deployment's provider offers it (the caller
        still parses robustly: other deployments answer in free text)."""
        pipeline = self.pipeline
        child = self._child(group)
        try:
            response = await pipeline.route(child, group,
                                            chat_attempt(pipeline, self.request, child, body, group,
                                                         json_output))
        except ProxyError as exc:
            child.record.status, child.record.error_code = exc.status, exc.code or exc.type
            raise
        except asyncio.CancelledError:  # a consensus member past the deadline, or the client left
            child.record.status, child.record.error_code = 499, "cancelled"
            raise
        finally:
            self._settle(child)
        assert isinstance(response, web.Response) and isinstance(response.body, bytes)
        return Answer(response, answer_text(response.body))

    def _child(self, group: str) -> Call:
        parent = self.call
        self._made += 1
        record = RequestRecord(f"{parent.record.request_id}.{self._made}", "chat")
        record.parent_id = parent.record.request_id
        record.requested_model = group
        record.key_hash, record.key_alias, record.team_id = (parent.record.key_hash, parent.record.key_alias,
                                                             parent.record.team_id)
        child = Call(record, time.perf_counter_ns())
        child.caller = parent.caller
        return child

    def _settle(self, child: Call) -> None:
        record, total = child.record, self.call.record
        record.latency_ms = (time.perf_counter_ns() - child.started) / 1e6
        for name in ("cost_usd", "saved_usd", "prompt_tokens", "completion_tokens", "cached_tokens",
                     "cache_write_tokens", "retries", "fallbacks"):
            setattr(total, name, getattr(total, name) + getattr(record, name))
        self.pipeline.accounting.record_subcall(record)

    def answered_by(self, answer: Answer) -> None:
        """The record names the deployment whose answer the client gets (not the last sub-call's, which may be
        a judge's)."""
        upstream = self.pipeline.upstreams.by_id.get(answer.deployment or "")
        if upstream is not None:
            deployment = upstream.deployment
            record = self.call.record
            record.model_group, record.deployment = deployment.model_name, deployment.id
            record.provider, record.tier = deployment.provider, deployment.tier

    async def respond(self, api: ClientAPI, inbound: Inbound, answer: Answer, headers: dict[str, str],
                      extension: tuple[str, Any] | None = None) -> web.StreamResponse:
        """``answer`` in the client's API shape with ``headers`` (and the request's whole cost); ``extension``
        (a field name and value) is added to a whole answer's JSON object, for what headers cannot carry."""
        headers["x-mmproxy-cost-usd"] = cost.format_usd(self.call.record.cost_usd)
        headers["x-mmproxy-request-id"] = self.call.record.request_id  # the client request's, not the sub-call's
        body = answer.response.body
        assert isinstance(body, bytes)
        redaction = self.call.redaction
        if redaction is not None:
            # Sub-calls, judges and reviewers saw only the placeholders; the client gets its own values back.
            body = redaction.restore_json(body)
        own = {k: v for k, v in answer.response.headers.items() if k.lower().startswith("x-mmproxy-")}
        if inbound.stream:
            return await self._stream(api, inbound, body, {**own, **headers})
        if api.endpoint != "chat":
            body = api.from_chat(inbound, body)
        if extension is not None:
            document = orjson.loads(body)
            document[extension[0]] = extension[1]
            body = orjson.dumps(document) if redaction is None else redaction.restore_json(orjson.dumps(document))
        return web.Response(body=body, content_type=_JSON, headers={**own, **headers})

    async def _stream(self, api: ClientAPI, inbound: Inbound, body: bytes,
                      headers: dict[str, str]) -> web.StreamResponse:
        """A whole chat completion as a stream: chat-chunk events (a content chunk, a finish chunk, the usage
        chunk when the client asked for it or its API's events report usage, then ``[DONE]``), translated into
        the client API's events; kept in ``call.capture`` when the response cache wants the stream."""
        call, chat = self.call, inbound.chat
        assert chat is not None
        translator = api.chat_stream(inbound)
        completion = orjson.loads(body)
        choice = completion["choices"][0]
        message = choice.get("message") or {}
        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
        if message.get("tool_calls"):
            delta["tool_calls"] = [dict(c, index=i) for i, c in enumerate(message["tool_calls"])]
        base = {"id": completion.get("id"), "object": "chat.completion.chunk",
                "created": completion.get("created") or int(time.time()), "model": completion.get("model")}
        events = [dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": None}]),
                  dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason")}])]
        options = chat.get("stream_options")
        wants_usage = translator is not None or (isinstance(options, dict) and options.get("include_usage"))
        if wants_usage and completion.get("usage"):
            events.append(dict(base, choices=[], usage=completion["usage"]))
        stream = b"".join(b"data: " + orjson.dumps(event) + b"\n\n" for event in events) + b"data: [DONE]\n\n"
        if translator is not None:
            stream = translator.feed(stream)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               **headers})
        await response.prepare(self.request)
        call.record.ttft_ms = (time.perf_counter_ns() - call.started) / 1e6
        if call.capture is not None:
            call.capture.append(stream)
        await response.write(stream)
        await response.write_eof()
        return response


_CHAT = ChatCompletions()  # every sub-call is a chat completion, whatever the client's API


def chat_attempt(pipeline: Pipeline, request: web.BaseRequest, call: Call, body: dict[str, Any], group: str,
                 json_output: bool = False) -> Callable[[Upstream], Awaitable[web.StreamResponse]]:
    """One attempt of the non-streaming chat completion ``body`` on a deployment of ``group``, for
    ``pipeline.route``; the call is ``call``'s. ``json_output``: ask for a JSON object where the deployment's
    provider offers it."""
    sub = Inbound(str(body.get("model") or group), body, orjson.dumps(body), chat=body)
    sub.completion = body.get("max_completion_tokens") or body.get("max_tokens")
    as_json = _json_object(sub) if json_output else sub
    call.inbound = sub

    def attempt(upstream: Upstream) -> Awaitable[web.StreamResponse]:
        chosen = as_json if upstream.deployment.json_output else sub
        return _CHAT.attempt(pipeline, request, call, chosen, upstream, {})

    return attempt


def _json_object(sub: Inbound) -> Inbound:
    body = {**sub.body, "response_format": {"type": "json_object"}}
    variant = Inbound(sub.model, body, orjson.dumps(body), chat=body)
    variant.completion = sub.completion
    return variant


def answer_text(body: bytes) -> str:
    """The text of a chat completion's first choice; a 502 when the body is not a chat completion."""
    try:
        message = orjson.loads(body)["choices"][0]["message"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        raise ProxyError(502, "a sub-call answered something other than a chat completion",
                         type="upstream_error", code="upstream_bad_response") from None
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""
