"""The semantic-cache hit decision, with the real embedder's cosines and the Rust text checks.

The question pairs here are written for these tests (not taken from the benchmark data).
"""

from __future__ import annotations

import numpy as np
import pytest

from mmproxy import _native
from mmproxy.cache.embedder import LocalEmbedder
from mmproxy.cache.matcher import MatchSettings, accept, accept_async, verdict

DEFAULT = MatchSettings()
COSINE_ONLY = MatchSettings(verify=False)
SYNONYMS = MatchSettings(synonym_threshold=0.8)


@pytest.fixture(scope="module")
def embedder():
    e = LocalEmbedder()
    yield e
    e.close()


def cosine(e: LocalEmbedder, a: str, b: str) -> float:
    va, vb = e.embed([a, b])
    return float(va @ vb)


NEAR_MISSES = [
    # (query, cached, reason the text check gives)
    ("How do I convert Fahrenheit to Celsius?", "How do I convert Celsius to Fahrenheit?", "direction"),
    ("How do I migrate from MySQL to PostgreSQL?", "How do I migrate from PostgreSQL to MySQL?", "direction"),
    ("What is 20% of 150?", "What is 20% of 160?", "number"),
    ("What is 20% of 150?", "What is 150% of 20?", "number order"),
    ("How many kilograms are in a ton?", "How many pounds are in a ton?", "unit"),
    ("Is it safe to drink tap water in Mexico?", "Is it not safe to drink tap water in Mexico?", "negation"),
    ("How do I start a Docker container?", "How do I stop a Docker container?", "negation"),
    ("How do I merge two dictionaries in Python?", "How do I merge two dictionaries in Ruby?", "substitution"),
    ("What is the capital of Austria?", "What is the capital of Australia?", "substitution"),
    ("How do I undo the last commit in git?", "How do I undo the last pushed commit in git?", "insertion"),
    ("How do I install numpy with pip?", "How do I uninstall numpy with pip?", "opposite"),
    ("When was the Eiffel Tower built?", "Where was the Eiffel Tower built?", "question word"),
    ("Does a kilobyte hold more than a kibibyte?", "Does a kibibyte hold more than a kilobyte?", "swapped"),
]

PARAPHRASES = [
    ("How do I merge two dictionaries in Python?", "What's the best way to merge two Python dictionaries?"),
    ("What is 20% of 150?", "Calculate twenty percent of 150."),
    ("How many kilograms are in a ton?", "A ton contains how many kilograms?"),
    ("Why doesn't my cron job run?", "Why does my cron job not run?"),
    ("How do I convert Fahrenheit to Celsius?", "How can I convert from Fahrenheit to Celsius?"),
    ("What is the difference between TCP and UDP?", "What's the difference between UDP and TCP?"),
]


@pytest.mark.parametrize(("query", "cached", "reason"), NEAR_MISSES)
def test_near_misses_are_refused(embedder, query, cached, reason):
    assert verdict(query, cached) == reason
    assert not accept(query, cached, cosine(embedder, query, cached), DEFAULT)


def test_near_misses_fool_the_cosine(embedder):
    """Why the text check exists: most of these would be hits on the cosine alone."""
    fooled = [q for q, c, _ in NEAR_MISSES if accept(q, c, cosine(embedder, q, c), COSINE_ONLY)]
    assert len(fooled) >= len(NEAR_MISSES) * 2 // 3


@pytest.mark.parametrize(("query", "cached"), PARAPHRASES)
def test_paraphrases_are_hits(embedder, query, cached):
    assert verdict(query, cached) == "same"
    assert accept(query, cached, cosine(embedder, query, cached), DEFAULT)


def test_reworded_candidates_need_the_higher_cosine():
    query, cached = "How can I speed up my slow laptop?", "My notebook computer got sluggish, what can I do?"
    assert verdict(query, cached) == "reworded"
    settings = MatchSettings(threshold=0.7, reworded_threshold=0.9)
    assert not accept(query, cached, 0.85, settings)
    assert accept(query, cached, 0.95, settings)


def test_threshold_and_verify_switch():
    query, cached = "What is 20% of 150?", "What is 20% of 160?"
    assert accept(query, cached, 0.99, COSINE_ONLY)
    assert not accept(query, cached, 0.99, DEFAULT)
    same = "How do I merge two dictionaries in Python?"
    assert accept(same, same, 0.80, DEFAULT)
    assert not accept(same, same, 0.74, DEFAULT)
    assert not accept(same, same, float("nan"), DEFAULT)
    assert not accept(same, same, float("nan"), COSINE_ONLY)


def test_text_check_is_symmetric():
    for query, cached, _ in NEAR_MISSES:
        assert _native.near_miss_verdict(query, cached) == _native.near_miss_verdict(cached, query)


def test_numbers_are_normalised():
    assert verdict("Split 1,000 dollars three ways", "Split 1000 dollars 3 ways") == "same"
    assert verdict("Who was the first person on Mars?", "Who was the 1st person on Mars?") == "same"
    assert verdict("Who was the first person on Mars?", "Who was the second person on Mars?") == "number"
    assert verdict("Convert 5 km to miles", "Convert 5 miles to km") == "number unit"
    assert verdict("How long does it take to boil 2 eggs?", "How long does it take to boil two eggs?") == "same"


def test_bad_input_does_not_crash():
    odd = ["", " ", "???", "\ud800 lone surrogate", "😀" * 1000, "日本語の質問", "'s n't \u2019"]
    odd.append("1,2,3,,4..5 99999999999999999999999 1e308 °c° $")
    for a in odd:
        for b in odd:
            assert isinstance(verdict(a, b), str)
    long_a = "please summarise this document " * 20_000 + "about Python"
    long_b = "please summarise this document " * 20_000 + "about Java"
    assert verdict(long_a, long_b) == "substitution"
    assert verdict(long_a, long_a) == "same"
    assert not accept(long_a, long_b, 1.0, DEFAULT)


SYNONYM_SWAPS = [
    ("Where can I buy cheap train tickets?", "Where can I purchase cheap train tickets?"),
    ("How do I begin learning the cello?", "How do I start learning the cello?"),
    ("What is the biggest desert on Earth?", "What is the largest desert on Earth?"),
]

ENTITY_SWAPS = [
    ("How do I sort a list in Python?", "How do I sort a list in JavaScript?"),
    ("What is the population of Paris?", "What is the population of London?"),
    ("What is the boiling point of water?", "What is the freezing point of water?"),
]


def test_near_miss_words_gives_the_differing_words_per_side():
    query, cached = "How do I buy a train ticket?", "How can I purchase train tickets?"
    assert _native.near_miss_words(query, cached) == ("substitution", ["buy"], ["purchase"])
    assert _native.near_miss_words(cached, query) == ("substitution", ["purchase"], ["buy"])
    # refused for a number, or a quantifier changed: nothing left for a synonym to explain
    assert _native.near_miss_words("Buy 2 tickets", "Purchase 3 tickets") == ("number", [], [])
    assert _native.near_miss_words("Delete all branches", "Remove only branches")[1:] == ([], [])


@pytest.mark.parametrize(("query", "cached"), SYNONYM_SWAPS)
async def test_synonyms_are_hits_with_the_word_check(embedder, query, cached):
    similarity = cosine(embedder, query, cached)
    assert not accept(query, cached, similarity, SYNONYMS)
    assert not await accept_async(query, cached, similarity, DEFAULT, embedder)  # off by default
    assert await accept_async(query, cached, similarity, SYNONYMS, embedder)


@pytest.mark.parametrize(("query", "cached"), ENTITY_SWAPS)
async def test_swapped_entities_stay_refused_with_the_word_check(embedder, query, cached):
    assert not await accept_async(query, cached, cosine(embedder, query, cached), SYNONYMS, embedder)


async def test_the_word_check_is_off_by_default_as_close_alternatives_pass_it(embedder):
    """Why `synonym_threshold` defaults to None: the model reads weekdays (and antonyms) as near synonyms."""
    query, cached = "Is the library open on Monday?", "Is the library open on Friday?"
    similarity = cosine(embedder, query, cached)
    assert await accept_async(query, cached, similarity, SYNONYMS, embedder)
    assert not await accept_async(query, cached, similarity, DEFAULT, embedder)


@pytest.mark.parametrize(("query", "cached", "reason"), NEAR_MISSES)
async def test_text_refusals_are_not_left_to_the_word_check(embedder, query, cached, reason):
    """Numbers, units, negation, direction, question words, swaps and opposites refuse whatever the words."""
    loose = MatchSettings(synonym_threshold=-1.0)  # any pair of words would pass
    similarity = cosine(embedder, query, cached)
    accepted = await accept_async(query, cached, similarity, loose, embedder)
    assert accepted == (reason == "substitution" and similarity >= loose.threshold)


async def test_accept_async_agrees_with_accept_without_words(embedder):
    for query, cached in PARAPHRASES + [(q, c) for q, c, _ in NEAR_MISSES]:
        similarity = cosine(embedder, query, cached)
        assert await accept_async(query, cached, similarity, SYNONYMS) == accept(query, cached, similarity, SYNONYMS)
    assert not await accept_async("a", "a", float("nan"), SYNONYMS, embedder)


def test_word_vectors_are_per_text_and_unit_length(embedder):
    first, second, empty = embedder.word_vectors(["Delete the branch, then delete the tag.", "Remove it", ""])
    assert {"delete", "branch", "tag"} <= first.keys() and "remove" in second and empty == {}
    assert all(np.isclose(np.linalg.norm(v), 1.0, atol=1e-5) for v in first.values())
    assert embedder.word_vectors([]) == []
    assert isinstance(embedder.word_vectors(["\ud800 odd"])[0], dict)
