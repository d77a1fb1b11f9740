"""Cost of a learned-routing decision, on one core: the sentence embedding of the prompt, the Rust core's prompt
features, and the classifier (the quality model's logistic regression and k-nearest-neighbour search, the cost
estimate and the policy), for a prompt of about 200 tokens and for one of the dev records' median length.

    python benches/bench_smart_routing.py [--runs 300] [--no-update-results]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import write_results_section

from mmproxy import tokens
from mmproxy._native import prompt_features
from mmproxy.cache.embedder import LocalEmbedder
from mmproxy.smart.cli import SHIPPED_ROUTER
from mmproxy.smart.model import QualityModel
from mmproxy.smart.router import LearnedRouter

ROOT = Path(__file__).resolve().parents[1]
SLICE = ROOT / "tests" / "data" / "routing_slice.jsonl"


def _prompts() -> dict[str, str]:
    """A ~200-token prompt (GSM8K problems joined) and a prompt of the dev records' median length (~60)."""
    problems = [orjson.loads(line)["prompt"] for line in SLICE.read_bytes().splitlines()][:40]
    long, short = "", ""
    for text in problems:
        if tokens.count(long) < 200:
            long = f"{long}\n{text}".strip()
        if not short and 50 <= tokens.count(text) <= 70:
            short = text
    return {f"{tokens.count(long)} tokens": long, f"{tokens.count(short)} tokens": short}


def _timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - start) / 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--no-update-results", action="store_true")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    model = QualityModel.load(SHIPPED_ROUTER)
    router = LearnedRouter(model, range(len(model.candidates)), np.array([1e-5, 2.4e-7]), np.array([3e-5, 2.4e-7]),
                           strong_share=0.5)
    embedder = LocalEmbedder()
    rows = []
    for label, prompt in _prompts().items():
        vector = embedder.embed([prompt])[0]
        cheap = np.asarray(prompt_features(prompt), dtype=np.float32)
        count = tokens.count(prompt)
        for _ in range(20):  # warm caches and ONNX Runtime's first runs
            embedder.embed([prompt])
            router.route(vector, cheap, count)
        features = _timed(lambda p=prompt: prompt_features(p), args.runs * 20)
        classify = _timed(lambda v=vector, c=cheap, n=count: router.route(v, c, n), args.runs * 5)
        embed = _timed(lambda p=prompt: embedder.embed([p]), args.runs)

        def decide(p: str = prompt) -> None:
            router.route(embedder.embed([p])[0], np.asarray(prompt_features(p), dtype=np.float32), tokens.count(p))

        whole = _timed(decide, args.runs)
        rows.append((label, features, classify, embed, whole))
    embedder.close()

    def p(values: list[float], q: float) -> float:
        return float(np.percentile(values, q))

    lines = [f"`python benches/bench_smart_routing.py --runs {args.runs}` "
             f"({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; one core, the shipped router model: "
             f"{len(model.data)} training prompts, an HNSW neighbour graph)", "",
             "| prompt | prompt features p50 | classifier p50 / p95 | embedding p50 | whole decision p50 / p95 |",
             "|---|---|---|---|---|"]
    for label, features, classify, embed, whole in rows:
        lines.append(f"| {label} | {statistics.median(features):.1f} µs "
                     f"| {p(classify, 50):.0f} / {p(classify, 95):.0f} µs | {p(embed, 50) / 1000:.2f} ms "
                     f"| {p(whole, 50) / 1000:.2f} / {p(whole, 95) / 1000:.2f} ms |")
    body = "\n".join(lines)
    print(body)
    if not args.no_update_results:
        write_results_section(body, section="## Learned routing: decision cost")


if __name__ == "__main__":
    main()
