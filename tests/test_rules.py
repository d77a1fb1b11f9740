"""mmproxy.rules: each condition alone and combined, rule order, scopes, compile errors, bad bodies.

Table-driven: each case is one rule (plus a default, so a miss is visible as the default) evaluated
against a request. Expected outcomes are written by hand from the documented syntax, not derived
from the implementation.
"""

from __future__ import annotations

import json
import threading
from types import MappingProxyType
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from mmproxy.rules import Decision, RuleSet

FALLBACK = {"name": "fallback", "route": {"tier": "economy"}}


def body(
    user: str | list[dict[str, Any]] = "hello",
    *,
    system: str | None = "You are a helpful assistant.",
    model: str = "auto",
    **extra: Any,
) -> bytes:
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": user})
    return json.dumps({"model": model, "messages": messages, **extra}).encode()


def evaluate(rules: RuleSet, request: bytes, **ctx: Any) -> Decision | None:
    """The decision alone (the gateway's ``decide`` also says what the sensitive-data conditions found)."""
    return rules.decide(request, **ctx)[0]


def hit(when: dict[str, Any], request: bytes, **ctx: Any) -> bool:
    rules = RuleSet.compile([{"name": "r", "when": when, "route": {"model": "m"}}, FALLBACK])
    decision = evaluate(rules, request, **ctx)
    assert decision is not None
    return decision.rule == "r"


CASES: list[tuple[str, dict[str, Any], bytes, dict[str, Any], bool]] = [
    # model: exact names and globs
    ("model exact", {"model": ["auto", "x"]}, body(model="auto"), {}, True),
    ("model exact miss", {"model": ["auto"]}, body(model="auto-2"), {}, False),
    ("model single string", {"model": "gpt-4o"}, body(model="gpt-4o"), {}, True),
    ("model glob prefix", {"model": ["gpt-4o*"]}, body(model="gpt-4o-mini"), {}, True),
    ("model glob suffix", {"model": ["*-mini"]}, body(model="gpt-4o-mini"), {}, True),
    ("model glob middle", {"model": ["claude-*-sonnet"]}, body(model="claude-3-5-sonnet"), {}, True),
    ("model glob miss", {"model": ["claude-*"]}, body(model="gpt-4o"), {}, False),
    ("model glob is case-sensitive", {"model": ["GPT-*"]}, body(model="gpt-4o"), {}, False),
    # token bounds (inclusive)
    ("min_tokens at bound", {"min_tokens": 200}, body(), {"input_tokens": 200}, True),
    ("min_tokens below", {"min_tokens": 200}, body(), {"input_tokens": 199}, False),
    ("max_tokens at bound", {"max_tokens": 100}, body(), {"input_tokens": 100}, True),
    ("max_tokens above", {"max_tokens": 100}, body(), {"input_tokens": 101}, False),
    ("token window", {"min_tokens": 10, "max_tokens": 20}, body(), {"input_tokens": 15}, True),
    # keywords: case-insensitive substrings, last user message by default
    ("keywords_any", {"keywords_any": ["diagnosis", "x-ray"]}, body("My DIAGNOSIS is"), {}, True),
    ("keywords_any miss", {"keywords_any": ["diagnosis"]}, body("nothing here"), {}, False),
    ("keywords substring", {"keywords_any": ["secur"]}, body("insecurity"), {}, True),
    ("keywords_all", {"keywords_all": ["alpha", "beta"]}, body("Beta then ALPHA"), {}, True),
    ("keywords_all partial", {"keywords_all": ["alpha", "beta"]}, body("alpha only"), {}, False),
    (
        "keywords_all overlapping",
        {"keywords_all": ["security", "social security"]},
        body("my social security number"),
        {},
        True,
    ),
    ("keywords unicode lowering", {"keywords_any": ["ÜBERWEISUNG"]}, body("eine überweisung"), {}, True),
    ("keywords ignore system by default", {"keywords_any": ["helpful"]}, body("hi"), {}, False),
    ("keywords in system", {"keywords_any": ["helpful"], "in": "system"}, body("hi"), {}, True),
    ("keywords in system ignores user", {"keywords_any": ["hi"], "in": "system"}, body("hi"), {}, False),
    ("keywords in any (system)", {"keywords_any": ["helpful"], "in": "any"}, body("hi"), {}, True),
    ("keywords in any (user)", {"keywords_any": ["zebra"], "in": "any"}, body("a zebra"), {}, True),
    (
        "keywords_all across scopes",
        {"keywords_all": ["helpful", "zebra"], "in": "any"},
        body("a zebra"),
        {},
        True,
    ),
    (
        "developer message is system",
        {"keywords_any": ["pirate"], "in": "system"},
        json.dumps(
            {
                "model": "m",
                "messages": [{"role": "developer", "content": "Talk like a pirate"}, {"role": "user", "content": "x"}],
            }
        ).encode(),
        {},
        True,
    ),
    (
        "only the last user message",
        {"keywords_any": ["earlier"]},
        json.dumps(
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "earlier question"},
                    {"role": "assistant", "content": "answer"},
                    {"role": "user", "content": "follow-up"},
                ],
            }
        ).encode(),
        {},
        False,
    ),
    (
        "text content parts",
        {"keywords_all": ["first", "second"]},
        body(
            [
                {"type": "text", "text": "first"},
                {"type": "image_url", "image_url": {"url": "u"}},
                {"type": "text", "text": "second"},
            ]
        ),
        {},
        True,
    ),
    # regex
    ("regex", {"regex": r"(?i)\b(def|class|fn|impl)\b"}, body("please IMPL this"), {}, True),
    ("regex word boundary", {"regex": r"\bfn\b"}, body("function"), {}, False),
    ("regex is case-sensitive by default", {"regex": "Hello"}, body("hello"), {}, False),
    ("regex unanchored", {"regex": r"\d{3}-\d{2}-\d{4}"}, body("ssn 123-45-6789 ok"), {}, True),
    ("regex in system", {"regex": "^You are", "in": "system"}, body("x"), {}, True),
    ("regex default scope is user", {"regex": "^You are"}, body("x"), {}, False),
    ("regex does not span scopes", {"regex": "assistant.\\nhi", "in": "any"}, body("hi"), {}, False),
    # flags
    ("has_tools", {"has_tools": True}, body(tools=[{"type": "function", "function": {"name": "f"}}]), {}, True),
    ("has_tools empty list", {"has_tools": True}, body(tools=[]), {}, False),
    ("has_tools legacy functions", {"has_tools": True}, body(functions=[{"name": "f"}]), {}, True),
    ("has_tools false", {"has_tools": False}, body(), {}, True),
    (
        "has_images",
        {"has_images": True},
        body(
            [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
        ),
        {},
        True,
    ),
    ("has_images absent", {"has_images": True}, body("text only"), {}, False),
    ("has_images false", {"has_images": False}, body("text only"), {}, True),
    ("json_mode object", {"json_mode": True}, body(response_format={"type": "json_object"}), {}, True),
    (
        "json_mode schema",
        {"json_mode": True},
        body(response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": {}}}),
        {},
        True,
    ),
    ("json_mode text", {"json_mode": True}, body(response_format={"type": "text"}), {}, False),
    # tags
    ("tags_any", {"tags_any": ["pii", "confidential"]}, body(metadata={"tags": ["confidential"]}), {}, True),
    ("tags_any miss", {"tags_any": ["pii"]}, body(metadata={"tags": ["public"]}), {}, False),
    ("tags_all", {"tags_all": ["a", "b"]}, body(metadata={"tags": ["b", "c", "a"]}), {}, True),
    ("tags_all partial", {"tags_all": ["a", "b"]}, body(metadata={"tags": ["a"]}), {}, False),
    ("tags absent", {"tags_any": ["a"]}, body(), {}, False),
    ("tags exact case", {"tags_any": ["PII"]}, body(metadata={"tags": ["pii"]}), {}, False),
    # headers
    ("header exact", {"headers": {"X-Env": "prod"}}, body(), {"headers": {"x-env": "prod"}}, True),
    ("header value exact", {"headers": {"X-Env": "prod"}}, body(), {"headers": {"X-Env": "Prod"}}, False),
    ("header missing", {"headers": {"X-Env": "prod"}}, body(), {"headers": {}}, False),
    (
        "header regex",
        {"headers": {"user-agent": {"regex": "^curl/"}}},
        body(),
        {"headers": [("User-Agent", "curl/8.1")]},
        True,
    ),
    (
        "headers all listed",
        {"headers": {"a": "1", "b": "2"}},
        body(),
        {"headers": [("a", "1"), ("b", "3")]},
        False,
    ),
    ("header repeated", {"headers": {"x-t": "2"}}, body(), {"headers": [("x-t", "1"), ("x-t", "2")]}, True),
    (
        "header from aiohttp's multidict, repeated",
        {"headers": {"x-t": "2"}},
        body(),
        {"headers": CIMultiDictProxy(CIMultiDict([("X-T", "1"), ("Accept", "*/*"), ("x-T", "2")]))},
        True,
    ),
    (
        "header from aiohttp's multidict, absent",
        {"headers": {"x-t": "2"}},
        body(),
        {"headers": CIMultiDictProxy(CIMultiDict([("Accept", "*/*")]))},
        False,
    ),
    (
        "header from another mapping",
        {"headers": {"X-Env": "prod"}},
        body(),
        {"headers": MappingProxyType({"X-ENV": "prod"})},
        True,
    ),
    # key / team
    ("key", {"key": ["sk-a", "sk-b"]}, body(), {"key": "sk-b"}, True),
    ("key none", {"key": ["sk-a"]}, body(), {}, False),
    ("team", {"team": ["research"]}, body(), {"team": "research"}, True),
    ("team other", {"team": ["research"]}, body(), {"team": "sales"}, False),
    # combinations
    (
        "all: every condition",
        {"model": ["auto"], "keywords_any": ["code"], "min_tokens": 5},
        body("code"),
        {"input_tokens": 5},
        True,
    ),
    (
        "all: one fails",
        {"model": ["auto"], "keywords_any": ["code"], "min_tokens": 5},
        body("code"),
        {"input_tokens": 4},
        False,
    ),
    (
        "any: one holds",
        {"tags_any": ["pii"], "keywords_any": ["diagnosis"], "match": "any"},
        body("diagnosis"),
        {},
        True,
    ),
    ("any: none holds", {"tags_any": ["pii"], "keywords_any": ["diagnosis"], "match": "any"}, body("x"), {}, False),
    ("explicit all", {"has_tools": False, "team": ["t"], "match": "all"}, body(), {"team": "t"}, True),
]


@pytest.mark.parametrize(("when", "request_body", "ctx", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_condition(when: dict[str, Any], request_body: bytes, ctx: dict[str, Any], expected: bool) -> None:
    assert hit(when, request_body, **ctx) is expected


ISSUE_RULES: list[dict[str, Any]] = [
    {
        "name": "sensitive-stays-local",
        "when": {"tags_any": ["pii", "confidential"], "keywords_any": ["social security", "diagnosis"], "match": "any"},
        "route": {"local_only": True},
    },
    {
        "name": "code-to-frontier",
        "when": {"model": ["auto"], "regex": r"(?i)\b(def|class|fn|impl)\b", "min_tokens": 200},
        "route": {"tier": "frontier"},
    },
    {"name": "tools-to-workhorse", "when": {"has_tools": True}, "route": {"model": "gpt-4o-mini"}},
    {"name": "default", "route": {"tier": "economy"}},
]


def test_issue_example_first_match_wins() -> None:
    rules = RuleSet.compile(ISSUE_RULES)
    assert len(rules) == 4
    tools = [{"type": "function", "function": {"name": "f"}}]
    # Matches rules 0, 1 and 2: the first wins.
    d = evaluate(rules, body("def f(): my diagnosis", tools=tools), input_tokens=500)
    assert d == Decision("sensitive-stays-local", 0, None, None, True, False)
    d = evaluate(rules, body("class Foo", tools=tools), input_tokens=500)
    assert d == Decision("code-to-frontier", 1, None, "frontier", False, False)
    d = evaluate(rules, body("class Foo", tools=tools), input_tokens=10)
    assert d == Decision("tools-to-workhorse", 2, "gpt-4o-mini", None, False, False)
    assert evaluate(rules, body("hello"), input_tokens=10) == Decision("default", 3, None, "economy", False, False)
    assert rules.decisions[3].tier == "economy"


def test_no_match_without_default() -> None:
    rules = RuleSet.compile([{"name": "only", "when": {"has_tools": True}, "route": {"tier": "frontier"}}])
    assert evaluate(rules, body()) is None


def test_local_only_with_tier() -> None:
    rules = RuleSet.compile([{"name": "l", "route": {"local_only": True, "tier": "workhorse"}}])
    assert evaluate(rules, body()) == Decision("l", 0, None, "workhorse", True, False)


def test_empty_rule_list_matches_nothing() -> None:
    assert evaluate(RuleSet.compile([]), body()) is None


def test_large_body_and_threads() -> None:
    """Bodies over 8 KiB are evaluated without the GIL; results must not depend on the thread."""
    rules = RuleSet.compile(ISSUE_RULES)
    big = body("x " * 50_000 + " diagnosis")
    results: list[Decision | None] = []

    def work() -> None:
        for _ in range(20):
            results.append(evaluate(rules, big))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r.rule if r else None for r in results} == {"sensitive-stays-local"}


N = 'routing_rules[0] "n": '


def one(when: Any = None, route: Any = None) -> list[dict[str, Any]]:
    """A one-rule list named "n" with the given `when` (omitted if None) and `route` (model "a" by default)."""
    rule: dict[str, Any] = {"name": "n", "route": {"model": "a"} if route is None else route}
    if when is not None:
        rule["when"] = when
    return [rule]


COMPILE_ERRORS: list[tuple[str, Any, str]] = [
    ("not a list", {"name": "x"}, "routing_rules: must be a list"),
    ("rule not a mapping", ["x"], "routing_rules[0]: must be a mapping"),
    ("empty rule", [{}], "routing_rules[0]: empty rule"),
    ("missing name", [{"route": {"model": "a"}}], "routing_rules[0]: name: missing"),
    ("missing route", [{"name": "n"}], N + "route: missing"),
    ("unknown rule key", [{"name": "n", "route": {"model": "a"}, "if": {}}], N + "if: unknown key"),
    ("unknown condition", one({"modle": ["a"]}), N + "when.modle: unknown condition"),
    ("empty when", one({}), N + "when: has no conditions"),
    ("bad regex", one({"regex": "(a"}), N + "when.regex: invalid regex"),
    ("look-around unsupported", one({"regex": "(?=a)"}), N + "when.regex: invalid regex"),
    ("bad header regex", one({"headers": {"x": {"regex": "["}}}), N + "when.headers.x: invalid regex"),
    ("bad header value", one({"headers": {"x": 1}}), N + "when.headers.x"),
    ("empty keyword list", one({"keywords_any": []}), N + "when.keywords_any"),
    ("empty keyword", one({"keywords_all": [""]}), N + "when.keywords_all"),
    ("bad scope", one({"regex": "a", "in": "body"}), N + "when.in"),
    ("scope without text condition", one({"has_tools": True, "in": "system"}), N + "when.in"),
    ("bad match", one({"has_tools": True, "match": "some"}), N + "when.match"),
    ("negative tokens", one({"min_tokens": -1}), N + "when.min_tokens"),
    ("flag not bool", one({"has_tools": "yes"}), N + "when.has_tools"),
    ("bad tier", one(route={"tier": "premium"}), N + "route.tier"),
    ("model and tier", one(route={"model": "a", "tier": "economy"}), N + "route.model"),
    ("model and local", one(route={"model": "a", "local_only": True}), N + "route.model"),
    ("local_only false", one(route={"local_only": False}), N + "route.local_only"),
    ("empty route", one(route={}), N + "route: needs one of"),
    ("unknown action", one(route={"deployment": "x"}), N + "route.deployment"),
    ("duplicate name", one() + one(), 'routing_rules[1] "n": name: duplicates routing_rules[0]'),
    (
        "later rule named",
        [FALLBACK, {"name": "bad", "when": {"regex": "+"}, "route": {"model": "a"}}],
        'routing_rules[1] "bad": when.regex',
    ),
    ("not JSON data", one(route={"model": object()}), "routing_rules: not plain YAML data"),
]


@pytest.mark.parametrize(("rules", "prefix"), [c[1:] for c in COMPILE_ERRORS], ids=[c[0] for c in COMPILE_ERRORS])
def test_compile_error(rules: Any, prefix: str) -> None:
    with pytest.raises(ValueError) as info:
        RuleSet.compile(rules)
    message = str(info.value)
    assert message.startswith(prefix), message
    assert "\n" not in message


MALFORMED = [
    b"",
    b"{",
    b"[]",
    b'"text"',
    b"{}",
    b'{"messages": {}}',
    b'{"messages": [1]}',
    b'{"model": 5, "messages": []}',
    b"\xff\xfe",
    b"[" * 100_000,
]


@pytest.mark.parametrize("bad", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_body(bad: bytes) -> None:
    rules = RuleSet.compile(ISSUE_RULES)
    with pytest.raises(ValueError):
        evaluate(rules, bad)


def test_odd_but_valid_bodies() -> None:
    """Bodies the gateway may forward: a missing model, null content, non-string tags, no user turn."""
    rules = RuleSet.compile(
        [
            {"name": "k", "when": {"keywords_any": ["x"]}, "route": {"model": "a"}},
            {"name": "t", "when": {"tags_any": ["a"]}, "route": {"model": "b"}},
            FALLBACK,
        ]
    )
    odd = {
        "messages": [{"role": "assistant", "content": None}, {"role": "tool", "content": "x"}],
        "metadata": {"tags": [1, None, "a"]},
    }
    assert evaluate(rules, json.dumps(odd).encode()) == Decision("t", 1, "b", None, False, False)
    assert evaluate(rules, b'{"messages": []}') == Decision("fallback", 2, None, "economy", False, False)
