"""The sensitive-data detectors: CPU per prompt at 2 KB and 100 KB, precision and recall on the generated
labelled corpus (``pii_corpus.py``), and findings on real prompts that hold no personal data.

    python benches/bench_pii.py [--routing-records PATH] [--paraphrase PATH]

Speed: prompts built from real text (the routing records' prompts and answers when given, else the corpus's
sentences) with a card number, an e-mail address and a key inside, timed through ``PiiDetector.scan`` as the
gateway calls it (the binding included), median of many runs. Targets (issue 18): 10 µs at 2 KB, 200 µs at
100 KB; precision at least 0.99 for cards, IBANs and key formats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from mmproxy._native import PiiDetector

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pii_corpus import corpus, score

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
_PLANTED = " Card 4111 1111 1111 1111, mail jane.doe@example.com, key sk-proj-Q2x9LmT4vB8nR1kZ7wY3pD6s. "


def _real_texts(paths: list[Path]) -> list[str]:
    texts: list[str] = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            texts.extend(v for v in row.values() if isinstance(v, str) and len(v) > 20)
    return texts


def _prompt(texts: list[str], size: int) -> str:
    out, at = [], 0
    while sum(map(len, out)) < size:
        out.append(texts[at % len(texts)])
        at += 1
    text = "\n".join(out)[: size - len(_PLANTED)]
    middle = len(text) // 2
    return text[:middle] + _PLANTED + text[middle:]


def _time_us(detector: PiiDetector, text: str, runs: int) -> float:
    for _ in range(10):
        detector.scan(text)
    samples = []
    for _ in range(runs):
        began = time.perf_counter_ns()
        detector.scan(text)
        samples.append((time.perf_counter_ns() - began) / 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routing-records", type=Path, default=_SHARED / "routing" / "dev.jsonl")
    parser.add_argument("--paraphrase", type=Path, default=_SHARED / "paraphrase" / "dev.jsonl")
    args = parser.parse_args()
    detector = PiiDetector()
    real = _real_texts([args.routing_records, args.paraphrase])
    samples = corpus(seed=7, per_kind=500, negatives=3000)
    texts = real or [text for text, _ in samples]

    print("| prompt | scan, µs (median) | findings |")
    print("|---|---|---|")
    for size, runs in ((2 * 1024, 5000), (100 * 1024, 300)):
        text = _prompt(texts, size)
        print(f"| {size // 1024} KB | {_time_us(detector, text, runs):.1f} | {len(detector.scan(text))} |")

    print("\n| kind | precision | recall | labelled | found |")
    print("|---|---|---|---|---|")
    for kind, s in sorted(score(detector.scan, samples).items()):
        labelled, found = int(s["tp"] + s["fn"]), int(s["tp"] + s["fp"])
        print(f"| {kind} | {s['precision']:.4f} | {s['recall']:.4f} | {labelled} | {found} |")

    if real:
        findings = [f for text in real for f in detector.scan(text)]
        megabytes = sum(map(len, real)) / 1e6
        print(f"\nReal prompts without personal data ({len(real):,} texts, {megabytes:.1f} MB): "
              f"{len(findings)} findings" + (f" {sorted({f[0] for f in findings})}" if findings else ""))


if __name__ == "__main__":
    main()
