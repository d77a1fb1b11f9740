"""The semantic cache's hit decision: cosine similarity, then a check of the two texts, then synonyms.

Why all three: with all-MiniLM-L6-v2, near misses that need another answer ("°F to °C" vs "°C to °F",
"15% of 80" vs "15% of 90", "in Python" vs "in JavaScript", a negation) score 0.83-0.99, above half
of the true paraphrases, so no threshold separates them. The text check (`mmproxy._native.near_miss_words`,
rust/src/nearmiss/) refuses a candidate whose numbers, units, negations, question word, roles around
"to"/"from"/"than"/…, or content words differ. A candidate whose content words all match needs only
`threshold`; one reworded in several places, with no conflict found, needs `reworded_threshold`.

From text alone a synonym ("delete" / "remove", "puppy" / "pup") looks like a changed entity ("Python" /
"JavaScript"), so the text check refuses it. `accept_async` then compares the differing words as the
model reads them in their sentences (contextual token vectors, as BERTScore does): a candidate is a hit
when every content word only one side has finds a counterpart on the other side with a cosine of at
least `synonym_threshold`. Words in context separate the two cases better than isolated words do
("delete"/"remove" 0.80 in context, 0.76 alone; "dogs"/"cats" 0.60 in context, 0.71 alone), but not
cleanly: "Monday"/"Friday" scores 0.79, and antonyms ("opposite" near misses) up to 0.84, as in any
distributional model. At the bound the tune half allowed (0.67) the check half took 4 more near misses,
at 0.8 one more, for 7 and 3 more paraphrases. So the check is off by default (None): set a bound only
where a wrong hit costs less than a miss. Numbers, negation, direction, units, question words and
quantifiers are never left to it.

Defaults were tuned on one half of the paraphrase dev set (benches/bench_paraphrase.py) and are reported
on the other half; see "Semantic cache quality" in benches/RESULTS.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from mmproxy import _native

if TYPE_CHECKING:
    import numpy as np

    from mmproxy._native import NearMissVerdict

__all__ = ["MatchSettings", "WordVectors", "accept", "accept_async", "synonyms", "verdict"]


@dataclass(frozen=True)
class MatchSettings:
    """`threshold`: least cosine for a hit. `verify`: check the texts (off = cosine only).
    `reworded_threshold`: least cosine for a verified candidate whose wording differs beyond
    question-framing words. `synonym_threshold`: least cosine, in context, between each differing word
    and its counterpart for `accept_async` to take the pair as reworded with synonyms (None: never)."""

    threshold: float = 0.75
    verify: bool = True
    reworded_threshold: float = 0.85
    synonym_threshold: float | None = None


DEFAULT_SETTINGS = MatchSettings()


class WordVectors(Protocol):
    """What `accept_async` needs from the embedder (mmproxy.cache.embedder.LocalEmbedder has it)."""

    async def word_vectors_async(self, texts: list[str]) -> list[dict[str, np.ndarray]]: ...


def verdict(query: str, cached: str) -> NearMissVerdict:
    """Returns "same", "reworded", or why `cached`'s answer does not serve `query` ("number", "negation",
    "direction", "substitution", …): for logs and metrics. A few µs for a question-sized text."""
    return _native.near_miss_verdict(query, cached)


def _by_text(text_verdict: NearMissVerdict, cosine: float, settings: MatchSettings) -> bool:
    return text_verdict == "same" or (text_verdict == "reworded" and cosine >= settings.reworded_threshold)


def accept(query: str, cached: str, cosine: float, settings: MatchSettings = DEFAULT_SETTINGS) -> bool:
    """Whether the cached entry for prompt `cached` may answer `query`, given their embeddings' cosine,
    from the texts alone (no synonyms: `accept_async` adds them)."""
    if not cosine >= settings.threshold:  # also refuses NaN
        return False
    return not settings.verify or _by_text(_native.near_miss_verdict(query, cached), cosine, settings)


async def accept_async(
    query: str,
    cached: str,
    cosine: float,
    settings: MatchSettings = DEFAULT_SETTINGS,
    words: WordVectors | None = None,
) -> bool:
    """`accept`, and a pair the texts alone refuse for a changed word is a hit when the model reads each
    changed word as a synonym of one on the other side. Costs one forward pass of both texts, in the
    embedder's thread, only for a candidate above `threshold` that differs in content words alone.
    `words`: the local embedder (the bound holds for its model only; None = `accept`)."""
    if not cosine >= settings.threshold:
        return False
    if not settings.verify:
        return True
    text_verdict, only_query, only_cached = _native.near_miss_words(query, cached)
    if _by_text(text_verdict, cosine, settings):
        return True
    bound = settings.synonym_threshold
    if words is None or bound is None or not only_query or not only_cached:
        return False
    in_query, in_cached = await words.word_vectors_async([query, cached])
    return synonyms(only_query, in_query, only_cached, in_cached) >= bound


def synonyms(
    words_a: list[str], vectors_a: dict[str, np.ndarray], words_b: list[str], vectors_b: dict[str, np.ndarray]
) -> float:
    """The least, over the words of both lists, of the cosine to the closest word of the other list (the
    worst-matched word decides); 0.0 when a word has no vector (it was truncated or split otherwise)."""
    try:
        import numpy as np  # only when the synonym check is on

        a = np.stack([vectors_a[w] for w in words_a])
        b = np.stack([vectors_b[w] for w in words_b])
    except (KeyError, ValueError):
        return 0.0
    cosines = a @ b.T
    return float(min(cosines.max(axis=1).min(), cosines.max(axis=0).min()))
