"""Review by personas as a virtual model: reviewers (security, performance, architecture, or a prompt of the
operator's), each on its own model, read the client's request in parallel and report findings; the client gets one
merged report, as text (the answer's content, highest severity first) and as JSON (the ``x_mmproxy_review`` field
of a whole answer). Reviewers on different models fail independently, so one's blind spot is another's finding.

A reviewer's findings are read from its JSON (``{"findings": [{"severity", "title", "detail", "location"}]}``,
also in a code fence or prose); a reply without it becomes one ``info`` finding holding the reply. A reviewer
that fails or misses the deadline is listed as missing; the others' findings still go out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from mmproxy.config import Persona, ReviewSettings
from mmproxy.errors import ProxyError
from mmproxy.pipeline.apis import ClientAPI, Inbound
from mmproxy.pipeline.call import Call
from mmproxy.pipeline.subcalls import Answer, MultiCallKind, SubCalls

if TYPE_CHECKING:
    pass

log = logging.getLogger("mmproxy")

SEVERITY_ORDER = ("critical", "high", "medium", "low", "info")
_FORMAT = ('Report your findings as a JSON object only: {"findings": [{"severity": "critical", "high", "medium", '
           '"low" or "info", "title": "<short>", "detail": "<what and why, and the fix>", "location": "<file, '
           'function or line, when there is one>"}]}; an empty list when you find nothing.')
PROMPTS = {
    "security": "You are a security reviewer. Find vulnerabilities: injection, authentication and authorisation "
                "flaws, secrets in code, unsafe deserialisation, missing input validation, data exposure.",
    "performance": "You are a performance reviewer. Find what is slow or wasteful: algorithmic complexity, "
                   "needless allocations or copies, blocking calls on hot paths, N+1 queries, missing caching.",
    "architecture": "You are a software architecture reviewer. Find design problems: unclear responsibilities, "
                    "tight coupling, duplicated logic, leaky abstractions, error handling, testability.",
}


class Reviewing(MultiCallKind[ReviewSettings]):
    what = "a review"

    def worst_cost(self, name: str, prompt: int, completion: int | None) -> float:
        return sum(self._most(p.model, prompt, completion) for p in self._settings[name].personas)

    async def answer(self, settings: ReviewSettings, calls: SubCalls, api: ClientAPI, inbound: Inbound,
                     body: dict[str, Any], headers: dict[str, str]) -> web.StreamResponse:
        target, call = settings.model_name, calls.call
        # The reviewers read what the user asked to have reviewed; the persona's instructions replace the
        # application's system prompt.
        conversation = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") != "system"]
        loop = asyncio.get_running_loop()
        tasks = {loop.create_task(calls.ask(_persona_body(body, p, conversation), p.model, json_output=True)): p
                 for p in settings.personas}
        done, pending = await asyncio.wait(tasks, timeout=settings.deadline)
        for task in pending:
            task.cancel()
        findings: list[dict[str, Any]] = []
        missing = [tasks[t].name for t in pending]
        for task in done:
            persona = tasks[task]
            if task.exception() is not None:
                log.warning("request %s: reviewer %s failed: %s", call.record.request_id, persona.name,
                            task.exception())
                missing.append(persona.name)
                continue
            findings += [dict(f, persona=persona.name, model=persona.model) for f in parse_findings(task.result().text)]
        if len(missing) == len(settings.personas):
            raise ProxyError(502, f"review {target!r}: no reviewer answered", type="upstream_error",
                             code="review_failed")
        findings.sort(key=lambda f: SEVERITY_ORDER.index(f["severity"]))
        report = {"findings": findings, "missing": sorted(missing),
                  "personas": [p.name for p in settings.personas]}
        call.record.decision = orjson.dumps({"review": target, "findings": len(findings),
                                             "missing": report["missing"]}).decode()
        counts = {s: sum(f["severity"] == s for f in findings) for s in SEVERITY_ORDER}
        headers["x-mmproxy-review-findings"] = ",".join(f"{s}={n}" for s, n in counts.items() if n) or "none"
        if missing:
            headers["x-mmproxy-review-missing"] = ",".join(sorted(missing))
        answer = Answer(_completion(target, render(report), call), "")
        call.record.model_group = target
        return await calls.respond(api, inbound, answer, headers, ("x_mmproxy_review", report))


def _persona_body(body: dict[str, Any], persona: Persona, conversation: list[dict[str, Any]]) -> dict[str, Any]:
    instructions = f"{persona.prompt or PROMPTS[persona.name]}\n\n{_FORMAT}"
    return {**body, "model": persona.model, "messages": [{"role": "system", "content": instructions},
                                                          *conversation]}


def parse_findings(reply: str) -> list[dict[str, Any]]:
    """A reviewer's findings, each with severity, title, detail and location (None when not given)."""
    start, end = reply.find("{"), reply.rfind("}")
    raw: Any = None
    if 0 <= start < end:
        try:
            raw = orjson.loads(reply[start:end + 1])
        except orjson.JSONDecodeError:
            raw = None
    items = raw.get("findings") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        text = reply.strip()
        return [{"severity": "info", "title": "unstructured review", "detail": text, "location": None}] if text else []
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        severity = str(item.get("severity", "info")).lower()
        location = item.get("location")
        out.append({"severity": severity if severity in SEVERITY_ORDER else "info",
                    "title": str(item.get("title") or "").strip() or "finding",
                    "detail": str(item.get("detail") or "").strip(),
                    "location": str(location) if location not in (None, "") else None})
    return out


def render(report: dict[str, Any]) -> str:
    """The merged report as Markdown: one line per finding, highest severity first."""
    findings = report["findings"]
    lines = [f"Review by {', '.join(report['personas'])}: {len(findings)} finding{'s' * (len(findings) != 1)}."]
    for f in findings:
        where = f" ({f['location']})" if f["location"] else ""
        lines.append(f"- [{f['severity']}] {f['persona']} ({f['model']}): {f['title']}{where}"
                     + (f" — {f['detail']}" if f["detail"] else ""))
    if report["missing"]:
        lines.append(f"No review from: {', '.join(report['missing'])}.")
    return "\n".join(lines)


def _completion(model: str, text: str, call: Call) -> web.Response:
    """The merged report as a chat completion, its usage the reviewers' together."""
    record = call.record
    body = {"id": f"chatcmpl-{record.request_id}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens,
                      "total_tokens": record.prompt_tokens + record.completion_tokens}}
    return web.Response(body=orjson.dumps(body), content_type="application/json")
