"""mmproxy.cache.semantic: nearest hits, context isolation, expiry, capacity, persistence, threads."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from mmproxy.cache.semantic import SemanticEntry, SemanticIndex, SemanticIndexes

DIM = 384
HOUR = 3600.0


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def random_vectors(n: int, seed: int = 0) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32))


def near(v: np.ndarray, cosine: float, seed: int = 1) -> np.ndarray:
    """A unit vector at exactly ``cosine`` from unit vector ``v``."""
    noise = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    noise = unit(noise - (noise @ v) * v)
    return unit(cosine * v + np.sqrt(1 - cosine**2) * noise)


def entry(n: int, context: bytes = b"", ttl: float = HOUR) -> SemanticEntry:
    return SemanticEntry(f"question {n}", context, n.to_bytes(16, "big"), time.time() + ttl)


def filled(n: int, capacity: int = 10_000, seed: int = 0, **kw) -> tuple[SemanticIndex, np.ndarray]:
    vectors = random_vectors(n, seed)
    index = SemanticIndex(DIM, capacity, **kw)
    for i, v in enumerate(vectors):
        index.add(v, entry(i))
    return index, vectors


def texts(results: list[tuple[SemanticEntry, float]]) -> list[str]:
    return [e.text for e, _ in results]


def holds(index: SemanticIndex, vector: np.ndarray, n: int) -> bool:
    """Whether entry ``n`` is still there: its own vector finds it first."""
    return texts(index.search(vector, b"", k=1)) == [f"question {n}"]


def test_the_nearest_entry_comes_first_with_its_cosine():
    index, vectors = filled(2000)
    for target, cosine in ((17, 0.99), (1234, 0.85), (1999, 0.75)):
        results = index.search(near(vectors[target], cosine), b"", k=4)
        assert results[0][0].text == f"question {target}"
        assert results[0][1] == pytest.approx(cosine, abs=2e-3)
        assert [c for _, c in results] == sorted((c for _, c in results), reverse=True)
        assert len(results) <= 4
    assert index.search(vectors[5], b"", k=1)[0][1] == pytest.approx(1.0, abs=2e-3)


def test_a_paraphrase_cluster_returns_its_closest_member_first():
    rng = np.random.default_rng(3)
    center = random_vectors(1, 9)[0]
    members = [near(center, c, seed=s) for s, c in enumerate((0.9, 0.92, 0.95, 0.88))]
    index, _ = filled(1000)
    for i, v in enumerate(members):
        index.add(v, entry(5000 + i))
    query = unit(members[2] + 0.01 * rng.standard_normal(DIM).astype(np.float32))
    results = index.search(query, b"", k=4)
    assert texts(results)[0] == "question 5002"
    assert set(texts(results)) == {f"question {5000 + i}" for i in range(4)}


def test_other_contexts_never_answer_and_never_crowd_out_this_one():
    index = SemanticIndex(DIM, 10_000)
    continue_vector = random_vectors(1, 5)[0]
    for n in range(500):  # "continue" in 500 other conversations, identical embeddings
        index.add(continue_vector, entry(n, context=n.to_bytes(8, "big")))
    ours = b"our-conversation"
    index.add(near(continue_vector, 0.9), entry(9999, context=ours))
    results = index.search(continue_vector, ours, k=4)
    assert texts(results) == ["question 9999"]
    assert results[0][1] == pytest.approx(0.9, abs=2e-3)
    assert index.search(continue_vector, b"a conversation never seen", k=4) == []
    assert texts(index.search(continue_vector, (7).to_bytes(8, "big"), k=4)) == ["question 7"]


def test_expired_entries_are_not_returned_or_counted():
    index = SemanticIndex(DIM, 100)
    vectors = random_vectors(3)
    index.add(vectors[0], entry(0, ttl=0.05))
    index.add(vectors[1], entry(1))
    index.add(vectors[2], entry(2, ttl=-1))  # already expired: not added
    assert len(index) == 2
    assert texts(index.search(vectors[0], b"", k=1)) == ["question 0"]
    time.sleep(0.08)
    assert len(index) == 1
    assert "question 0" not in texts(index.search(vectors[0], b"", k=4))
    assert texts(index.search(vectors[1], b"", k=1)) == ["question 1"]


def test_capacity_evicts_the_oldest_first():
    index, vectors = filled(13, capacity=10)
    assert len(index) == 10
    assert [holds(index, v, n) for n, v in enumerate(vectors)] == [False] * 3 + [True] * 10


def test_bad_vectors_do_not_crash(caplog):
    index, vectors = filled(10)
    assert index.search(np.zeros(DIM, np.float32), b"") == []
    assert index.search(np.full(DIM, np.nan, np.float32), b"") == []
    index.add(np.zeros(DIM, np.float32), entry(99))
    assert len(index) == 10
    assert texts(index.search(vectors[3].astype(np.float64) * 7, b"", k=1)) == ["question 3"]  # any norm, dtype
    assert index.search(np.ones(128, np.float32), b"") == []  # another model's embedding
    index.add(np.ones(128, np.float32), entry(100))
    assert len(index) == 10
    assert SemanticIndex(DIM).search(vectors[0], b"") == []
    assert caplog.text.count("128 dimensions") == 1


def test_save_and_load_roundtrip(tmp_path):
    path = tmp_path / "sub" / "group.semidx"
    index, vectors = filled(500, path=path)
    index.add(vectors[0], SemanticEntry("context \u00fc", b"\x00ctx", b"k" * 16, time.time() + HOUR))
    assert index.dirty
    index.save()
    assert not index.dirty and path.exists()
    assert [p.name for p in path.parent.iterdir()] == ["group.semidx"]  # no temporary file left behind
    loaded = SemanticIndex.load(DIM, 10_000, path)
    assert len(loaded) == 501
    for n in (0, 250, 499):
        query = near(vectors[n], 0.9, seed=n)
        assert [(e, round(c, 4)) for e, c in loaded.search(query, b"")] == \
            [(e, round(c, 4)) for e, c in index.search(query, b"")]
    (hit, _), = loaded.search(vectors[0], b"\x00ctx")
    assert hit == SemanticEntry("context \u00fc", b"\x00ctx", b"k" * 16, hit.expires)
    loaded.add(vectors[1], entry(777))  # the ring continues after the loaded entries
    assert len(loaded) == 502


def test_load_drops_expired_entries_and_keeps_the_newest_when_smaller(tmp_path):
    path = tmp_path / "g.semidx"
    index = SemanticIndex(DIM, 100, path)
    vectors = random_vectors(6)
    index.add(vectors[0], entry(0, ttl=0.05))
    for n in range(1, 6):
        index.add(vectors[n], entry(n))
    index.save()
    time.sleep(0.08)
    loaded = SemanticIndex.load(DIM, 3, path)
    assert len(loaded) == 3
    assert [holds(loaded, v, n) for n, v in enumerate(vectors)] == [False, False, False, True, True, True]
    loaded.add(random_vectors(1, 42)[0], entry(6))  # full: overwrites the oldest loaded entry
    assert [holds(loaded, v, n) for n, v in enumerate(vectors)] == [False, False, False, False, True, True]


def test_save_then_load_again_keeps_ring_order(tmp_path):
    path = tmp_path / "ring.semidx"
    index, vectors = filled(15, capacity=10, path=path)  # wrapped: slots hold 10..14 then 5..9
    index.save()
    loaded = SemanticIndex.load(DIM, 10, path)
    assert [holds(loaded, v, n) for n, v in enumerate(vectors)] == [False] * 5 + [True] * 10
    loaded.add(random_vectors(1, 77)[0], entry(100))  # evicts the oldest: 5
    assert [holds(loaded, v, n) for n, v in enumerate(vectors)] == [False] * 6 + [True] * 9


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated", "other-dim", "bad-meta"])
def test_an_unusable_file_gives_an_empty_index(tmp_path, caplog, damage):
    path = tmp_path / "x.semidx"
    if damage != "missing":
        index, _ = filled(20, path=path)
        index.save()
        data = path.read_bytes()
        if damage == "garbage":
            path.write_bytes(b"\x00" * 100)
        elif damage == "truncated":
            path.write_bytes(data[:-10])
        elif damage == "bad-meta":
            path.write_bytes(data.replace(b'"contexts":[', b'"contexts":[1,'))
    with caplog.at_level(logging.WARNING, logger="mmproxy.cache"):
        loaded = SemanticIndex.load(128 if damage == "other-dim" else DIM, 100, path)
    assert len(loaded) == 0 and loaded.search(random_vectors(1)[0][: loaded.dim], b"") == []
    assert ("starting empty" in caplog.text) == (damage != "missing")
    loaded.add(unit(np.ones(loaded.dim, np.float32)), entry(1))  # and it works
    assert len(loaded) == 1


def test_indexes_are_per_scope_and_persist_together(tmp_path):
    vectors = random_vectors(4)
    indexes = SemanticIndexes(DIM, 1000, tmp_path)
    a, b = indexes.get("gpt-4o|team-a"), indexes.get("gpt-4o|team-b")
    assert indexes.get("gpt-4o|team-a") is a and a is not b
    a.add(vectors[0], entry(0))
    b.add(vectors[1], entry(1))
    assert a.search(vectors[1], b"", k=4)[0][0].text == "question 0"  # only a's own entry
    indexes.save_all()
    assert len(list(tmp_path.iterdir())) == 2
    again = SemanticIndexes(DIM, 1000, tmp_path)
    assert texts(again.get("gpt-4o|team-a").search(vectors[0], b"", k=4)) == ["question 0"]
    assert texts(again.get("gpt-4o|team-b").search(vectors[1], b"", k=4)) == ["question 1"]
    assert len(again.get("never used")) == 0
    in_memory = SemanticIndexes(DIM, 1000)
    in_memory.get("x").add(vectors[0], entry(0))
    in_memory.save_all()  # no directory: nothing to do, no error


def test_concurrent_adds_and_searches_from_threads():
    capacity = 3000
    index = SemanticIndex(DIM, capacity)
    vectors = random_vectors(4 * 1500, seed=11)
    errors: list[BaseException] = []
    done = threading.Event()

    def writer(part: int) -> None:
        try:
            for n in range(part * 1500, (part + 1) * 1500):
                index.add(vectors[n], entry(n))
        except BaseException as exc:
            errors.append(exc)

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not done.is_set():
                n = int(rng.integers(len(vectors)))
                for e, cosine in index.search(vectors[n], b"", k=4):
                    assert -1.01 <= cosine <= 1.01 and e.text.startswith("question ")
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=reader, args=(s,)) for s in range(2)]
    writers = [threading.Thread(target=writer, args=(p,)) for p in range(4)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    for t in readers:
        t.join()
    assert errors == []
    assert len(index) == capacity
    # Every entry still held is found by its own vector, with its own text.
    assert sum(holds(index, v, n) for n, v in enumerate(vectors)) == capacity


def test_save_while_adding_from_another_thread(tmp_path):
    """Saves copy nothing and take the lock only briefly, so adds land mid-write; what was saved must still
    pair every entry with its own vector."""
    capacity = 5000
    index, vectors = filled(capacity, capacity=capacity, path=tmp_path / "busy.semidx")
    more = random_vectors(5000, seed=5)
    stop = threading.Event()

    def add_while_saving() -> None:
        n = 0
        while not stop.is_set():
            index.add(more[n % len(more)], entry(capacity + n))
            n += 1

    def vector_of(found: SemanticEntry) -> np.ndarray:
        n = int(found.text.split()[1])
        return vectors[n] if n < capacity else more[(n - capacity) % len(more)]

    adder = threading.Thread(target=add_while_saving)
    adder.start()
    try:
        for _ in range(3):
            index.save()
            loaded = SemanticIndex.load(DIM, capacity, index.path)
            assert len(loaded) > capacity // 2
            for q in (*vectors[::3], *more[::3]):
                (found, cosine), *_ = loaded.search(q, b"", k=1)
                assert (cosine > 0.99) == (float(vector_of(found) @ q) > 0.99)
    finally:
        stop.set()
        adder.join()
