"""Native-core benchmark: mmproxy._native against tiktoken and a pure-Python canonical hash.

Why: the gateway counts tokens and hashes every request on its hot path, so the native core must be
at least as fast as the reference libraries it replaces. Every figure is the median over rounds of
the mean time per call; each round runs every compared call repeatedly for a fixed time, in turn, so
load from other processes hits them alike. Single thread, pinned to one core when possible. Texts
are built deterministically from the Python standard library (English docs, source code) and a
fixed CJK/multilingual corpus below, so runs are comparable.

    python benches/bench_native.py           # full run, rewrites the "## Native core" section of RESULTS.md
    python benches/bench_native.py --quick   # a few seconds, prints only
"""

# ruff: noqa: RUF001 -- the CJK and multilingual corpora are meant to contain non-ASCII look-alikes

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import json
import os
import random
import shlex
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import tiktoken
import tiktoken_ext.openai_public as openai_public
import xxhash
from tiktoken.load import load_tiktoken_bpe

from mmproxy import _native

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RESULTS_MD, machine, write_results_section

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "rust" / "assets"
SECTION = "## Native core"
PIN_CORE = 1

CJK_PARAGRAPHS = [
    "人工智能技术的发展正在改变软件开发的方式。大型语言模型可以理解自然语言，生成代码，回答问题，"
    "并帮助开发者完成重复性的工作。然而，模型的推理成本仍然很高，因此在网关层面进行缓存、限流和路由非常重要。",
    "我们的服务每天处理数百万个请求，每个请求都需要计算输入的令牌数量，以便执行预算控制和速率限制。"
    "如果计数太慢，就会增加延迟；如果计数不准确，就会导致费用超支或者请求被错误地拒绝。",
    "東京の天気は今日は晴れですが、午後から雨が降るかもしれません。傘を持って出かけることをお勧めします。"
    "週末には気温が下がり、紅葉がきれいに見られるでしょう。",
    "このライブラリは、テキストをトークンに分割し、その数を高速に数えるために設計されています。"
    "日本語、中国語、韓国語などの文字も正しく処理できます。",
    "서울의 가을은 맑고 선선한 날씨가 이어집니다. 많은 사람들이 주말에 공원이나 산으로 나들이를 갑니다. "
    "이 시스템은 요청마다 토큰 수를 계산하여 비용을 관리합니다.",
    "게이트웨이는 여러 모델 제공자 사이에서 요청을 분산하고, 실패한 요청을 다시 시도하며, 응답을 캐시합니다.",
]
MULTILINGUAL = [
    "Привет, мир! Это пример текста на русском языке с ЗАГЛАВНЫМИ буквами.",
    "Καλημέρα σας· η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",
    "مرحبا بالعالم، هذا نص تجريبي باللغة العربية مع أرقام ١٢٣٤٥.",
    "यह हिन्दी में एक उदाहरण वाक्य है, जिसमें मात्राएँ और संयुक्ताक्षर हैं।",
    "Crème brûlée, naïve façade, Ångström — “quoted” text… 👩‍💻🚀🇯🇵 👍🏽 ❤️",
]
SHORT_MESSAGE = (
    "Hi! Could you summarise the attached quarterly report in three short bullet points? Focus on "
    "revenue growth, the two biggest risks, and anything that changed since last quarter. Keep it "
    "under eighty words, please."
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- inputs ---------------------------------------------------------------------------------------


def english_text(size: int) -> str:
    import pydoc_data.topics

    text = "\n\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
    return text[:size]


def code_text(size: int) -> str:
    modules = ("inspect", "argparse", "subprocess", "statistics", "json.decoder")
    return "".join(inspect.getsource(importlib.import_module(m)) for m in modules)[:size]


def cjk_text(size: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    sentences = [s + "。" for p in CJK_PARAGRAPHS for s in p.replace(". ", "。").split("。") if s]
    out: list[str] = []
    total = 0
    while total < size:
        out.append(rng.choice(sentences) + ("\n" if rng.random() < 0.15 else ""))
        total += len(out[-1].encode())
    return "".join(out).encode()[:size].decode(errors="ignore")


def mixed_text(size: int) -> str:
    rng = random.Random(2)
    sources = [english_text(400_000), code_text(300_000), cjk_text(200_000), "\n".join(MULTILINGUAL * 400)]
    out: list[str] = []
    total = 0
    while total < size:
        src = rng.choice(sources)
        start = rng.randrange(0, max(1, len(src) - 4000))
        chunk = src[start : start + rng.randint(500, 4000)] + "\n"
        out.append(chunk)
        total += len(chunk.encode())
    return "".join(out).encode()[:size].decode(errors="ignore")


def texts(quick: bool) -> dict[str, str]:
    return {
        "short chat message": SHORT_MESSAGE,
        "4 KB English": english_text(4096),
        "64 KB code": code_text(65536),
        "64 KB CJK": cjk_text(65536),
        "1 MB mixed": mixed_text(1 << 18 if quick else 1 << 20),
    }


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": f"tool_{i}",
            "description": f"Tool number {i}: looks things up in system {i} and returns JSON.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What to look up."},
                    "limit": {"type": "integer", "description": "Max results."},
                    "mode": {"type": "string", "enum": ["fast", "exact", "fuzzy"], "description": "Search mode."},
                },
                "required": ["query"],
            },
        },
    }
    for i in range(8)
]


def chat_bodies() -> dict[str, bytes]:
    english = english_text(200_000)
    rng = random.Random(3)
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a helpful assistant."}]
    for i in range(49):
        start = rng.randrange(0, len(english) - 600)
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": english[start : start + 400]})
    small = {"model": "gpt-4o", "messages": [{"role": "user", "content": SHORT_MESSAGE}], "temperature": 0.2}
    large = {"model": "gpt-4o", "messages": messages, "tools": TOOLS, "temperature": 0.2, "stream": True, "user": "u"}
    return {"small (1 message)": json.dumps(small).encode(), "large (50 messages, 8 tools)": json.dumps(large).encode()}


# --- baselines ------------------------------------------------------------------------------------


def reference_encoding(name: str) -> tiktoken.Encoding:
    """tiktoken with its own pat_str and the vendored vocab (offline), no special tokens."""

    def local(_url: str, expected_hash: str) -> dict[bytes, int]:
        return load_tiktoken_bpe(str(ASSETS / f"{name}.tiktoken"), expected_hash=expected_hash)

    # An empty TIKTOKEN_CACHE_DIR stops tiktoken from copying the local file into its cache.
    no_cache = mock.patch.dict(os.environ, {"TIKTOKEN_CACHE_DIR": ""})
    with mock.patch.object(openai_public, "load_tiktoken_bpe", local), no_cache:
        spec = openai_public.ENCODING_CONSTRUCTORS[name]()
    return tiktoken.Encoding(
        name=name, pat_str=spec["pat_str"], mergeable_ranks=spec["mergeable_ranks"], special_tokens={}
    )


IGNORED = tuple(_native.IGNORED_FIELDS)


def python_request_hash(body: bytes, namespace: str = "") -> str:
    """The pure-Python equivalent: orjson with sorted keys, the same field removal, xxh3-128."""
    obj = orjson.loads(body)
    for field in IGNORED:
        obj.pop(field, None)
    ns = namespace.encode()
    return xxhash.xxh3_128_hexdigest(struct.pack("<Q", len(ns)) + ns + orjson.dumps(obj, option=orjson.OPT_SORT_KEYS))


# --- timing ---------------------------------------------------------------------------------------


def per_call(fns: dict[str, Callable[[], object]], rounds: int, round_s: float) -> dict[str, float]:
    """Median over rounds of the mean seconds per call of each function. Rounds interleave the
    functions, so that load from other processes on a shared machine hits them alike."""
    batch = {}
    for name, fn in fns.items():
        fn()
        t0 = time.perf_counter()
        fn()
        batch[name] = max(1, int(round_s / max(time.perf_counter() - t0, 1e-7)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            n = batch[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n)
    return {name: statistics.median(times) for name, times in samples.items()}


def warm_cost() -> float:
    """Seconds `warm()` takes in a fresh interpreter (both vocabularies)."""
    code = (
        "import time; from mmproxy import _native as n; "
        "t = time.perf_counter(); n.warm(); print(time.perf_counter() - t)"
    )
    runs = [float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(5)]
    return statistics.median(runs)


# --- report ---------------------------------------------------------------------------------------


def fmt_rate(tokens: int, seconds: float) -> str:
    return f"{tokens / seconds / 1e6:.1f} M"


def token_tables(quick: bool, rounds: int, round_s: float) -> list[str]:
    lines: list[str] = []
    inputs = texts(quick)
    for name in ("o200k_base", "cl100k_base"):
        ref = reference_encoding(name)
        lines += [
            f"### Token counting, {name} (tokens/s, higher is better)",
            "",
            "| text | bytes | tokens | tiktoken `encode` | tiktoken `encode_ordinary` | `count_tokens` | `encode` "
            "| `count_tokens` speed-up vs `encode` | vs `encode_ordinary` |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for label, text in inputs.items():
            n = len(ref.encode_ordinary(text))
            assert _native.count_tokens(text, name) == n, f"count mismatch on {label}"
            t = per_call(
                {
                    "enc": lambda t=text, r=ref: r.encode(t),
                    "ord": lambda t=text, r=ref: r.encode_ordinary(t),
                    "count": lambda t=text, e=name: _native.count_tokens(t, e),
                    "ours": lambda t=text, e=name: _native.encode(t, e),
                },
                rounds,
                round_s,
            )
            lines.append(
                f"| {label} | {len(text.encode()):,} | {n:,} | {fmt_rate(n, t['enc'])} | {fmt_rate(n, t['ord'])} "
                f"| {fmt_rate(n, t['count'])} | {fmt_rate(n, t['ours'])} | {t['enc'] / t['count']:.1f}x "
                f"| {t['ord'] / t['count']:.1f}x |"
            )
            log(lines[-1])
        lines.append("")
    return lines


def hash_tables(rounds: int, round_s: float) -> list[str]:
    lines = [
        "### Request hashing and chat counting (µs per call, lower is better)",
        "",
        "| body | bytes | Python orjson+xxh3 | `request_hash` | speedup | `prefix_hashes` | `count_chat_tokens` |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, body in chat_bodies().items():
        t = per_call(
            {
                "py": lambda b=body: python_request_hash(b),
                "rs": lambda b=body: _native.request_hash(b),
                "prefix": lambda b=body: _native.prefix_hashes(b),
                "chat": lambda b=body: _native.count_chat_tokens(b, "gpt-4o"),
            },
            rounds,
            round_s,
        )
        lines.append(
            f"| {label} | {len(body):,} | {t['py'] * 1e6:.2f} | {t['rs'] * 1e6:.2f} | {t['py'] / t['rs']:.1f}x "
            f"| {t['prefix'] * 1e6:.2f} | {t['chat'] * 1e6:.2f} |"
        )
        log(lines[-1])
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short rounds, 256 KB mixed text, print only")
    parser.add_argument("--no-pin", action="store_true", help=f"do not pin to CPU {PIN_CORE}")
    args = parser.parse_args()
    rounds, round_s = (3, 0.03) if args.quick else (7, 0.25)
    command = shlex.join(["python", *sys.argv])
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    host = machine()
    pinned = "not pinned"
    if not args.no_pin and hasattr(os, "sched_setaffinity") and PIN_CORE in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {PIN_CORE})
        pinned = f"pinned to CPU {PIN_CORE}"

    warm_s = warm_cost()
    lines = [
        f"Command: `{command}` ({pinned}; median of {rounds} rounds of ≥{round_s:g} s per figure)  ",
        f"Date: {started}  ",
        f"Machine: {host}  ",
        f"Versions: mmproxy._native {_native.__version__}, tiktoken {tiktoken.__version__}, orjson "
        f"{orjson.__version__}, xxhash {xxhash.VERSION}",
        "",
        "Texts: English from the stdlib's pydoc topics, code from stdlib sources, CJK sentences shuffled "
        "(seeded), mixed = random chunks of all of these plus other scripts and emoji. tiktoken runs "
        "offline on the vendored vocabularies with its own `pat_str`. Counts are asserted equal first.",
        "",
        f"`warm()` (build both rank maps, fresh process): {warm_s * 1e3:.0f} ms.",
        "",
    ]
    lines += token_tables(args.quick, rounds, round_s)
    lines += hash_tables(rounds, round_s)
    report = "\n".join(lines)
    print(report)
    if args.quick:
        log("--quick: RESULTS.md not updated")
    else:
        write_results_section(report, section=SECTION)
        log(f"updated {SECTION} in {RESULTS_MD}")


if __name__ == "__main__":
    main()
