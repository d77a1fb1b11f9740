"""Routing-rule benchmark: the native matcher (mmproxy.rules) against an equivalent pure-Python loop.

Why: the gateway evaluates the rules on every request, and the target is a decision over 200 rules
in at most 5 µs. Both sides get what the gateway's handler passes (the raw body bytes, aiohttp's
request headers as a CIMultiDictProxy, the key, team and input tokens) and do the whole job: parse
the body (the Python side with orjson, the fastest parser the gateway has), extract what rules read,
and try rules in order. The rule mix is realistic (model globs, keywords, regexes, tags, headers,
key/team, token bounds, flags, `any` rules) and the request matches only the second-to-last rule, so
every rule before it is tried: the worst case short of no match. The Python baseline (below) uses
`re` and lower-cased `in`, compiled once. Figures are the median over rounds of the mean time per
call; rounds interleave the two sides. Single thread, pinned to one core when possible.

    python benches/bench_rules.py           # full run, rewrites the "## Routing rules" section of RESULTS.md
    python benches/bench_rules.py --quick   # a few seconds, prints only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from mmproxy.rules import Decision, RuleSet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RESULTS_MD, machine, write_results_section

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Routing rules"
PIN_CORE = 1


# --- rules and requests ----------------------------------------------------------------------------


def make_rules(n: int) -> list[dict[str, Any]]:
    """`n` rules: n-2 that miss the benchmark request, one that hits it, and a default."""
    kinds: list[Callable[[int], dict[str, Any]]] = [
        lambda i: {"model": [f"tenant{i}-*", f"legacy-model-{i}"]},
        lambda i: {"keywords_any": [f"project falcon {i}", f"codename{i}"]},
        lambda i: {"regex": rf"(?i)\bticket-{i}-\d+\b"},
        lambda i: {"tags_any": [f"team-{i}", f"cost-center-{i}"]},
        lambda i: {"headers": {"x-tenant": f"tenant-{i}"}},
        lambda i: {"key": [f"sk-live-{i}"], "min_tokens": 100},
        lambda i: {"model": ["auto"], "keywords_all": [f"invoice {i}", "refund"], "max_tokens": 4000},
        lambda i: {"keywords_any": [f"persona {i}"], "in": "system"},
        lambda i: {"has_images": True, "team": [f"vision-{i}"]},
        lambda i: {"tags_any": [f"pii-{i}"], "regex": rf"\b{i}\d{{2}}-\d{{2}}-\d{{4}}\b", "match": "any"},
    ]
    routes = [{"tier": "frontier"}, {"tier": "workhorse"}, {"model": "gpt-4o-mini"}, {"local_only": True}]
    rules = [
        {"name": f"rule-{i}", "when": kinds[i % len(kinds)](i), "route": routes[i % len(routes)]} for i in range(n - 2)
    ]
    rules.append(
        {
            "name": "code-to-frontier",
            "when": {"model": ["auto", "gpt-*"], "regex": r"(?i)\b(def|class|fn|impl)\b", "min_tokens": 200},
            "route": {"tier": "frontier"},
        }
    )
    rules.append({"name": "default", "route": {"tier": "economy"}})
    return rules


def make_body(user_chars: int) -> bytes:
    question = (
        "I have a Python service that parses invoices and I keep getting a KeyError when the vendor "
        "field is missing. Here is the function, can you make it robust and explain the change?\n\n"
        "def parse_invoice(doc):\n    vendor = doc['vendor']\n    total = sum(l['amount'] for l in doc['lines'])\n"
        "    return {'vendor': vendor, 'total': total}\n"
    )
    user = (question * (user_chars // len(question) + 1))[:user_chars]
    return json.dumps(
        {
            "model": "auto",
            "messages": [
                {"role": "system", "content": "You are a senior engineer. Answer concisely, with code."},
                {"role": "user", "content": "Hi, quick question about our billing code."},
                {"role": "assistant", "content": "Sure, what do you need?"},
                {"role": "user", "content": user},
            ],
            "temperature": 0.2,
            "metadata": {"tags": ["billing", "prod"]},
        }
    ).encode()


# What the gateway's handler passes: aiohttp's request headers (a CIMultiDictProxy; here the headers
# the OpenAI Python SDK sends), the caller's key and team, and the counted input tokens.
HEADERS = CIMultiDictProxy(
    CIMultiDict(
        [
            ("Host", "127.0.0.1:4000"),
            ("Accept-Encoding", "gzip, deflate"),
            ("Connection", "keep-alive"),
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
            ("User-Agent", "OpenAI/Python 1.50.0"),
            ("X-Stainless-Lang", "python"),
            ("X-Stainless-Package-Version", "1.50.0"),
            ("X-Stainless-OS", "Linux"),
            ("X-Stainless-Arch", "x64"),
            ("X-Stainless-Runtime", "CPython"),
            ("X-Stainless-Runtime-Version", "3.11.7"),
            ("Authorization", "Bearer sk-live-abc"),
            ("X-Stainless-Async", "false"),
            ("X-Stainless-Retry-Count", "0"),
            ("X-Tenant", "acme"),
            ("Content-Length", "658"),
        ]
    )
)
KEY, TEAM, TOKENS = "sk-live-abc", "payments", 350


# --- the pure-Python baseline ----------------------------------------------------------------------


def _glob(pattern: str) -> Callable[[str], bool]:
    if "*" not in pattern:
        return pattern.__eq__
    rx = re.compile("".join(".*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", pattern)))
    return lambda s: rx.fullmatch(s) is not None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") in ("text", "input_text") and "text" in p
        )
    return ""


class PyRules:
    """The same semantics as the native matcher, written the straightforward way."""

    def __init__(self, rules: list[dict[str, Any]]) -> None:
        self.rules = [(r["name"], i, self._compile(r.get("when"))) for i, r in enumerate(rules)]

    @staticmethod
    def _compile(when: dict[str, Any] | None) -> tuple[bool, list[Callable[[dict[str, Any]], bool]]]:
        if not when:
            return False, []
        scope = when.get("in", "last_user")
        texts = {"last_user": ("user",), "system": ("system",), "any": ("system", "user")}[scope]
        conds: list[Callable[[dict[str, Any]], bool]] = []
        for k, v in when.items():
            if k == "model":
                globs = [_glob(p) for p in v]
                conds.append(lambda f, g=globs: any(m(f["model"]) for m in g))
            elif k == "min_tokens":
                conds.append(lambda f, n=v: f["tokens"] >= n)
            elif k == "max_tokens":
                conds.append(lambda f, n=v: f["tokens"] <= n)
            elif k in ("keywords_any", "keywords_all"):
                words = [w.lower() for w in v]
                test = all if k == "keywords_all" else any
                conds.append(lambda f, w=words, t=test, s=texts: t(any(x in f[s_ + "_l"] for s_ in s) for x in w))
            elif k == "regex":
                rx = re.compile(v)
                conds.append(lambda f, r=rx, s=texts: any(r.search(f[s_]) for s_ in s))
            elif k in ("has_tools", "has_images", "json_mode"):
                conds.append(lambda f, k=k, want=v: f[k] == want)
            elif k in ("tags_any", "tags_all"):
                test = all if k == "tags_all" else any
                conds.append(lambda f, tags=v, t=test: t(x in f["tags"] for x in tags))
            elif k == "headers":
                wants = [(n.lower(), re.compile(w["regex"]) if isinstance(w, dict) else w) for n, w in v.items()]

                def headers(f: dict[str, Any], wants: list[tuple[str, Any]] = wants) -> bool:
                    h = f["headers"]
                    return all(
                        any(w.search(x) if isinstance(w, re.Pattern) else w == x for x in h.get(n, ()))
                        for n, w in wants
                    )

                conds.append(headers)
            elif k in ("key", "team"):
                conds.append(lambda f, k=k, allowed=frozenset(v): f[k] in allowed)
        return when.get("match") == "any", conds

    def evaluate(
        self, body: bytes, *, headers: CIMultiDictProxy[str], key: str | None, team: str | None, input_tokens: int
    ) -> tuple[str, int] | None:
        req = orjson.loads(body)
        system: list[str] = []
        user = ""
        images = False
        for m in req["messages"]:
            content = m.get("content")
            if isinstance(content, list):
                images = images or any(p.get("type") in ("image_url", "input_image", "image") for p in content)
            role = m.get("role")
            if role in ("system", "developer"):
                system.append(_text(content))
            elif role == "user":
                user = _text(content)
        hmap: dict[str, list[str]] = {}
        for n, v in headers.items():
            hmap.setdefault(n.lower(), []).append(v)
        sys_text = "\n".join(t for t in system if t)
        facts = {
            "model": req.get("model") or "",
            "tokens": input_tokens,
            "user": user,
            "system": sys_text,
            "user_l": user.lower(),
            "system_l": sys_text.lower(),
            "has_tools": bool(req.get("tools") or req.get("functions")),
            "has_images": images,
            "json_mode": (req.get("response_format") or {}).get("type") in ("json_object", "json_schema"),
            "tags": set((req.get("metadata") or {}).get("tags") or ()),
            "headers": hmap,
            "key": key,
            "team": team,
        }
        for name, index, (match_any, conds) in self.rules:
            if not conds or (any(c(facts) for c in conds) if match_any else all(c(facts) for c in conds)):
                return name, index
        return None


# --- timing and report -----------------------------------------------------------------------------


def per_call(fns: dict[str, Callable[[], object]], rounds: int, round_s: float) -> dict[str, float]:
    """Median over rounds of the mean seconds per call; rounds interleave the functions."""
    batch = {}
    for name, fn in fns.items():
        fn()
        t0 = time.perf_counter()
        for _ in range(10):
            fn()
        batch[name] = max(1, int(round_s / max((time.perf_counter() - t0) / 10, 1e-8)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            n = batch[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n)
    return {name: statistics.median(times) for name, times in samples.items()}


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short rounds, print only")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one core")
    args = parser.parse_args()
    rounds, round_s = (3, 0.05) if args.quick else (args.rounds, 0.3)
    host = machine()  # before pinning, so nproc reports the machine rather than the affinity mask
    if not args.no_pin and hasattr(os, "sched_setaffinity") and PIN_CORE in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {PIN_CORE})

    rows = [
        "| rules | body | bytes | compile (ms) | Rust `RuleSet.evaluate` (µs) | Python loop (µs) | speed-up |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in (10, 200):
        spec = make_rules(n)
        t0 = time.perf_counter()
        native = RuleSet.compile(spec)
        compile_ms = (time.perf_counter() - t0) * 1e3
        py = PyRules(spec)
        for label, size in (("short chat (4 messages)", 300), ("8 KB last user message", 8_000)):
            body = make_body(size)
            expect = ("code-to-frontier", n - 2)
            d = native.evaluate(body, headers=HEADERS, key=KEY, team=TEAM, input_tokens=TOKENS)
            assert isinstance(d, Decision) and (d.rule, d.index) == expect, d
            assert py.evaluate(body, headers=HEADERS, key=KEY, team=TEAM, input_tokens=TOKENS) == expect
            t = per_call(
                {
                    "rust": lambda b=body, r=native: r.evaluate(
                        b, headers=HEADERS, key=KEY, team=TEAM, input_tokens=TOKENS
                    ),
                    "py": lambda b=body, r=py: r.evaluate(b, headers=HEADERS, key=KEY, team=TEAM, input_tokens=TOKENS),
                },
                rounds,
                round_s,
            )
            rows.append(
                f"| {n} | {label} | {len(body):,} | {compile_ms:.2f} | {us(t['rust'])} | {us(t['py'])} "
                f"| {t['py'] / t['rust']:.1f}x |"
            )
            print(rows[-1], file=sys.stderr, flush=True)

    command = "python benches/bench_rules.py" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = "\n".join(
        [
            f"Command: `{command}`",
            "",
            f"Date: {now}. Machine: {host}. Pinned to one core; median of {rounds} rounds of the mean time per call.",
            "",
            "Whole decision per request, from what the gateway's handler passes (raw body bytes, aiohttp's "
            "request headers as a CIMultiDictProxy, key, team, input tokens): parse, extract, evaluate rules "
            "in order. The request matches only the second-to-last rule (worst case short of no match); the mix covers "
            "model globs, keywords, regexes, tags, headers, key/team, token bounds, flags and `any` rules "
            "(see benches/bench_rules.py). Python loop: orjson + `re` + lower-cased `in`, compiled once.",
            "",
            *rows,
        ]
    )
    print(section)
    if not args.quick:
        write_results_section(section, section=SECTION)
        print(f"updated {SECTION} in {RESULTS_MD}", file=sys.stderr)


if __name__ == "__main__":
    main()
