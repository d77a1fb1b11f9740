"""Verification as a virtual model: a generator answers, a verifier on another model checks the answer seeing only
the user's question and the answer (never the generator's system prompt or other context: a model reviewing its
own context grows more confident, not more correct), and returns a verdict. On a rejection, per config: answer
with the verdict (``flag``), ask the generator once more with the verifier's critique and verify again
(``regenerate``), or ask a stronger group (``escalate``).

The verdict reaches the client in ``x-mmproxy-verdict`` (accept, reject, or unverified when the verifier's
reply held no verdict), ``x-mmproxy-verdict-reasons``, ``x-mmproxy-verdict-severity`` and
``x-mmproxy-verify-action``, and in a whole answer's ``x_mmproxy_verdict`` field. A streaming client gets the
answer as a stream once it is verified.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from mmproxy.config import VerifySettings
from mmproxy.errors import ProxyError
from mmproxy.headers import header_text
from mmproxy.pipeline.apis import ClientAPI, Inbound, last_user_text
from mmproxy.pipeline.subcalls import Answer, MultiCallKind, SubCalls, answer_allowance
from mmproxy.smart.agreement import parse_verdict, verifier_prompt

if TYPE_CHECKING:
    pass

VERDICT_MAX_TOKENS = 400

log = logging.getLogger("mmproxy")


class Verifying(MultiCallKind[VerifySettings]):
    what = "a verified model"

    def worst_cost(self, name: str, prompt: int, completion: int | None) -> float:
        settings = self._settings[name]
        answer = answer_allowance(completion)
        generate = self._most(settings.generator, prompt, completion)
        verify = self._most(settings.verifier, prompt + answer, VERDICT_MAX_TOKENS)
        if settings.on_reject == "regenerate":  # a second answer, with the first and the critique, verified again
            again = self._most(settings.generator, prompt + answer + VERDICT_MAX_TOKENS, completion)
            return generate + verify + again + verify
        if settings.on_reject == "escalate":
            assert settings.escalate_to is not None
            return generate + verify + self._most(settings.escalate_to, prompt, completion)
        return generate + verify

    async def answer(self, settings: VerifySettings, calls: SubCalls, api: ClientAPI, inbound: Inbound,
                     body: dict[str, Any], headers: dict[str, str]) -> web.StreamResponse:
        target, call = settings.model_name, calls.call
        question = last_user_text(body.get("messages") or [])
        answer = await calls.ask(body, settings.generator)
        verdict = await self._verify(calls, settings, question, answer.text)
        action = "none"
        if verdict["verdict"] == "reject" and settings.on_reject != "flag":
            try:
                if settings.on_reject == "regenerate":
                    second = await calls.ask(_with_critique(body, answer.text, verdict), settings.generator)
                    verdict, answer = await self._verify(calls, settings, question, second.text), second
                    action = "regenerated"
                else:
                    assert settings.escalate_to is not None
                    answer, action = await calls.ask(body, settings.escalate_to), "escalated"
            except ProxyError as exc:  # the first answer is paid for: it goes out, flagged
                action = f"{settings.on_reject}_failed"
                log.warning("request %s: %s: %s failed (%s); answering with the flagged first answer",
                            call.record.request_id, target, settings.on_reject, exc.code or exc.type)
        elif verdict["verdict"] == "reject":
            action = "flagged"
        return await self._respond(calls, api, inbound, settings, answer, verdict, action, headers)

    async def _verify(self, calls: SubCalls, settings: VerifySettings, question: str,
                      answer: str) -> dict[str, Any]:
        body = {"model": settings.verifier, "temperature": 0, "max_tokens": VERDICT_MAX_TOKENS,
                "messages": verifier_prompt(question, answer)}
        try:
            reply = await calls.ask(body, settings.verifier, json_output=True)
        except ProxyError as exc:  # the answer is paid for: it goes out, marked unverified
            return {"verdict": "unverified", "reasons": [f"the verifier failed ({exc.code or exc.type})"],
                    "severity": None}
        verdict = parse_verdict(reply.text)
        if verdict is None:  # a malformed verdict is not a rejection: the answer goes out marked unverified
            return {"verdict": "unverified", "reasons": ["the verifier's reply held no verdict"], "severity": None}
        return verdict

    @staticmethod
    async def _respond(calls: SubCalls, api: ClientAPI, inbound: Inbound, settings: VerifySettings, answer: Answer,
                       verdict: dict[str, Any], action: str, headers: dict[str, str]) -> web.StreamResponse:
        calls.answered_by(answer)
        extension = {**verdict, "action": action, "verifier": settings.verifier}
        calls.call.record.decision = orjson.dumps({"verify": settings.model_name, **extension}).decode()
        headers["x-mmproxy-verdict"] = str(verdict["verdict"])
        if verdict["reasons"]:
            headers["x-mmproxy-verdict-reasons"] = header_text("; ".join(verdict["reasons"]))
        if verdict["severity"]:
            headers["x-mmproxy-verdict-severity"] = str(verdict["severity"])
        headers["x-mmproxy-verify-action"] = action
        return await calls.respond(api, inbound, answer, headers, ("x_mmproxy_verdict", extension))


def _with_critique(body: dict[str, Any], answer: str, verdict: dict[str, Any]) -> dict[str, Any]:
    """The client's request once more, with the first answer and the verifier's reasons to correct it by."""
    reasons = "\n".join(f"- {r}" for r in verdict["reasons"]) or "- (no reason given)"
    critique = (f"A reviewer found problems with that answer:\n{reasons}\n"
                "Answer the original question again, correcting them.")
    messages = [*body.get("messages", []), {"role": "assistant", "content": answer},
                {"role": "user", "content": critique}]
    return {**body, "messages": messages}
