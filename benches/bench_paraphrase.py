"""Semantic-cache quality: precision and recall of the hit decision (mmproxy.cache.matcher) on labelled pairs.

Why: a semantic cache that serves a near miss ("°F to °C" for "°C to °F") returns a wrong answer, so
precision is what matters; recall is the saving. Data: the paraphrase dev set (2,710 pairs; see its
README): Banking77 pairs (same intent = 1, random other intent = 0) and hand-written groups (paraphrases
= 1, near misses of named kinds = 0). For each pair, text_a is the incoming question and text_b the
cached one (the decision is symmetric, so the other way round gives the same table). Cosines come from
the default embedder (all-MiniLM-L6-v2 int8, mmproxy.cache.embedder); decisions from `accept` with the
default MatchSettings, and, for comparison, from the cosine alone at the same thresholds.

Overfitting guard: the pairs are split by group, `int(sha256(group)[:8], 16) % 2` (0 = "tune",
1 = "check"). The defaults (threshold, reworded_threshold) and the rules and word lists of
rust/src/nearmiss/ were designed while reading the tune half's pairs only. The check half's texts were
never read; its error counts by near-miss kind and verdict were looked at twice during development and
led to general rules (answer-type wh-words, implicit negation words, two words trading places), not to
threshold changes. For the synonym check (matcher.accept_async), the check half's verdict counts by cosine band,
and the kinds and scores (not texts) of its pairs scoring above 0.6, were read after its bound was tuned, and
led to leaving it off by default. So the check half is nearly, not perfectly, blind; the holdout split of the data
set (kept elsewhere, 1,127 pairs) is the blind test: run the bench on it with --data.

    python benches/bench_paraphrase.py               # rewrites "## Semantic cache quality" in RESULTS.md
    python benches/bench_paraphrase.py --print-only  # prints only
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import shlex
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmproxy import _native
from mmproxy.cache.embedder import FORWARD_ROWS, LocalEmbedder
from mmproxy.cache.matcher import MatchSettings, accept, accept_async, synonyms, verdict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RESULTS_MD, machine, write_results_section

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "paraphrase" / "dev.jsonl"
SECTION = "## Semantic cache quality"
PIN_CORE = 1
# Synonym bounds compared: the one the tune half allows with the widest margin, and one above every
# swapped entity in hand-written tests ("Monday"/"Friday" 0.79). The default leaves the check off.
SYNONYM_BOUNDS = (0.67, 0.8)
TARGETS = {"banking77": "precision ≥ 0.99", "handmade": "precision ≥ 0.95, recall ≥ 0.5"}


@dataclass
class Pair:
    source: str
    kind: str
    label: int
    query: str
    cached: str
    half: str
    cosine: float = 0.0
    synonym: float = -1.0  # word-alignment score where the text check alone refuses (-1: not asked)


def load(path: Path) -> list[Pair]:
    pairs = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        half = "tune" if int(hashlib.sha256(r["group"].encode()).hexdigest()[:8], 16) % 2 == 0 else "check"
        pairs.append(Pair(r["source"], r["kind"], int(r["label"]), r["text_a"], r["text_b"], half))
    return pairs


def score(pairs: list[Pair], decide: Callable[[Pair], bool]) -> tuple[str, str, str]:
    """(precision, recall, near misses accepted) as table cells."""
    accepted = [p for p in pairs if decide(p)]
    tp = sum(p.label for p in accepted)
    positives = sum(p.label for p in pairs)
    negatives = len(pairs) - positives
    precision = f"{tp / len(accepted):.3f}" if accepted else "n/a"
    recall = f"{tp / positives:.3f}" if positives else "n/a"
    return precision, recall, f"{len(accepted) - tp} / {negatives}"


def per_call_us(fn: Callable[[], object], min_s: float = 0.5) -> float:
    """Median over 5 rounds of the mean µs per call."""
    fn()
    samples = []
    for _ in range(5):
        n, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < min_s / 5:
            fn()
            n += 1
        samples.append(elapsed / n * 1e6)
    return statistics.median(samples)


def latencies(embedder: LocalEmbedder, questions: list[str], rounds: int = 5) -> tuple[float, float, float]:
    """ms per question for the same questions: one at a time, in one `embed` batch, and asked by
    concurrent `embed_one` callers (which the embedder batches). Median over rounds."""

    async def concurrently() -> None:
        await asyncio.gather(*(embedder.embed_one(q) for q in questions))

    def single() -> None:
        for q in questions:
            embedder.embed([q])

    ways: list[Callable[[], object]] = [single, lambda: embedder.embed(questions), lambda: asyncio.run(concurrently())]
    medians = []
    for way in ways:
        way()
        samples = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            way()
            samples.append((time.perf_counter() - t0) * 1e3 / len(questions))
        medians.append(statistics.median(samples))
    return medians[0], medians[1], medians[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled pairs (JSON lines)")
    parser.add_argument("--print-only", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--core", type=int, default=PIN_CORE, help="CPU to pin to (-1: no pinning)")
    args = parser.parse_args()
    host = machine()  # before pinning, so nproc reports the machine rather than the affinity mask
    pinned = hasattr(os, "sched_setaffinity") and args.core in os.sched_getaffinity(0)
    if pinned:
        os.sched_setaffinity(0, {args.core})

    pairs = load(args.data)
    embedder = LocalEmbedder()
    texts = sorted({t for p in pairs for t in (p.query, p.cached)})
    vectors = embedder.embed(texts)
    row = {t: i for i, t in enumerate(texts)}
    for p in pairs:
        p.cosine = float(vectors[row[p.query]] @ vectors[row[p.cached]])

    settings = MatchSettings()
    for p in pairs:
        if p.cosine >= settings.threshold and not accept(p.query, p.cached, p.cosine, settings):
            _, only_q, only_c = _native.near_miss_words(p.query, p.cached)
            if only_q and only_c:
                vq, vc = embedder.word_vectors([p.query, p.cached])
                p.synonym = synonyms(only_q, vq, only_c, vc)
    asked = [p for p in pairs if p.synonym >= 0]
    syn_pair = asked[len(asked) // 2]
    synonym_settings = MatchSettings(synonym_threshold=SYNONYM_BOUNDS[0])
    words_ms = per_call_us(lambda: embedder.word_vectors([syn_pair.query, syn_pair.cached])) / 1e3
    async_ms = per_call_us(
        lambda: asyncio.run(accept_async(syn_pair.query, syn_pair.cached, syn_pair.cosine, synonym_settings, embedder))
    ) / 1e3
    questions = [p.query for p in pairs if p.source == "handmade"][::8][:32]
    words = statistics.mean(len(q.split()) for q in questions)
    single_ms, batch_ms, together_ms = latencies(embedder, questions)
    verdicts = {id(p): verdict(p.query, p.cached) for p in pairs}
    # a median-length pair that reaches the text check (cosine above the threshold)
    candidates = sorted((p for p in pairs if p.cosine >= settings.threshold), key=lambda p: len(p.query + p.cached))
    typical = candidates[len(candidates) // 2]
    verify_us = per_call_us(lambda: verdict(typical.query, typical.cached))
    accept_us = per_call_us(lambda: accept(typical.query, typical.cached, typical.cosine, settings))
    embedder.close()
    long_query = "Summarise the attached design document and list open questions. " * 60
    long_us = per_call_us(lambda: verdict(long_query + "Python", long_query + "Java"))
    t0 = time.perf_counter()
    for p in pairs:
        verdict(p.query, p.cached)
    all_us = (time.perf_counter() - t0) * 1e6 / len(pairs)

    methods: list[tuple[str, Callable[[Pair], bool]]] = [
        (f"cosine ≥ {settings.threshold}", lambda p: p.cosine >= settings.threshold),
        (f"cosine ≥ {settings.reworded_threshold}", lambda p: p.cosine >= settings.reworded_threshold),
        ("**verified (default)**", lambda p: accept(p.query, p.cached, p.cosine, settings)),
        *(
            (f"verified + synonyms ≥ {bound}", lambda p, b=bound: accept(p.query, p.cached, p.cosine, settings)
             or p.synonym >= b)
            for bound in SYNONYM_BOUNDS
        ),
    ]
    rows = [
        "| pairs | subset | +/- | decision | precision | recall | near misses accepted |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for half in ("tune", "check", "all"):
        for source in ("banking77", "handmade"):
            subset = [p for p in pairs if p.source == source and half in ("all", p.half)]
            if not subset:
                continue
            pos = sum(p.label for p in subset)
            for name, decide in methods:
                precision, recall, fp = score(subset, decide)
                rows.append(
                    f"| {half} | {source} | {pos}/{len(subset) - pos} | {name} | {precision} | {recall} | {fp} |"
                )

    kinds = Counter(p.kind for p in pairs if p.source == "handmade" and p.label == 0)
    kind_rows = [
        "| near-miss kind (hand-written, whole file) | pairs | accepted by cosine ≥ "
        f"{settings.threshold} | accepted verified |",
        "| --- | ---: | ---: | ---: |",
    ]
    for kind, n in kinds.most_common():
        subset = [p for p in pairs if p.source == "handmade" and p.kind == kind]
        by_cos = sum(p.cosine >= settings.threshold for p in subset)
        verified = sum(accept(p.query, p.cached, p.cosine, settings) for p in subset)
        kind_rows.append(f"| {kind} | {n} | {by_cos} | {verified} |")
    why = Counter(verdicts[id(p)] for p in pairs if p.source == "handmade" and p.label == 1)
    refusals = ", ".join(f"{k} {v}" for k, v in why.most_common())

    command = "python benches/bench_paraphrase.py" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        data = args.data.resolve().relative_to(ROOT.parent)
    except ValueError:
        data = args.data
    placement = f"Pinned to CPU {args.core}" if pinned else "Not pinned"
    section = "\n".join(
        [
            f"Command: `{command}`",
            "",
            f"Date: {now}. Machine: {host}. {placement}. Data: `{data}` ({len(pairs):,} pairs). "
            f"Targets: Banking77 {TARGETS['banking77']}; hand-written {TARGETS['handmade']} (recall on "
            f"the paraphrases). Defaults: {settings}.",
            "",
            "Tune/check: halves split by a hash of the group; thresholds, rules and word lists were designed "
            "on the tune half (the check half's texts were not read; see the bench's docstring). Cosine-only "
            "rows use the same embedder and thresholds without the text check. \"+ synonyms ≥ b\" rows add "
            "`accept_async`'s check (off by default): every content word only one side has must find a "
            "counterpart on the other side with a contextual word cosine ≥ b. b = 0.67 was the widest-margin "
            "bound on the tune half; its check-half rows were then read, so 0.8 (chosen from hand-written "
            "entity swaps, not the data) is not a blind figure.",
            "",
            *rows,
            "",
            *kind_rows,
            "",
            f"Text-check verdicts on the hand-written paraphrases (whole file): {refusals}. "
            "A `same` verdict needs cosine ≥ threshold, `reworded` needs cosine ≥ reworded_threshold; "
            "anything else is refused.",
            "",
            "| cost | figure |",
            "| --- | ---: |",
            f"| embed {len(questions)} questions ({words:.0f} words on average) one at a time | "
            f"{single_ms:.2f} ms per question |",
            f"| the same in one `embed` call ({FORWARD_ROWS} per forward pass) | {batch_ms:.2f} ms per question |",
            f"| the same from {len(questions)} concurrent `embed_one` callers | {together_ms:.2f} ms per question |",
            f"| text check `near_miss_verdict`, median-length pair ({len(typical.query) + len(typical.cached)} chars) "
            f"| {verify_us:.1f} µs |",
            f"| `accept` (cosine given), same pair | {accept_us:.1f} µs |",
            f"| text check, mean over the dev pairs | {all_us:.1f} µs |",
            f"| text check, two 4 KB prompts differing in the last word | {long_us:.0f} µs |",
            f"| synonym check: contextual word vectors of a median candidate pair (forward pass of both texts) "
            f"| {words_ms:.2f} ms |",
            f"| `accept_async` with the synonym check, same pair (incl. a fresh event loop and thread hop) "
            f"| {async_ms:.2f} ms |",
            f"| pairs that reach the synonym check (cosine ≥ threshold, refused by the text alone for changed "
            f"words only) | {len(asked)} of {len(pairs)} |",
        ]
    )
    print(section)
    if not args.print_only:
        write_results_section(section, section=SECTION)
        print(f"updated {SECTION} in {RESULTS_MD}", file=sys.stderr)


if __name__ == "__main__":
    main()
