"""The cascade's parts: answer features, walking the stages, choosing thresholds, the plan's file."""

from __future__ import annotations

import numpy as np
import pytest

from mmproxy.smart.cascade import CascadePlan, choose_thresholds, outcome, walk
from mmproxy.smart.features import ANSWER_FEATURE_NAMES, answer_features
from mmproxy.smart.files import ModelFileError


def _feature(answer: str, name: str) -> float:
    return answer_features(answer)[ANSWER_FEATURE_NAMES.index(name)]


def test_wrong_arithmetic_in_an_answer_is_caught():
    right = "She buys 3 * 12 = 36 donuts, then 36 + 4 = 40 in all. The answer is 40."
    wrong = "She buys 3 * 12 = 38 donuts, then 38 + 4 = 42 in all. The answer is 42."
    assert _feature(right, "arithmetic_checked") == pytest.approx(0.2)
    assert _feature(right, "arithmetic_wrong") == 0
    assert _feature(wrong, "arithmetic_wrong") > 0
    assert _feature("Toula paid 36 * 68/12 = $<<36*68/12=204>>204.\n#### 204", "arithmetic_wrong") == 0


def test_a_cut_off_answer_states_no_final_answer():
    assert _feature("Step one: 15 + 25 = 40.\n#### 20", "final_answer") == 1
    assert _feature("Step one: 15 + 25 = <<15+2", "final_answer") == 0
    assert _feature("Step one: 15 + 25 = <<15+2", "ends_cleanly") == 0


def test_walk_answers_at_the_first_stage_whose_score_reaches_its_threshold():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.1]])
    assert walk(scores, [0.5, 0.5]).tolist() == [0, 1, 2]
    quality = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    cost = np.array([[1.0, 2.0, 10.0]] * 3)
    q, c = outcome(walk(scores, [0.5, 0.5]), quality, cost)
    assert q == pytest.approx(1.0) and c == pytest.approx((1 + 3 + 13) / 3)


def test_thresholds_reach_the_quality_asked_for_at_the_least_cost():
    rng = np.random.default_rng(3)
    n = 400
    good = rng.random(n) < 0.6  # the cheap stage is right on 60%
    scores = np.where(good, rng.uniform(0.4, 1.0, n), rng.uniform(0.0, 0.6, n))[:, None]
    quality = np.column_stack([good.astype(float), np.ones(n)])
    cost = np.column_stack([np.full(n, 0.01), np.ones(n)])
    _thresholds, q, c = choose_thresholds(scores, quality, cost, min_quality=0.95)
    assert q >= 0.95
    assert c < 0.7  # well under always escalating (1.01)
    _looser, q2, c2 = choose_thresholds(scores, quality, cost, max_cost=0.3)
    assert c2 <= 0.3 and q2 < q


def test_an_unreachable_target_escalates_everything():
    scores = np.array([[0.5], [0.6]])
    quality = np.array([[0.0, 0.5], [0.0, 0.5]])
    thresholds, q, _ = choose_thresholds(scores, quality, np.ones((2, 2)), min_quality=0.9)
    assert thresholds == [float("inf")] and q == 0.5


def test_a_plan_survives_its_file(tmp_path):
    plan = CascadePlan(("cheap", "dear"), [np.array([0.5, -1.0, 0.25])], [0.62], {"records": 3})
    plan.save(tmp_path / "c.npz")
    again = CascadePlan.load(tmp_path / "c.npz")
    assert again.stages == plan.stages and again.thresholds == [0.62] and again.meta == {"records": 3}
    rows = np.array([[1.0, 2.0]])
    assert again.score(0, rows) == pytest.approx(plan.score(0, rows))
    (tmp_path / "bad.npz").write_bytes(b"not a cascade")
    with pytest.raises(ModelFileError):
        CascadePlan.load(tmp_path / "bad.npz")
