"""P(good answer | prompt) for each candidate model, learned from routing records.

Two estimators, averaged: a logistic regression per candidate over the prompt's embedding and cheap features
(smooth, generalises across topics), and the mean outcome of each candidate among the prompt's k nearest
training prompts by embedding (sharp where the records are dense, e.g. one subject's questions). On the dev
records' check part the average beat either alone (benches/RESULTS.md, "Learned router"). Both run in numpy
and FAISS; nothing here needs a GPU or torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import faiss
import numpy as np

from mmproxy.smart import files

FORMAT = "mmproxy-quality-model/1"
# The neighbour index: HNSW finds a prompt's neighbours among 10k training prompts in ~35 µs on one core, where an
# exact scan takes ~270 µs (benches/RESULTS.md, "Learned routing: decision cost"). It is rebuilt when a model is
# loaded (about a second for 10k prompts; storing it would triple the file), on one thread from the stored
# vectors, so every process that loads a file searches the very same graph.
HNSW_LINKS, HNSW_BUILD_DEPTH, HNSW_SEARCH_DEPTH = 32, 80, 64


def fit_logistic(features: np.ndarray, targets: np.ndarray, l2: float, iterations: int = 25) -> np.ndarray:
    """Weights (d + 1,) of an L2-regularised logistic regression (last entry: the unpenalised bias) by Newton's
    method; ``targets`` may be soft (a judge's 0-1 score), which the cross-entropy loss accepts as is."""
    x = np.hstack([features.astype(np.float64), np.ones((len(features), 1))])
    penalty = np.full(x.shape[1], l2)
    penalty[-1] = 0.0
    w = np.zeros(x.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        gradient = x.T @ (p - targets) + penalty * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-7:
            break
    return w


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class TrainingSet:
    """What a quality model learns from, one row per prompt: its embedding and cheap features, each candidate's
    outcome (quality in [0, 1]; ``known`` 0 where the row has no outcome of that candidate, as in feedback on a
    routed request, which says how the chosen candidate did) and answer length. Stored in the model file, so a
    running gateway can retrain on it plus its own traffic."""

    vectors: np.ndarray  # (N, dim) unit rows, float32 (kept at float16 precision in files)
    cheap: np.ndarray  # (N, F)
    outcomes: np.ndarray  # (N, C)
    known: np.ndarray  # (N, C) 1 or 0
    lengths: np.ndarray  # (N, C) answer tokens
    prompt_tokens: np.ndarray  # (N,)

    def __post_init__(self) -> None:
        # Half precision, as files store them: a trained model searches what a loaded one will.
        object.__setattr__(self, "vectors", np.ascontiguousarray(self.vectors.astype(np.float16), np.float32))
        object.__setattr__(self, "cheap", self.cheap.astype(np.float16).astype(np.float32))
        for name in ("outcomes", "known", "lengths", "prompt_tokens"):
            object.__setattr__(self, name, getattr(self, name).astype(np.float32))

    def __len__(self) -> int:
        return len(self.vectors)

    def __add__(self, other: TrainingSet) -> TrainingSet:
        return TrainingSet(*(np.concatenate([getattr(self, f.name), getattr(other, f.name)]) for f in fields(self)))

    def rows(self, selected: np.ndarray) -> TrainingSet:
        return TrainingSet(*(getattr(self, f.name)[selected] for f in fields(self)))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"memory": self.vectors.astype(np.float16), "cheap": self.cheap.astype(np.float16),
                "outcomes": self.outcomes, "known": self.known.astype(np.uint8), "lengths": self.lengths,
                "prompt_tokens": self.prompt_tokens}

    @classmethod
    def from_arrays(cls, data: dict[str, np.ndarray]) -> TrainingSet:
        return cls(data["memory"], data["cheap"], data["outcomes"], data["known"], data["lengths"],
                   data["prompt_tokens"])


class QualityModel:
    """Per candidate, the probability that its answer to a prompt is good (a right answer, or a judge's score
    scaled to 0-1). ``predict`` takes the rows ``features.prompt_matrix`` makes."""

    def __init__(self, candidates: Sequence[str], weights: np.ndarray, data: TrainingSet, k: int,
                 meta: dict[str, object]) -> None:
        self.candidates = tuple(candidates)
        self.weights = weights.astype(np.float32)  # (d + 1, C): embedding, cheap features, bias
        self.data = data  # the training prompts: the neighbours' outcomes and lengths come from here
        self.k = k
        self.meta = meta  # how it was trained: records, split, parameters, calibration sample
        self._index = _neighbour_index(data.vectors)

    @classmethod
    def fit(cls, candidates: Sequence[str], data: TrainingSet, *, l2: float = 10.0, k: int = 30,
            meta: dict[str, object] | None = None) -> QualityModel:
        features = np.hstack([data.vectors, data.cheap])
        columns = []
        for c in range(len(candidates)):
            rows = data.known[:, c] > 0
            if not rows.any():
                raise ValueError(f"no record has an outcome of {candidates[c]!r}")
            columns.append(fit_logistic(features[rows], data.outcomes[rows, c], l2))
        return cls(candidates, np.stack(columns, axis=1), data, k, dict(meta or {}, l2=l2, k=k))

    def predict(self, vectors: np.ndarray, cheap: np.ndarray, *,
                leave_out_same: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(quality, answer tokens), each (n, C): the probability of a good answer and the expected answer length
        (the neighbours' mean, for the cost estimate). ``leave_out_same``: a training prompt leaves itself (any
        neighbour with cosine >= 0.9999) out of its neighbours, for honest estimates on the records the model was
        trained on."""
        linear = sigmoid(np.hstack([vectors, cheap]) @ self.weights[:-1] + self.weights[-1])
        extra = 1 if leave_out_same else 0
        similarity, neighbours = self._index.search(np.ascontiguousarray(vectors, dtype=np.float32), self.k + extra)
        use = np.ones_like(similarity)
        if leave_out_same:
            use = (similarity < 0.9999).astype(np.float32)
            use *= np.cumsum(use, axis=1) <= self.k
        data = self.data
        known = data.known[neighbours] * use[:, :, None]  # (n, k, C)
        hits = known.sum(axis=1)
        rates = np.where(hits > 0, (data.outcomes[neighbours] * known).sum(axis=1) / np.maximum(hits, 1), linear)
        lengths = (data.lengths[neighbours] * known).sum(axis=1) / np.maximum(hits, 1)
        return (linear + rates) / 2, lengths

    # -- files ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        files.write(path, FORMAT, {"candidates": list(self.candidates), "k": self.k, "meta": self.meta},
                    {"weights": self.weights, **self.data.arrays()})

    @classmethod
    def load(cls, path: str | Path) -> QualityModel:
        header, data = files.read(path, FORMAT)
        try:
            return cls(header["candidates"], data["weights"], TrainingSet.from_arrays(data), int(header["k"]),
                       header["meta"])
        except (KeyError, TypeError, ValueError) as exc:
            raise files.ModelFileError(f"{path}: cannot read the model ({exc})") from None

def _neighbour_index(memory: np.ndarray) -> faiss.Index:
    """An HNSW graph over the training prompts (inner product of unit vectors: cosine), built on one thread so
    the same records always give the same graph."""
    index = faiss.IndexHNSWFlat(memory.shape[1], HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_BUILD_DEPTH
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.add(memory)
    finally:
        faiss.omp_set_num_threads(threads)
    index.hnsw.efSearch = HNSW_SEARCH_DEPTH
    return index
