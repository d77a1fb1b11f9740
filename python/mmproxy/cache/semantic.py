"""The semantic cache's index: prompt embeddings → the exact-store entries that answered them.

Index type, chosen by measurement (``benches/bench_cache.py``, "## Cache" in benches/RESULTS.md): 100,000
entries of dim 384 (random unit vectors plus paraphrase clusters), queries planted at cosine 0.8-1.0 from
one entry, one core of the 2-core EPYC VM; recall = the true nearest neighbour found, as exact search
finds it; target ≤ 1 ms at recall ≥ 0.99. Lookup p50 in the recorded run:

- ``IndexFlatIP`` (exact): 8.4 ms, a scan of 154 MB.
- ``IndexHNSWFlat``, inner product: M=32 reaches recall 0.99 only at efSearch=128, 1.3 ms (efSearch=64:
  0.71 ms at 0.96); M=16 is worse. Greedy graph search finds little gradient towards a duplicate that
  sits among unrelated vectors, the case a cache is for. It also cannot delete (tombstones, rebuilds)
  and inserts only 1,500-3,800 vectors/s.
- ``IndexIVFFlat``, 1024 lists: nprobe=32 0.29 ms at recall 0.98, after training on the very data it
  serves; live traffic would need retraining as it drifts.
- Chosen: a sign-random-projection code (SimHash: 512 bits from 512 Gaussian hyperplanes) scanned in
  full by FAISS's Hamming kernel (``faiss.knn_hamming``; 64-byte codes, 6.4 MB at 100k), then the best
  ``_CANDIDATES`` re-ranked by exact cosine on bfloat16 copies of the vectors: 0.30 ms (p99 0.54 ms) at
  recall 1.0, 39,000 inserts/s. Two vectors at angle θ differ in each bit with probability θ/π whatever the data,
  so nothing to train: a duplicate at cosine 0.8 differs in ~105 bits, an unrelated vector in ~256 ± 11.

The code is XORed with a mask derived from the conversation context, so entries with another context sit
at random distance (~256 bits) and never crowd the candidates of a short turn like "continue" that
appears in thousands of conversations; the context is still compared exactly before a hit.

Storage is a ring of ``capacity`` slots in preallocated arrays (untouched pages cost no memory): the
oldest entry is overwritten first, an expired one is skipped by searches and cleared when met. The scan,
which FAISS runs without the GIL, reads the arrays without the lock; candidates are then checked against
the slot contents under it, so a slot rewritten mid-scan is at worst a wasted candidate. Memory: ~1.1 KB
per entry (848 bytes of arrays, the rest the entry objects).
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import orjson

from mmproxy.cache.error_bound import Evidence

__all__ = ["SemanticEntry", "SemanticIndex", "SemanticIndexes"]

log = logging.getLogger("mmproxy.cache")

# A lookup is one query: OpenMP threads would not speed it up, only spin on the core the event loop needs.
faiss.omp_set_num_threads(1)

BITS = 512
_CODE_BYTES = BITS // 8
_CANDIDATES = 64  # Hamming neighbours re-ranked by exact cosine
_SEED = 0x6D6D70  # the hyperplanes are saved with the index; the seed only makes new indexes reproducible
_FILE_MAGIC = b"MMSEMIDX"
_FILE_VERSION = 2
_FILE_HEADER = struct.Struct("<8sII")  # magic, version, length of the JSON metadata that follows


@dataclass(slots=True)
class SemanticEntry:
    text: str  # the normalised prompt (last user turn): the matcher re-checks it against the query
    context: bytes  # hash of the earlier conversation; a hit requires equality
    cache_key: bytes  # exact-store key where the answer lives
    expires: float  # epoch seconds
    answer: str = ""  # the answer's key (mmproxy.cache.answers.answer_key): neighbours agree when theirs are equal
    evidence: Evidence | None = None  # what reusing it showed (the verified cache; made on the first outcome)


def _context_mask(context: bytes) -> np.ndarray:
    return np.frombuffer(hashlib.shake_256(context).digest(_CODE_BYTES), dtype=np.uint8)


def _to_bf16(v: np.ndarray) -> np.ndarray:
    """The top half of each float32, rounded: 2 bytes per dimension, a cosine off by at most 2**-9 (~5e-4 seen),
    and unlike float16 it decodes with a shift (10 µs for the re-ranked candidates against 48 µs)."""
    return ((v.view(np.uint32) + 0x8000) >> 16).astype(np.uint16)


def _from_bf16(rows: np.ndarray) -> np.ndarray:
    return (rows.astype(np.uint32) << 16).view(np.float32)


class SemanticIndex:
    def __init__(self, dim: int, capacity: int = 100_000, path: Path | None = None) -> None:
        if dim <= 0 or capacity <= 0:
            raise ValueError("dim and capacity must be positive")
        self.dim, self.capacity, self.path = dim, capacity, path
        self._planes = np.random.default_rng(_SEED).standard_normal((dim, BITS), dtype=np.float32)
        self._codes = np.zeros((capacity, _CODE_BYTES), dtype=np.uint8)
        self._vectors = np.zeros((capacity, dim), dtype=np.uint16)  # bfloat16
        self._expires = np.zeros(capacity, dtype=np.float64)  # 0: empty slot
        self._stamps = np.zeros(capacity, dtype=np.int64)  # which write a slot holds, for save()
        self._entries: list[SemanticEntry | None] = [None] * capacity
        self._slots: dict[bytes, int] = {}  # cache key -> slot, for outcomes that name an entry
        self._filled = 0  # slots [0, filled) have been written at least once
        self._next = 0  # the slot the next add overwrites: the oldest
        self._writes = 0
        self._saved_at_write = 0
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._warned_dim = False

    def __len__(self) -> int:
        """Entries that have not expired."""
        return int(np.count_nonzero(self._expires[: self._filled] > time.time()))

    @property
    def dirty(self) -> bool:
        return self._writes != self._saved_at_write

    def _unit(self, vector: np.ndarray) -> np.ndarray | None:
        """``vector`` as a float32 unit vector, or None when there is nothing to compare: zero, NaN, infinite, or
        of another dimension (an embedding deployment that changed models; warned once, never an error)."""
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.dim:
            if not self._warned_dim:
                self._warned_dim = True
                log.warning("semantic cache: an embedding of %d dimensions for an index of %d; not cached",
                            v.shape[0], self.dim)
            return None
        norm = float(np.linalg.norm(v))
        return v / norm if 0 < norm < float("inf") else None

    def _code(self, unit: np.ndarray, context: bytes) -> np.ndarray:
        return np.packbits(unit @ self._planes > 0) ^ _context_mask(context)

    def search(self, vector: np.ndarray, context: bytes, k: int = 4) -> list[tuple[SemanticEntry, float]]:
        """Live entries with this context, best cosine first (at most ``k``)."""
        unit = self._unit(vector)
        filled = self._filled
        if unit is None or filled == 0 or k <= 0:
            return []
        code = self._code(unit, context)
        _, found = faiss.knn_hamming(code[None, :], self._codes[:filled], min(_CANDIDATES, filled))
        slots = found[0][found[0] >= 0]
        now = time.time()
        hits: list[tuple[SemanticEntry, float]] = []
        with self._lock:
            cosines = _from_bf16(self._vectors[slots]) @ unit
            for slot, cosine in zip(slots.tolist(), cosines.tolist(), strict=True):
                entry = self._entries[slot]
                if entry is None or entry.context != context:
                    continue
                if entry.expires <= now:
                    self._clear(slot)
                    continue
                hits.append((entry, cosine))
        hits.sort(key=lambda hit: hit[1], reverse=True)
        return hits[:k]

    def add(self, vector: np.ndarray, entry: SemanticEntry) -> None:
        """Index ``entry`` under ``vector``; when full, the oldest entry makes room."""
        unit = self._unit(vector)
        if unit is None or entry.expires <= time.time():
            return
        code = self._code(unit, entry.context)
        with self._lock:
            slot = self._next
            self._writes += 1
            self._codes[slot] = code
            self._vectors[slot] = _to_bf16(unit)
            self._expires[slot] = entry.expires
            self._stamps[slot] = self._writes
            old = self._entries[slot]
            if old is not None and self._slots.get(old.cache_key) == slot:
                del self._slots[old.cache_key]
            self._entries[slot] = entry
            self._slots[entry.cache_key] = slot
            self._next = (slot + 1) % self.capacity
            self._filled = max(self._filled, slot + 1)

    def entry(self, cache_key: bytes) -> SemanticEntry | None:
        """The live entry whose answer is kept under ``cache_key``."""
        slot = self._slots.get(cache_key)
        entry = self._entries[slot] if slot is not None else None
        return entry if entry is not None and entry.cache_key == cache_key else None

    def _clear(self, slot: int) -> None:
        """Empty a slot; random code bits put it at random distance from every query."""
        self._writes += 1
        old = self._entries[slot]
        if old is not None and self._slots.get(old.cache_key) == slot:
            del self._slots[old.cache_key]
        self._entries[slot] = None
        self._expires[slot] = 0.0
        self._stamps[slot] = self._writes
        self._codes[slot] = np.frombuffer(os.urandom(_CODE_BYTES), dtype=np.uint8)

    # -- persistence ------------------------------------------------------------------------
    def save(self) -> None:
        """Write the index to ``path`` atomically (a temporary file, then rename), oldest slot first.

        The arrays go to the file straight from memory, without the lock and without a copy (tens of MB at
        full capacity), so adds and searches carry on meanwhile; slots rewritten during the write are listed
        at the end of the file and dropped by ``load``, and saved with the next call."""
        if self.path is None:
            return
        with self._save_lock:
            with self._lock:
                filled, writes = self._filled, self._writes
                start = self._next if filled == self.capacity else 0
                entries = self._entries[start:filled] + self._entries[:start]
                stamps = np.concatenate([self._stamps[start:filled], self._stamps[:start]])
            meta = orjson.dumps({
                "dim": self.dim,
                "bits": BITS,
                "texts": [e.text if e is not None else "" for e in entries],
                "contexts": [e.context.hex() if e is not None else "" for e in entries],
                "keys": [e.cache_key.hex() if e is not None else "" for e in entries],
                "answers": [e.answer if e is not None else "" for e in entries],
                "evidence": [e.evidence.seen if e is not None and e.evidence is not None else [] for e in entries],
            })
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                f.write(_FILE_HEADER.pack(_FILE_MAGIC, _FILE_VERSION, len(meta)))
                f.write(meta)
                f.write(self._planes.data)
                for array in (self._expires, self._codes, self._vectors):
                    f.write(array[start:filled].data)
                    f.write(array[:start].data)
                with self._lock:
                    now = np.concatenate([self._stamps[start:filled], self._stamps[:start]])
                changed = np.flatnonzero(now != stamps).astype(np.uint32)
                f.write(struct.pack("<I", len(changed)))
                f.write(changed.data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._saved_at_write = writes

    @classmethod
    def load(cls, dim: int, capacity: int, path: Path) -> SemanticIndex:
        """The index saved at ``path`` without its expired entries; a missing file is an empty index, and so
        (with a warning) is an unreadable one or one for another dimension."""
        index = cls(dim, capacity, path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return index
        except OSError as exc:
            log.warning("semantic cache: cannot read %s (%s); starting empty", path, exc.strerror)
            return index
        try:
            index._restore(data)
        except (ValueError, KeyError, TypeError, struct.error, orjson.JSONDecodeError) as exc:
            log.warning("semantic cache: %s is not a usable index (%s); starting empty", path, exc)
            return cls(dim, capacity, path)
        return index

    def _restore(self, data: bytes) -> None:
        magic, version, meta_len = _FILE_HEADER.unpack_from(data)
        if magic != _FILE_MAGIC or version not in (1, _FILE_VERSION):
            raise ValueError("not a semantic index of this version")
        at = _FILE_HEADER.size
        meta = orjson.loads(data[at:at + meta_len])
        if meta["dim"] != self.dim or meta["bits"] != BITS:
            raise ValueError(f"saved for dim {meta['dim']}, {meta['bits']} bits")
        texts, contexts, keys = meta["texts"], meta["contexts"], meta["keys"]
        n = len(texts)
        answers, evidence = meta.get("answers", [""] * n), meta.get("evidence", [[]] * n)  # version 1 had neither
        if not len(contexts) == len(keys) == len(answers) == len(evidence) == n:
            raise ValueError("metadata columns differ in length")
        arrays: list[np.ndarray] = []
        at += meta_len
        for dtype, shape in ((np.float32, (self.dim, BITS)), (np.float64, (n,)), (np.uint8, (n, _CODE_BYTES)),
                             (np.uint16, (n, self.dim))):
            count = int(np.prod(shape))
            arrays.append(np.frombuffer(data, dtype, count, at).reshape(shape))
            at += count * np.dtype(dtype).itemsize
        planes, expires, codes, vectors = arrays
        (n_changed,) = struct.unpack_from("<I", data, at)
        changed = np.frombuffer(data, np.uint32, n_changed, at + 4)
        if at + 4 + 4 * n_changed != len(data) or (n_changed and changed.max() >= n):
            raise ValueError("bad length or list of changed slots")
        live = expires > time.time()
        live[changed] = False
        keep = np.flatnonzero(live)[-self.capacity:]  # the newest, if the capacity shrank
        m = len(keep)
        kept_expires = expires[keep]
        entries = [SemanticEntry(str(texts[i]), bytes.fromhex(contexts[i]), bytes.fromhex(keys[i]), e, str(answers[i]),
                                 Evidence([(float(s), bool(ok)) for s, ok in evidence[i]]) if evidence[i] else None)
                   for i, e in zip(keep.tolist(), kept_expires.tolist(), strict=True)]
        self._planes = planes.copy()
        self._expires[:m] = kept_expires
        self._codes[:m] = codes[keep]
        self._vectors[:m] = vectors[keep]
        self._entries[:m] = entries
        self._slots = {entry.cache_key: slot for slot, entry in enumerate(entries)}
        self._filled, self._next = m, m % self.capacity


class SemanticIndexes:
    """One ``SemanticIndex`` per scope (model group and namespace), persisted under one directory."""

    def __init__(self, dim: int, capacity: int = 100_000, directory: Path | None = None) -> None:
        self.dim, self.capacity, self.directory = dim, capacity, directory
        self._indexes: dict[str, SemanticIndex] = {}
        self._lock = threading.Lock()

    def get(self, scope: str) -> SemanticIndex:
        index = self._indexes.get(scope)
        if index is None:
            with self._lock:
                index = self._indexes.get(scope)
                if index is None:
                    index = self._open(scope)
                    self._indexes[scope] = index
        return index

    def _open(self, scope: str) -> SemanticIndex:
        if self.directory is None:
            return SemanticIndex(self.dim, self.capacity)
        # Scopes are arbitrary strings; a digest makes a safe file name.
        name = hashlib.blake2b(scope.encode(), digest_size=16).hexdigest() + ".semidx"
        return SemanticIndex.load(self.dim, self.capacity, self.directory / name)

    def save_all(self) -> None:
        """Save every index changed since its last save (cheap when nothing changed; run it off the event loop)."""
        for index in list(self._indexes.values()):
            if index.dirty:
                try:
                    index.save()
                except OSError as exc:
                    log.warning("semantic cache: cannot save %s (%s)", index.path, exc.strerror)
