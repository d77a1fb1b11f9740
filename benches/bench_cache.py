"""Response-cache storage benchmark: the semantic index at 100,000 entries, and the exact store's get/set.

Why: a semantic lookup runs on every request that missed the exact cache, so it has to stay under 1 ms
at full capacity on one core while finding a true duplicate whenever exact search would (a missed
duplicate is a lost saving). The index holds random unit vectors (dim 384, like the local MiniLM) plus
paraphrase clusters (5 members around a centre, 0.85-0.95 from it, so 0.72-0.9 from each other); each
query is planted at cosine 0.8-1.0 from one entry, half of them from cluster members whose siblings
compete. Ground truth is exact inner-product search (``faiss.IndexFlatIP``). Recall counts queries whose
true nearest neighbour has cosine ≥ 0.8: strict (the same entry) and tie-tolerant (an entry within 1e-3
of the best cosine, which no threshold can tell apart). Latency is one ``SemanticIndex.search`` call
per query, as the gateway makes them, without the embedding. With ``--alternatives`` (on by default
in a full run) the FAISS index types that were not chosen are measured on the same data.

The exact-store figures are per call from one asyncio task (uvloop): MemoryStore as the handler calls it,
RedisStore against a throwaway ``redis-server`` on another core over loopback.

    python benches/bench_cache.py            # full run, rewrites the "## Cache" section of RESULTS.md
    python benches/bench_cache.py --quick    # 20,000 entries, no alternatives, prints only
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import redis
import uvloop

from mmproxy.cache.answers import Exact
from mmproxy.cache.error_bound import features
from mmproxy.cache.semantic import SemanticEntry, SemanticIndex
from mmproxy.cache.store import CachedResponse, MemoryStore, RedisStore
from mmproxy.cache.verified import SEARCHED, VerifiedHits
from mmproxy.config import CacheSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RESULTS_MD, free_port, machine, write_results_section

SECTION = "## Cache"
PIN_CORE, REDIS_CORE = 1, 0
DIM = 384
CLUSTER = 5
RECALL_FROM = 0.8
TIE = 1e-3


# --- data ------------------------------------------------------------------------------------------


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def around(anchors: np.ndarray, cosines: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at exactly ``cosines`` from the unit ``anchors``."""
    noise = rng.standard_normal(anchors.shape, dtype=np.float32)
    noise = unit(noise - (noise * anchors).sum(1, keepdims=True) * anchors)
    return unit(anchors * cosines[:, None] + noise * np.sqrt(1 - cosines**2)[:, None])


def dataset(n: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clustered = n // 10 // CLUSTER * CLUSTER
    centres = np.repeat(unit(rng.standard_normal((clustered // CLUSTER, DIM), dtype=np.float32)), CLUSTER, axis=0)
    members = around(centres, rng.uniform(0.85, 0.95, clustered).astype(np.float32), rng)
    base = np.concatenate([unit(rng.standard_normal((n - clustered, DIM), dtype=np.float32)), members])
    anchors = np.concatenate([rng.integers(0, n - clustered, queries // 2),
                              rng.integers(n - clustered, n, queries - queries // 2)])
    return base, around(base[anchors], rng.uniform(RECALL_FROM, 1.0, queries).astype(np.float32), rng)


def entry(i: int, expires: float) -> SemanticEntry:
    return SemanticEntry(f"normalised user question number {i}, about as long as a typical one", b"",
                         i.to_bytes(16, "big"), expires)


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# --- semantic index ---------------------------------------------------------------------------------


@dataclass
class Data:
    base: np.ndarray
    queries: np.ndarray
    truth: np.ndarray  # id of each query's true nearest neighbour, by exact search
    truth_cos: np.ndarray

    @classmethod
    def make(cls, n: int, queries: int) -> Data:
        base, q = dataset(n, queries)
        exact = faiss.IndexFlatIP(DIM)
        exact.add(base)
        cos, ids = exact.search(q, 1)
        return cls(base, q, ids[:, 0], cos[:, 0])

    def recall(self, found: list[int]) -> tuple[float, float]:
        """(strict, tie-tolerant) over the queries whose true neighbour is at cosine ≥ RECALL_FROM."""
        sel = np.flatnonzero(self.truth_cos >= RECALL_FROM)
        strict = sum(found[i] == self.truth[i] for i in sel)
        tied = sum(found[i] >= 0 and float(self.base[found[i]] @ self.queries[i]) >= self.truth_cos[i] - TIE
                   for i in sel)
        return strict / len(sel), tied / len(sel)

    @property
    def counted(self) -> int:
        return int(np.count_nonzero(self.truth_cos >= RECALL_FROM))


def row(name: str, data: Data, times: list[tuple[float, float]], found: list[int], inserts_per_s: float | None
        ) -> str:
    """One table row; ``times`` holds (wall, thread CPU) seconds per lookup."""
    wall, cpu = (np.array(column) * 1e3 for column in zip(*times, strict=True))
    strict, tied = data.recall(found)
    rate = f"{inserts_per_s:,.0f}" if inserts_per_s else "—"
    line = (f"| {name} | {np.percentile(wall, 50):.3f} | {np.percentile(wall, 99):.3f} | {np.percentile(cpu, 99):.3f} "
            f"| {strict:.4f} | {tied:.4f} | {rate} |")
    print(line, file=sys.stderr, flush=True)
    return line


def bench_chosen(data: Data) -> str:
    n = len(data.base)
    expires = time.time() + 86_400
    gc.collect()
    index = SemanticIndex(DIM, n)
    t0 = time.perf_counter()
    for i in range(n):
        index.add(data.base[i], entry(i, expires))
    inserts_per_s = n / (time.perf_counter() - t0)
    found, times = [], []
    for q in data.queries:
        t0, c0 = time.perf_counter(), time.thread_time()
        hits = index.search(q, b"", k=4)
        times.append((time.perf_counter() - t0, time.thread_time() - c0))
        found.append(int.from_bytes(hits[0][0].cache_key, "big") if hits else -1)
    return row("**chosen: SimHash 512 bits, FAISS Hamming scan, exact re-rank of 64**", data, times, found,
               inserts_per_s)


def bench_verified(data: Data) -> str:
    """The verified semantic cache's whole lookup after the embedding: the search for the neighbours, the
    near-miss check of the candidate, its features and the bound's decision (a certified bound)."""
    n = len(data.base)
    expires = time.time() + 86_400
    text = "how do i change the pin of my card in the app"
    index = SemanticIndex(DIM, n)
    for i in range(n):
        index.add(data.base[i], SemanticEntry(text, b"", i.to_bytes(16, "big"), expires, f"s:intent {i % 77}"))
    verified = VerifiedHits(CacheSettings(semantic=True, max_error_rate=0.05), Exact(), random.Random(0))
    bound = verified.bound("bench")
    rng = np.random.default_rng(1)
    for _ in range(2000):  # outcomes that certify a cutoff: right more often the closer the prompt
        cosine, agreement = rng.uniform(0.7, 1.0), rng.random()
        x = features([cosine], [True], None)
        x[1] = agreement
        bound.observe(x, bool(rng.random() < min(1.0, 0.5 + 2 * (cosine - 0.7) + 0.3 * agreement)))
    bound.refit()
    assert bound.cutoff is not None
    found, times = [], []
    for q in data.queries:
        t0, c0 = time.perf_counter(), time.thread_time()
        candidate = verified.choose("bench", text, index.search(q, b"", SEARCHED))
        times.append((time.perf_counter() - t0, time.thread_time() - c0))
        found.append(int.from_bytes(candidate.entry.cache_key, "big") if candidate is not None else -1)
    return row(f"verified cache: search of {SEARCHED}, near-miss check, features, decision", data, times, found,
               None)


def bench_faiss(name: str, index: faiss.Index, data: Data, inserts_per_s: float | None) -> str:
    found, times = [], []
    for q in data.queries:
        t0, c0 = time.perf_counter(), time.thread_time()
        _, ids = index.search(q[None, :], 4)
        times.append((time.perf_counter() - t0, time.thread_time() - c0))
        found.append(int(ids[0, 0]))
    return row(name, data, times, found, inserts_per_s)


def timed_add(index: faiss.Index, base: np.ndarray) -> float:
    t0 = time.perf_counter()
    index.add(base)
    return len(base) / (time.perf_counter() - t0)


def bench_alternatives(data: Data) -> list[str]:
    flat = faiss.IndexFlatIP(DIM)
    rows = [bench_faiss("`IndexFlatIP` (exact)", flat, data, timed_add(flat, data.base))]
    del flat
    for m in (16, 32):
        hnsw = faiss.IndexHNSWFlat(DIM, m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 40
        rate = timed_add(hnsw, data.base)
        for ef in (32, 64, 128):
            hnsw.hnsw.efSearch = ef
            rows.append(bench_faiss(f"`IndexHNSWFlat` M={m}, efSearch={ef}", hnsw, data, rate))
        del hnsw
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, 1024, faiss.METRIC_INNER_PRODUCT)
    ivf.train(data.base[:50_000])
    rate = timed_add(ivf, data.base)
    for nprobe in (8, 32):
        ivf.nprobe = nprobe
        rows.append(bench_faiss(f"`IndexIVFFlat` 1024 lists, nprobe={nprobe} (trained on this data)", ivf, data,
                                rate))
    return rows


def bench_memory(per: int = 10_000) -> dict[str, float]:
    """Bytes per ``per`` entries: the arrays' touched pages and the metadata objects, RSS, and on disk."""
    base, _ = dataset(per, 2, seed=1)
    expires = time.time() + 86_400
    gc.collect()
    rss0 = rss_bytes()
    index = SemanticIndex(DIM, 100_000, Path(tempfile.mkdtemp()) / "bench.semidx")
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(per):
        index.add(base[i], entry(i, expires))
    python_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    rss = rss_bytes() - rss0
    arrays = per * (index._codes.itemsize * index._codes.shape[1] + index._vectors.itemsize * DIM
                    + index._expires.itemsize + index._stamps.itemsize)
    index.save()
    assert index.path is not None
    on_disk = index.path.stat().st_size
    shutil.rmtree(index.path.parent)
    return {"arrays": arrays, "python": python_bytes, "rss": rss, "disk": on_disk}


def bench_load(n: int) -> tuple[float, float]:
    """Seconds to save and to load a full index."""
    base, _ = dataset(n, 2, seed=2)
    expires = time.time() + 86_400
    index = SemanticIndex(DIM, n, Path(tempfile.mkdtemp()) / "bench.semidx")
    for i in range(n):
        index.add(base[i], entry(i, expires))
    t0 = time.perf_counter()
    index.save()
    save_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert index.path is not None
    loaded = SemanticIndex.load(DIM, n, index.path)
    load_s = time.perf_counter() - t0
    assert len(loaded) == n
    shutil.rmtree(index.path.parent)
    return save_s, load_s


# --- exact store --------------------------------------------------------------------------------------


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is required (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(["taskset", "-c", str(REDIS_CORE), server, "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc, url
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)


Timing = tuple[float, float]  # (wall, CPU) seconds per call


async def per_call_async(fn: Callable[[], Awaitable[object]], rounds: int, calls: int) -> Timing:
    """Median over rounds of the mean wall and CPU seconds per awaited call."""
    for _ in range(min(calls, 200)):
        await fn()
    samples = []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            await fn()
        samples.append(((time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls))
    return statistics.median(w for w, _ in samples), statistics.median(c for _, c in samples)


def per_call(fn: Callable[[], object], rounds: int, calls: int) -> Timing:
    fn()
    samples = []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            fn()
        samples.append(((time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls))
    return statistics.median(w for w, _ in samples), statistics.median(c for _, c in samples)


async def store_figures(value: CachedResponse, memory: MemoryStore, shared: RedisStore, rounds: int,
                        calls: int) -> dict[str, Timing]:
    """Seconds per call of each store operation on ``value``, among 1,000 entries of its kind."""
    keys = [os.urandom(16) for _ in range(1000)]
    for k in keys:
        memory.set_now(k, value, 3600)
        await shared.set(k, value, 3600)
    hit, miss, data = keys[17], os.urandom(16), value.encode()
    redis_calls = max(calls // 20, 200)
    return {
        "`CachedResponse.encode`": per_call(value.encode, rounds, calls),
        "`CachedResponse.decode`": per_call(lambda: CachedResponse.decode(data), rounds, calls),
        "`MemoryStore.get_now` (hit)": per_call(lambda: memory.get_now(hit), rounds, calls),
        "`MemoryStore.get_now` (miss)": per_call(lambda: memory.get_now(miss), rounds, calls),
        "`await MemoryStore.get` (hit)": await per_call_async(lambda: memory.get(hit), rounds, calls),
        "`await MemoryStore.set` (replace)": await per_call_async(lambda: memory.set(hit, value, 3600), rounds,
                                                                  calls),
        "`await RedisStore.get` (hit, incl. decode)": await per_call_async(lambda: shared.get(hit), rounds,
                                                                           redis_calls),
        "`await RedisStore.get` (miss)": await per_call_async(lambda: shared.get(miss), rounds, redis_calls),
        "`await RedisStore.set` (incl. encode)": await per_call_async(lambda: shared.set(hit, value, 3600), rounds,
                                                                      redis_calls),
    }


async def bench_store(url: str, rounds: int, calls: int) -> list[str]:
    sizes = {"1 KB JSON answer": 1024, "20 KB SSE stream": 20 * 1024}
    memory = MemoryStore(256 * 1024 * 1024)
    shared = RedisStore(url, "bench")
    columns = []
    for label, size in sizes.items():
        value = CachedResponse(os.urandom(size // 2).hex().encode(), "SSE" in label, "gpt-4o", "frontier-1", 350,
                               220, 0.00307, time.time())
        columns.append(await store_figures(value, memory, shared, rounds, calls))
        print(f"{label}: " + ", ".join(f"{k} {w * 1e6:.2f}/{c * 1e6:.2f}" for k, (w, c) in columns[-1].items()),
              file=sys.stderr, flush=True)
    await shared.close()
    table = ["| operation | " + " | ".join(f"{label}: wall | CPU" for label in sizes) + " |",
             "| --- | " + " | ".join("---: | ---:" for _ in sizes) + " |"]
    table += [f"| {name} | " + " | ".join(f"{c[name][0] * 1e6:.2f} | {c[name][1] * 1e6:.2f}" for c in columns) + " |"
              for name in columns[0]]
    return table


# --- report -----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 entries, no alternatives, print only")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--no-alternatives", action="store_true", help="skip the FAISS index types not chosen")
    args = parser.parse_args()
    n = 20_000 if args.quick else args.entries
    alternatives = not (args.quick or args.no_alternatives)
    rounds, calls = (3, 2_000) if args.quick else (7, 20_000)
    host = machine()  # before pinning, so nproc reports the machine rather than the affinity mask
    faiss.omp_set_num_threads(1)
    if hasattr(os, "sched_setaffinity") and PIN_CORE in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {PIN_CORE})

    data = Data.make(n, args.queries)
    rows = [bench_chosen(data), bench_verified(data)]
    if alternatives:
        rows += bench_alternatives(data)
    memory = bench_memory()
    save_s, load_s = bench_load(n)
    proc, url = start_redis()
    try:
        store_rows = uvloop.run(bench_store(url, rounds, calls))
    finally:
        proc.terminate()
        proc.wait(10)

    command = "python benches/bench_cache.py" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    per_entry = (memory["arrays"] + memory["python"]) / 10_000
    section = "\n".join([
        f"Command: `{command}`",
        "",
        f"Date: {now}. Machine: {host}. Pinned to core {PIN_CORE}, FAISS on one thread "
        f"(`faiss.omp_set_num_threads(1)`).",
        "",
        f"### Semantic index: {n:,} entries, dim {DIM}, {args.queries:,} single-query lookups",
        "",
        f"Random unit vectors plus paraphrase clusters ({CLUSTER} members, 0.85-0.95 from their centre); each "
        f"query planted 0.8-1.0 from one entry, half of them in a cluster. Recall over the {data.counted:,} "
        f"queries whose true nearest neighbour (exact search) has cosine ≥ {RECALL_FROM}: strict = that entry "
        f"first; tie-tolerant = an entry within {TIE:g} of its cosine. Lookup excludes the embedding; the chosen "
        "index's time is the whole `SemanticIndex.search` (code, scan, re-rank, context and expiry checks). "
        "Target: ≤ 1 ms, recall ≥ 0.99. p99 CPU is the lookup thread's own CPU time: on this shared VM a wall "
        "p99 near 4-5 ms, for any index, is the lookup waiting for the core, not working.",
        "",
        "| index | lookup p50 (ms) | lookup p99 (ms) | p99 CPU (ms) | recall (strict) | recall (tie-tolerant) "
        "| inserts/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"Memory per 10,000 entries: {memory['arrays'] / 1e6:.2f} MB of arrays (64-byte code, 768-byte bfloat16 "
        f"vector, expiry and stamp per entry) + {memory['python'] / 1e6:.2f} MB of entry objects "
        f"(traced; {len(entry(0, 0).text)}-character text, 16-byte key) = {per_entry:,.0f} bytes per entry; RSS grew "
        f"{memory['rss'] / 1e6:.2f} MB; {memory['disk'] / 1e6:.2f} MB on disk. An index of {n:,} entries saves "
        f"in {save_s:.2f} s and loads in {load_s:.2f} s.",
        "",
        "### Exact store, µs per call (wall time, and this process's CPU time)",
        "",
        "One asyncio task on uvloop; Redis 7 on the other core over loopback, one connection; median of "
        f"{rounds} rounds of the mean per call. An exact hit served end to end through the gateway is measured by "
        "`benches/bench_cache_hit.py` (section \"Cache hit through the gateway\").",
        "",
        *store_rows,
    ])
    print(section)
    if not args.quick:
        write_results_section(section, section=SECTION)
        print(f"updated {SECTION} in {RESULTS_MD}", file=sys.stderr)


if __name__ == "__main__":
    main()
