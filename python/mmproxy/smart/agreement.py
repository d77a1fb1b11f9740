"""Answer agreement (the cascade's consistency scorer: when several samples of a cheap model agree, its answer is
likely right, FrugalGPT's signal; the consensus virtual model's vote), and the prompts and reply parsing of
judges and verifiers.

Short answers are compared exactly once normalised: a JSON answer by its canonical form, a stated final answer
("#### 42", "the answer is B", ``\\boxed{7}``), else the last number, else a short text lower-cased without
punctuation. Free text is compared by the embedding similarity of the answers, or grouped by a judge model.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import orjson

_FINAL = re.compile(r"(?:####|answer is|final answer(?: is)?:?|\\boxed\{|^answer\s*:)\s*\(?\$?\s*([^\n}]{1,40})",
                    re.IGNORECASE | re.MULTILINE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_OPTION = re.compile(r"^\(?([A-J])[).:]?(?:\s|$)")
_SHORT_WORDS = 8


def short_answer(text: str) -> str | None:
    """The answer's normalised short form, or None for free text. A JSON answer is its canonical form (keys
    sorted), so the same fields and values agree whatever their order and spacing."""
    stripped = text.strip().removeprefix("```json").strip("`").strip()
    if stripped[:1] in ("{", "["):
        try:
            return orjson.dumps(orjson.loads(stripped), option=orjson.OPT_SORT_KEYS).decode()
        except orjson.JSONDecodeError:
            pass
    final = _FINAL.findall(text)
    candidate = final[-1].strip() if final else None
    if candidate is None:
        stripped = text.strip()
        if len(stripped.split()) <= _SHORT_WORDS:
            candidate = stripped
        else:
            numbers = _NUMBER.findall(text)
            return _number(numbers[-1]) if numbers else None
    option = _OPTION.match(candidate)
    if option:
        return option.group(1)
    numbers = _NUMBER.findall(candidate)
    if numbers:
        return _number(numbers[0])
    return re.sub(r"[^\w\s]", "", candidate).lower().strip() or None


def states_final(text: str) -> bool:
    """Whether ``text`` states a final answer ("#### 42", "the answer is B", ``\\boxed{7}``): what ``short_answer``
    reads first."""
    return _FINAL.search(text) is not None


def _number(text: str) -> str:
    value = float(text.replace(",", ""))
    return str(int(value)) if value.is_integer() else f"{value:g}"


def similarity_agreement(vectors: np.ndarray) -> tuple[float, int]:
    """(mean pairwise cosine of unit ``vectors``, index of the one closest to the others)."""
    n = len(vectors)
    if n < 2:
        return 1.0, 0
    similarity = vectors @ vectors.T
    closeness = (similarity.sum(axis=1) - 1.0) / (n - 1)
    return float(closeness.mean()), int(np.argmax(closeness))


JUDGE_SYSTEM = ("You grade another assistant's answer to a user's question. Judge only whether the answer is "
                "correct, complete and responsive to the question; ignore style. Reply with a JSON object: "
                '{"score": <integer 0 to 10>, "reason": "<one sentence>"}.')


def judge_prompt(question: str, answer: str) -> list[dict[str, str]]:
    """The judge's messages: the question and the answer only, none of the generator's own context."""
    return [{"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": f"Question:\n{question}\n\nAnswer to grade:\n{answer}"}]


def judge_score(reply: str) -> float | None:
    """The judge's grade scaled to [0, 1]: ``{"score": n}`` (also inside a code fence or prose), else the first
    number 0-10; None when the reply holds no grade."""
    start, end = reply.find("{"), reply.rfind("}")
    if 0 <= start < end:
        try:
            grade = orjson.loads(reply[start:end + 1])
            if isinstance(grade, dict) and isinstance(grade.get("score"), (int, float)):
                return min(max(float(grade["score"]), 0.0), 10.0) / 10
        except orjson.JSONDecodeError:
            pass
    for number in _NUMBER.findall(reply):
        value = float(number.replace(",", ""))
        if 0 <= value <= 10:
            return value / 10
    return None


AGREE_SIMILARITY = 0.85  # free-text answers this close (cosine of their embeddings) count as the same answer


def similar_votes(vectors: np.ndarray, threshold: float = AGREE_SIMILARITY) -> tuple[float, int, list[bool]]:
    """Free-text answers as votes: (share of answers agreeing with the most agreed-with one, its index, whether
    each answer agrees with it). Two answers agree when their unit embeddings' cosine reaches ``threshold``."""
    agree = (vectors @ vectors.T) >= threshold
    index = int(np.argmax(agree.sum(axis=1)))
    return float(agree[index].mean()), index, [bool(a) for a in agree[index]]


def exact_votes(answers: Sequence[str]) -> tuple[float, int, list[bool]] | None:
    """(share of answers agreeing with the most common short answer, index of one of them, whether each answer
    agrees with it); None when any answer is free text."""
    return votes_of([short_answer(a) for a in answers])


def votes_of(keys: Sequence[str | None]) -> tuple[float, int, list[bool]] | None:
    """``exact_votes`` of answers whose ``short_answer`` is already known."""
    if not keys or any(k is None for k in keys):
        return None
    top, votes = Counter(keys).most_common(1)[0]
    return votes / len(keys), list(keys).index(top), [k == top for k in keys]


VERIFIER_SYSTEM = ("You verify another assistant's answer to a user's question. Check it for factual errors, wrong "
                   "reasoning or arithmetic, and whether it answers what was asked. Reply with a JSON object only: "
                   '{"verdict": "accept" or "reject", "reasons": ["<short reason>", ...], '
                   '"severity": "none", "low", "medium" or "high"}.')
SEVERITIES = ("none", "low", "medium", "high")


def verifier_prompt(question: str, answer: str) -> list[dict[str, str]]:
    """The verifier's messages: the user's question and the answer only, never the generator's context."""
    return [{"role": "system", "content": VERIFIER_SYSTEM},
            {"role": "user", "content": f"Question:\n{question}\n\nAnswer to verify:\n{answer}"}]


def parse_verdict(reply: str) -> dict[str, object] | None:
    """``{"verdict": "accept"|"reject", "reasons": [...], "severity": ...}`` from a verifier's reply: its JSON
    object (also inside a code fence or prose), else a reply that says only one of accept / reject; None when
    the reply holds no verdict."""
    start, end = reply.find("{"), reply.rfind("}")
    if 0 <= start < end:
        try:
            raw = orjson.loads(reply[start:end + 1])
        except orjson.JSONDecodeError:
            raw = None
        if isinstance(raw, dict):
            verdict = str(raw.get("verdict", "")).strip().lower()
            if verdict in ("accept", "reject"):
                reasons = raw.get("reasons")
                reasons = [str(r) for r in reasons] if isinstance(reasons, list) else [str(reasons)] if reasons else []
                severity = str(raw.get("severity", "")).strip().lower()
                return {"verdict": verdict, "reasons": reasons[:10],
                        "severity": severity if severity in SEVERITIES else None}
    words = set(re.findall(r"\b(accept|reject)(?:ed|s)?\b", reply.lower()))
    if len(words) == 1:
        return {"verdict": words.pop(), "reasons": [], "severity": None}
    return None


GROUPER_SYSTEM = ("You compare answers that different assistants gave to the same question. Group the answers "
                  "that say the same thing (the same conclusion or facts, whatever the wording); an answer that "
                  'disagrees with all others is a group of its own. Reply with a JSON object only: {"groups": '
                  "[[<answer numbers>], ...]}.")


def grouper_prompt(question: str, answers: Sequence[str]) -> list[dict[str, str]]:
    """A judge's messages for comparing free-text answers: the question and the numbered answers only."""
    listed = "\n\n".join(f"Answer {i}:\n{a}" for i, a in enumerate(answers, 1))
    return [{"role": "system", "content": GROUPER_SYSTEM},
            {"role": "user", "content": f"Question:\n{question}\n\n{listed}"}]


def judged_votes(reply: str, count: int) -> tuple[float, int, list[bool]] | None:
    """``similar_votes`` from a judge's grouping of ``count`` answers (``{"groups": [[1, 3], [2]]}``, numbered from
    1); None when the reply holds no usable grouping."""
    start, end = reply.find("{"), reply.rfind("}")
    if not 0 <= start < end:
        return None
    try:
        groups = orjson.loads(reply[start:end + 1]).get("groups")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if not isinstance(groups, list):
        return None
    members = [{i - 1 for i in g if isinstance(i, int) and 1 <= i <= count} for g in groups if isinstance(g, list)]
    members = [g for g in members if g]
    if not members:
        return None
    largest = max(members, key=len)
    index = min(largest)
    return len(largest) / count, index, [i in largest for i in range(count)]
