"""The learned router's policy: from predicted quality and estimated cost to one candidate."""

from __future__ import annotations

import numpy as np
import pytest

from mmproxy.smart.policy import RECALIBRATE_EVERY, RouterPolicy, break_even, estimate_costs

COST = np.array([0.1, 0.4, 1.0])  # three candidates, cheapest first; the strongest costs one unit


def test_cost_weight_trades_quality_against_cost():
    policy = RouterPolicy(unit_cost=1.0, cost_weight=0.5)
    # gains over the cheapest (0.05, 0.1) are worth less than half their extra cost: the cheapest wins
    assert policy.choose(np.array([0.80, 0.85, 0.90]), COST).index == 0
    # the middle one's gain (0.3 for 0.3 extra) beats both neighbours at λ = 0.5
    assert policy.choose(np.array([0.50, 0.80, 0.85]), COST).index == 1
    assert RouterPolicy(unit_cost=1.0, cost_weight=0.0).choose(np.array([0.5, 0.8, 0.85]), COST).index == 2


def test_min_quality_picks_the_cheapest_candidate_reaching_it_else_the_best():
    policy = RouterPolicy(unit_cost=1.0, min_quality=0.75)
    assert policy.choose(np.array([0.70, 0.76, 0.90]), COST).index == 1
    assert policy.choose(np.array([0.70, 0.60, 0.72]), COST).index == 2
    assert policy.choose(np.array([0.70, 0.74, 0.60]), COST).index == 1  # none reaches it: the best


def test_strong_share_calibrates_on_recent_traffic_to_the_share_asked_for():
    rng = np.random.default_rng(7)
    policy = RouterPolicy(unit_cost=1.0, strong_share=0.3)
    picks = []
    for _ in range(40 * RECALIBRATE_EVERY):
        quality = np.sort(rng.uniform(0.3, 1.0, 3))  # dearer candidates tend to be better, with noise
        rng.shuffle(quality[:2])
        picks.append(policy.choose(quality, COST).index)
    late = np.array(picks[-20 * RECALIBRATE_EVERY:])
    assert abs((late == 2).mean() - 0.3) < 0.05


def test_strong_share_starts_from_the_reference_sample():
    reference = list(np.linspace(0.0, 1.0, 101))
    policy = RouterPolicy(unit_cost=1.0, strong_share=0.25, reference=reference)
    assert policy.weight == pytest.approx(0.75)


def test_break_even_is_where_the_strongest_starts_to_win():
    quality = np.array([[0.5, 0.7, 0.9]])
    weight = break_even(quality, COST[None, :])[0]
    assert weight == pytest.approx(min(0.4 / 0.9, 0.2 / 0.6))
    below = RouterPolicy(unit_cost=1.0, cost_weight=weight * 0.99).choose(quality[0], COST)
    above = RouterPolicy(unit_cost=1.0, cost_weight=weight * 1.01).choose(quality[0], COST)
    assert below.index == 2 and above.index != 2


def test_estimated_cost_prices_the_prompt_and_the_expected_answer():
    cost = estimate_costs(100, np.array([1e-6, 1e-5]), np.array([2e-6, 3e-5]), np.array([10.0, 20.0]))
    assert cost == pytest.approx([100 * 1e-6 + 10 * 2e-6, 100 * 1e-5 + 20 * 3e-5])


def test_exactly_one_operating_point_is_required():
    with pytest.raises(ValueError, match="exactly one"):
        RouterPolicy(unit_cost=1.0)
    with pytest.raises(ValueError, match="exactly one"):
        RouterPolicy(unit_cost=1.0, cost_weight=1.0, strong_share=0.2)
    with pytest.raises(ValueError, match="within"):
        RouterPolicy(unit_cost=1.0, strong_share=1.5)
