"""The verified semantic cache on a request stream: hit rate, error rate of served hits and cost saved, over time
and in total, per error bound δ, against the best static cosine threshold at the same error rate.

The stream (``--stream``, JSON lines ``{"text", "intent"}``; default the Banking77 dev stream) is a sequence of
customer messages, each sent as the user turn under a fixed classification instruction (the system message);
the right answer is the message's intent, so reusing a cached answer is right exactly when the intents match.
The hand-written pairs (``--pairs``, JSON lines ``{"text_a", "text_b", "label"}``; default the paraphrase dev
pairs whose ``source`` is ``handmade``) become a second stream: texts joined by a positive pair share an answer,
every other text has its own, so a near miss (a negative pair) served from its partner is a wrong hit. It is
replayed after the first stream, in the same cache, as questions without the classification instruction.

Two replays: ``cache`` runs the product's decision code (``SemanticIndex``, ``VerifiedHits``, exact answer
equivalence) on the stream in one process; ``--gateway`` sends the same requests through a gateway (the
verified semantic cache in its config) whose model is the simulator replaying the right answers, and reads
``x-mmproxy-cache`` from each response. The static threshold is measured as the issue defines it: every
earlier message cached, serve the nearest one when its cosine reaches the threshold.

    python benches/bench_semantic_stream.py [--stream FILE] [--pairs FILE] [--deltas 0.01,0.02,0.05]
        [--gateway] [--limit N] [--json] [--plot FILE] [--no-update-results]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Service, free_port, python_env, write_results_section

from mmproxy import tokens
from mmproxy.cache.answers import Exact, answer_key
from mmproxy.cache.embedder import LocalEmbedder
from mmproxy.cache.semantic import SemanticEntry, SemanticIndex
from mmproxy.cache.verified import SEARCHED, VerifiedHits, workload
from mmproxy.config import CacheSettings
from mmproxy.registry import defaults_for

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "paraphrase"
INSTRUCTION = ("Classify the customer's message into one of the bank's support intents. Reply with the intent's "
               "name only.")
PRICED_AS = "gpt-4o"  # the model whose prices turn requests into dollars
WINDOW = 500  # requests per point of the over-time curves
SEED = 7


@dataclass(slots=True)
class Item:
    text: str
    answer: str
    part: str  # "stream" or "pairs"


@dataclass(slots=True)
class Served:
    """What happened to each request of a replay."""

    kinds: list[str] = field(default_factory=list)  # "semantic-hit" | "explore" | "miss" | "hit" (exact)
    right: list[bool | None] = field(default_factory=list)  # for semantic hits: the cached answer was right
    near_miss: list[bool] = field(default_factory=list)  # a semantic hit served from a negative pair's partner


def load_stream(path: Path, limit: int | None) -> list[Item]:
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return [Item(r["text"], r["intent"], "stream") for r in rows[:limit]]


def load_pairs(path: Path, source: str) -> tuple[list[Item], set[frozenset[str]]]:
    """The pairs' texts as a stream (seeded shuffle): one answer per group of texts joined by positive pairs; and
    the negative pairs."""
    pairs = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    pairs = [p for p in pairs if source == "all" or p.get("source", source) == source]
    parent: dict[str, str] = {}

    def find(t: str) -> str:
        parent.setdefault(t, t)
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    negatives = set()
    for p in pairs:
        a, b = find(p["text_a"]), find(p["text_b"])
        if p["label"] == 1:
            parent[a] = b
        else:
            negatives.add(frozenset((p["text_a"], p["text_b"])))
    texts = sorted(parent)
    groups = {root: n for n, root in enumerate(sorted({find(t) for t in texts}))}
    random.Random(SEED).shuffle(texts)
    return [Item(t, f"group-{groups[find(t)]}", "pairs") for t in texts], negatives


def embed(items: list[Item]) -> np.ndarray:
    embedder = LocalEmbedder()
    try:
        return embedder.embed([i.text for i in items])
    finally:
        embedder.close()


def settings(delta: float) -> CacheSettings:
    return CacheSettings(semantic=True, max_error_rate=delta)


async def replay_cache(items: list[Item], vectors: np.ndarray, delta: float,
                       negatives: set[frozenset[str]]) -> Served:
    """The product's decision code on the stream: the candidate, the bound's decision, the exploration's outcome
    (exact equivalence of the answers), the entry added for every request not served."""
    verified = VerifiedHits(settings(delta), Exact(), random.Random(SEED))
    contexts = {"stream": b"the classification instruction", "pairs": b"no system prompt"}
    index = SemanticIndex(vectors.shape[1], capacity=len(items) + 1)
    answers: dict[bytes, str] = {}
    texts: dict[bytes, str] = {}
    out = Served()
    for number, (item, vector) in enumerate(zip(items, vectors, strict=True)):
        context = contexts[item.part]
        found = index.search(vector, context, SEARCHED)
        key = workload("bench", context)
        candidate = verified.choose(key, " ".join(item.text.split()), found)
        if candidate is not None and candidate.decision.serve:
            served = candidate.entry.cache_key
            out.kinds.append("semantic-hit")
            out.right.append(answers[served] == item.answer)
            out.near_miss.append(frozenset((texts[served], item.text)) in negatives)
            continue
        if candidate is not None:
            cached = answers[candidate.entry.cache_key]
            await verified.learn(key, candidate, item.text, cached, item.answer)
        out.kinds.append("explore" if candidate is not None else "miss")
        out.right.append(None)
        out.near_miss.append(False)
        own = number.to_bytes(8, "big")
        answers[own], texts[own] = item.answer, item.text
        index.add(vector, SemanticEntry(" ".join(item.text.split()), context, own, 4e9, answer_key(item.answer)))
    return out


def static_nearest(vectors: np.ndarray, answers: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """For each request, the cosine of the nearest earlier one and whether its answer is the same (every earlier
    message cached; the first has none: cosine -1)."""
    n = len(vectors)
    best = np.full(n, -1.0)
    right = np.zeros(n, dtype=bool)
    labels = np.array(answers)
    for start in range(1, n, 1024):
        block = vectors[start:start + 1024] @ vectors[:start + 1024].T
        for row in range(block.shape[0]):
            i = start + row
            j = int(np.argmax(block[row, :i]))
            best[i], right[i] = block[row, j], labels[j] == labels[i]
    return best, right


def static_at(best: np.ndarray, right: np.ndarray, error: float) -> tuple[float, float | None]:
    """(hit rate, threshold) of the static threshold that serves the most while its served error is ≤ ``error``."""
    order = np.argsort(-best, kind="stable")
    wrong = np.cumsum(~right[order])
    served = np.arange(1, len(order) + 1)
    ok = np.flatnonzero((wrong / served <= error + 1e-12) & (best[order] > 0))
    if not ok.size:
        return 0.0, None
    last = int(ok.max())
    # A threshold serves every request at or above it: stop where the next cosine differs.
    return (last + 1) / len(order), float(best[order][last])


def costs(items: list[Item]) -> np.ndarray:
    price = defaults_for(PRICED_AS)
    assert price is not None and price.input_cost_per_token is not None and price.output_cost_per_token is not None
    system = tokens.count(INSTRUCTION)
    return np.array([(system + tokens.count(i.text) + 8) * price.input_cost_per_token
                     + (tokens.count(i.answer) + 1) * price.output_cost_per_token for i in items])


def summary(served: Served, items: list[Item], cost: np.ndarray, part: str) -> dict[str, float | int]:
    mask = np.array([i.part == part for i in items])
    kinds = np.array(served.kinds)[mask]
    right = np.array([r is True for r in served.right])[mask]
    hits = kinds == "semantic-hit"
    n_hits = int(hits.sum())
    return {"requests": int(mask.sum()), "hit_rate": n_hits / max(int(mask.sum()), 1),
            "error_rate": float((~right[hits]).sum() / n_hits) if n_hits else 0.0,
            "explored": int((kinds == "explore").sum()),
            "cost_saved": float(cost[mask][hits].sum() / cost[mask].sum()),
            "near_misses_served": int(np.array(served.near_miss)[mask].sum())}


def over_time(served: Served, items: list[Item]) -> list[tuple[int, float, float]]:
    """Per window of the first stream: (end, hit rate, cumulative error rate of served hits)."""
    points = []
    wrong = hits = 0
    stream = [(k, r) for k, r, i in zip(served.kinds, served.right, items, strict=True) if i.part == "stream"]
    for end in range(WINDOW, len(stream) + 1, WINDOW):
        window = stream[end - WINDOW:end]
        in_window = sum(k == "semantic-hit" for k, _ in window)
        hits += in_window
        wrong += sum(k == "semantic-hit" and r is False for k, r in window)
        points.append((end, in_window / WINDOW, wrong / hits if hits else 0.0))
    return points


async def replay_gateway(items: list[Item], delta: float, negatives: set[frozenset[str]]) -> Served:
    """The stream through a gateway whose model is the simulator replaying the right answers."""
    import aiohttp

    work = Path(tempfile.mkdtemp(prefix="mmproxy-semstream-"))
    replay = work / "answers.jsonl"
    replay.write_bytes(b"".join(orjson.dumps({"prompt": i.text, "models": {"sim-classifier": {"answer": i.answer}}})
                                + b"\n" for i in items))
    sim_port, port = free_port(), free_port()
    config = work / "config.yaml"
    config.write_text(orjson.dumps({
        "model_list": [{"model_name": "classifier", "litellm_params": {
            "model": "openai/sim-classifier", "api_base": f"http://127.0.0.1:{sim_port}/v1", "api_key": "sk-sim"}}],
        "litellm_settings": {"cache": True, "cache_params": {"type": "semantic", "max_error_rate": delta}},
    }).decode())
    sim = Service("simulator", [sys.executable, "-m", "mmproxy.simulator", "--port", str(sim_port), "--record", "0",
                                "--replay", str(replay)], port=sim_port, core=1, env=python_env(), logdir=work)
    gateway = Service("gateway", [sys.executable, "-m", "mmproxy", "serve", "--config", str(config),
                                  "--host", "127.0.0.1", "--port", str(port)],
                      port=port, core=0, env=python_env(), logdir=work)
    out = Served()
    answers: dict[str, str] = {}
    try:
        sim.wait_ready(f"http://127.0.0.1:{sim_port}/v1/models", 30)
        gateway.wait_ready(f"http://127.0.0.1:{port}/health/readiness", 60)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            for item in items:
                system = [{"role": "system", "content": INSTRUCTION}] if item.part == "stream" else []
                body = {"model": "classifier", "messages": [*system, {"role": "user", "content": item.text}]}
                async with session.post("/v1/chat/completions", json=body) as response:
                    document = await response.json()
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}: {document}")
                    kind = response.headers.get("x-mmproxy-cache", "miss")
                text = document["choices"][0]["message"]["content"]
                out.kinds.append(kind)
                out.right.append(text == item.answer if kind == "semantic-hit" else None)
                source = answers.get(text) if kind == "semantic-hit" else None
                out.near_miss.append(source is not None and frozenset((source, item.text)) in negatives)
                if kind != "semantic-hit":
                    answers.setdefault(text, item.text)
                await asyncio.sleep(0)  # the gateway learns from the exploration in the background
    finally:
        gateway.stop()
        sim.stop()
    return out


def plot(curves: dict[float, list[tuple[int, float, float]]], static: dict[float, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for delta, points in curves.items():
        x = [p[0] for p in points]
        line, = left.plot(x, [p[1] for p in points], label=f"verified, δ={delta:g}")
        left.axhline(static[delta], color=line.get_color(), linestyle=":", linewidth=1)
        right.plot(x, [p[2] for p in points], color=line.get_color(), label=f"δ={delta:g}")
        right.axhline(delta, color=line.get_color(), linestyle="--", linewidth=1)
    left.set(xlabel="requests", ylabel=f"hit rate per {WINDOW} requests",
             title="hit rate (dotted: static threshold at the same error)")
    right.set(xlabel="requests", ylabel="error rate of served hits so far", title="error of served hits (dashed: δ)")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", type=Path, default=SHARED / "banking77-stream-dev.jsonl")
    parser.add_argument("--pairs", type=Path, default=SHARED / "dev.jsonl")
    parser.add_argument("--pairs-source", default="handmade", help="the pairs' source field to keep, or 'all'")
    parser.add_argument("--deltas", default="0.01,0.02,0.05")
    parser.add_argument("--limit", type=int, help="the first N messages of the stream only")
    parser.add_argument("--gateway", action="store_true", help="also replay through a gateway and the simulator")
    parser.add_argument("--json", action="store_true", help="print the totals as JSON")
    parser.add_argument("--plot", type=Path, default=ROOT / "benches" / "semantic_stream.png")
    parser.add_argument("--no-update-results", action="store_true")
    args = parser.parse_args()
    deltas = [float(d) for d in args.deltas.split(",")]
    stream = load_stream(args.stream, args.limit)
    pair_items, negatives = load_pairs(args.pairs, args.pairs_source)
    items = stream + pair_items
    vectors = embed(items)
    cost = costs(items)
    stream_mask = np.array([i.part == "stream" for i in items])
    best, right = static_nearest(vectors[stream_mask], [i.answer for i in stream])
    totals: dict[str, dict[str, dict[str, float | int | None]]] = {}
    curves, static_lines = {}, {}
    rows = []
    replays = ["cache", "gateway"] if args.gateway else ["cache"]
    for delta in deltas:
        for mode in replays:
            served = (asyncio.run(replay_cache(items, vectors, delta, negatives)) if mode == "cache"
                      else asyncio.run(replay_gateway(items, delta, negatives)))
            main_part, pairs_part = summary(served, items, cost, "stream"), summary(served, items, cost, "pairs")
            static_hits, threshold = static_at(best, right, float(main_part["error_rate"]))
            static_delta, threshold_delta = static_at(best, right, delta)
            totals.setdefault(mode, {})[f"{delta:g}"] = {
                **main_part, "static_hit_rate": static_hits, "static_threshold": threshold,
                "static_hit_rate_at_delta": static_delta, "static_threshold_at_delta": threshold_delta,
                "pairs_hit_rate": pairs_part["hit_rate"], "pairs_error_rate": pairs_part["error_rate"],
                "pairs_near_misses_served": pairs_part["near_misses_served"]}
            if mode == "cache":
                curves[delta], static_lines[delta] = over_time(served, items), static_hits
            ratio = (f"{main_part['hit_rate'] / static_hits:.1f}x" if static_hits
                     else "no static threshold")
            rows.append(f"| {mode} | {delta:g} | {main_part['hit_rate']:.1%} | {main_part['error_rate']:.2%} | "
                        f"{main_part['cost_saved']:.1%} | {main_part['explored']} | "
                        f"{static_hits:.1%}" + (f" (≥ {threshold:.3f})" if threshold is not None else "") +
                        f" | {ratio} | {static_delta:.1%} | {pairs_part['hit_rate']:.1%} / "
                        f"{pairs_part['error_rate']:.1%} / {pairs_part['near_misses_served']} |")
    if args.json:
        print(orjson.dumps(totals, option=orjson.OPT_INDENT_2).decode())
    plot(curves, static_lines, args.plot)
    command = "python benches/bench_semantic_stream.py" + (" --gateway" if args.gateway else "") + (
        f" --limit {args.limit}" if args.limit else "") + (f" --deltas {args.deltas}" if args.deltas != "0.01,0.02,0.05"
                                                           else "")
    shown = args.plot.relative_to(ROOT) if args.plot.is_relative_to(ROOT) else args.plot
    body = "\n".join([
        f"`{command}` ({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {len(stream):,} messages of "
        f"{args.stream.name}, then {len(pair_items)} texts of {args.pairs.name} ({args.pairs_source}) in the same "
        f"cache; costs at {PRICED_AS}'s prices; curves: `{shown}`)",
        "",
        "| replay | δ | hit rate | error of served hits | cost saved | explored "
        "| static threshold at that error: hit rate | verified / static | static at δ "
        "| pairs: hit rate / error / near misses served |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    print(body)
    if not args.no_update_results:
        write_results_section(body, section="## Verified semantic cache: the Banking77 stream")


if __name__ == "__main__":
    main()
