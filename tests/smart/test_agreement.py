"""Answer agreement (the consistency scorer) and the judge's grade."""

from __future__ import annotations

import numpy as np
import pytest

from mmproxy.smart.agreement import (
    exact_votes,
    judge_prompt,
    judge_score,
    judged_votes,
    short_answer,
    similarity_agreement,
)


@pytest.mark.parametrize(("text", "short"), [
    ("So she has 15 + 5 = 20 apples.\n#### 20", "20"),
    ("Adding them up, the answer is 1,250.", "1250"),
    ("The total is $12.50 in the end, after we count each coin and each note she had.", "12.5"),
    ("The final answer is (B) because the others are wrong.", "B"),
    ("\\boxed{7}", "7"),
    ("Paris.", "paris"),
    ('{"label": "refund", "urgent": true}', '{"label":"refund","urgent":true}'),
    ('```json\n{ "urgent": true,  "label": "refund" }\n```', '{"label":"refund","urgent":true}'),
    ("The capital of France has been Paris for a very long time, and it still is today.", None),
])
def test_short_answers_are_normalised(text: str, short: str | None):
    assert short_answer(text) == short


def test_samples_agree_by_their_short_answers():
    share, index, _ = exact_votes(["... #### 20", "so 20 apples. #### 20", "#### 21"])
    assert share == pytest.approx(2 / 3) and index == 0
    assert exact_votes(["B", "(C)", "the answer is D"])[:2] == (pytest.approx(1 / 3), 0)
    assert exact_votes(["a long free text answer without any digits in it at all, many words", "B"]) is None


def test_free_text_agreement_is_the_mean_similarity():
    same = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    score, index = similarity_agreement(same)
    assert score == pytest.approx((1 + 1 + 0 + 0 + 0 + 0) / 6)
    assert index in (0, 1)


@pytest.mark.parametrize(("reply", "score"), [
    ('{"score": 8, "reason": "correct"}', 0.8),
    ('```json\n{"score": 3, "reason": "wrong total"}\n```', 0.3),
    ("I would give it 9 out of 10.", 0.9),
    ('{"score": 14}', 1.0),
    ("No grade here.", None),
])
def test_the_judges_grade_is_read_robustly(reply: str, score: float | None):
    assert judge_score(reply) == (pytest.approx(score) if score is not None else None)


def test_the_judge_sees_only_the_question_and_the_answer():
    messages = judge_prompt("What is 2 + 2?", "4")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "What is 2 + 2?" in messages[1]["content"] and "4" in messages[1]["content"]


@pytest.mark.parametrize(("reply", "votes"), [
    ('{"groups": [[1, 3], [2]]}', (2 / 3, 0, [True, False, True])),
    ('Sure:\n```json\n{"groups": [[2], [1, 3]]}\n```', (2 / 3, 0, [True, False, True])),
    ('{"groups": [[1], [2], [3]]}', (1 / 3, 0, [True, False, False])),
    ('{"groups": [[7, 9]]}', None),
    ("they all agree", None),
])
def test_a_judges_grouping_becomes_votes(reply: str, votes):
    got = judged_votes(reply, 3)
    if votes is None:
        assert got is None
    else:
        assert got is not None and got[0] == pytest.approx(votes[0]) and got[1:] == votes[1:]
