"""The semantic cache's hit decision: cosine similarity, then a check of the two texts.

Why both: with all-MiniLM-L6-v2, near misses that need another answer ("°F to °C" vs "°C to °F",
"15% of 80" vs "15% of 90", "in Python" vs "in JavaScript", a negation) score 0.83-0.99, above half
of the true paraphrases, so no threshold separates them. The text check (`mmproxy._native.verify_pair`,
rust/src/verify.rs) refuses a candidate whose numbers, units, negations, question word, roles around
"to"/"from"/"than"/…, or content words differ. A candidate whose content words all match needs only
`threshold`; one reworded in several places, with no conflict found, needs `reworded_threshold`.

Defaults were tuned on one half of the paraphrase dev set (benches/bench_paraphrase.py) and are reported
on the other half; see "Semantic cache quality" in benches/RESULTS.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmproxy import _native

__all__ = ["MatchSettings", "accept", "verdict"]


@dataclass(frozen=True)
class MatchSettings:
    """`threshold`: least cosine for a hit. `verify`: check the texts (off = cosine only).
    `reworded_threshold`: least cosine for a verified candidate whose wording differs beyond
    question-framing words."""

    threshold: float = 0.75
    verify: bool = True
    reworded_threshold: float = 0.85


DEFAULT_SETTINGS = MatchSettings()


def verdict(query: str, cached: str) -> str:
    """Returns "same", "reworded", or why `cached`'s answer does not serve `query` ("number", "negation",
    "direction", "substitution", …): for logs and metrics. A few µs for a question-sized text."""
    return _native.verify_pair(query, cached)


def accept(query: str, cached: str, cosine: float, settings: MatchSettings = DEFAULT_SETTINGS) -> bool:
    """Whether the cached entry for prompt `cached` may answer `query`, given their embeddings' cosine."""
    if not cosine >= settings.threshold:  # also refuses NaN
        return False
    if not settings.verify:
        return True
    match _native.verify_pair(query, cached):
        case "same":
            return True
        case "reworded":
            return cosine >= settings.reworded_threshold
        case _:
            return False
