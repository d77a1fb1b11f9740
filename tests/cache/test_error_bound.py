"""The error bound's statistics: the binomial bound, the features, and a bound that serves only what its outcomes
certify — checked on synthetic traffic whose true error rates are known."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from mmproxy.cache.error_bound import NEIGHBOURS, ErrorBound, Evidence, features, kl_upper_bound


def test_the_binomial_bound_covers_the_rate_and_tightens_with_more_outcomes():
    assert kl_upper_bound(0, 100, 0.95) == pytest.approx(1 - math.exp(-math.log(20) / 100), rel=1e-6)
    assert kl_upper_bound(5, 100, 0.95) > 0.05
    assert kl_upper_bound(50, 1000, 0.95) < kl_upper_bound(5, 100, 0.95)
    assert kl_upper_bound(5, 100, 0.99) > kl_upper_bound(5, 100, 0.95)
    assert kl_upper_bound(0, 0, 0.95) == 1.0


def test_features_read_the_whole_neighbourhood():
    agree = features([0.9, 0.85, 0.8, 0.7, 0.6], [True, True, True, True, True], None)
    assert agree[1] == 1.0  # every neighbour's answer is the nearest one's
    split = features([0.9, 0.88, 0.8, 0.7, 0.6], [True, False, True, True, True], None)
    assert split[1] == pytest.approx(4 / NEIGHBOURS)
    assert split[2] == pytest.approx(0.9 - 0.88)  # the margin to the nearest prompt answered otherwise
    alone = features([0.9], [True], None)
    assert alone[1] == pytest.approx(1 / NEIGHBOURS) and alone[2] == pytest.approx(0.9)  # missing: disagreeing
    evidence = Evidence()
    evidence.add(0.85, True)  # right for a less similar prompt: counts
    evidence.add(0.95, True)  # right only for a closer one: does not
    evidence.add(0.92, False)  # wrong for a closer prompt: counts against
    with_evidence = features([0.9, 0.8], [True, True], evidence)
    assert with_evidence[3] == pytest.approx(math.log1p(1)) and with_evidence[4] == pytest.approx(math.log1p(1))


def _traffic(bound: ErrorBound, rng: random.Random, requests: int) -> tuple[int, int]:
    """Requests whose P(right) rises with the cosine (the first feature); explored ones teach the bound. Returns
    (served, served wrong)."""
    served = wrong = 0
    for _ in range(requests):
        cosine = rng.uniform(0.6, 1.0)
        agreement = rng.random()
        p_right = 1 / (1 + math.exp(-(30 * (cosine - 0.8) + 2 * agreement)))
        x = features([cosine], [True], None)
        x[1] = agreement
        right = rng.random() < p_right
        decision = bound.decide(x)
        if decision.serve:
            served += 1
            wrong += not right
            continue
        bound.observe(x, right)
        if bound.due:
            bound.refit()
    return served, wrong


@pytest.mark.parametrize("delta", [0.02, 0.05, 0.1])
def test_served_hits_stay_within_the_bound(delta: float):
    bound = ErrorBound(delta, rng=random.Random(3))
    served, wrong = _traffic(bound, random.Random(11), 6000)
    assert served > 600  # the bound serves plenty once certified...
    assert wrong / served <= delta  # ...and what it serves is right often enough


def test_nothing_is_served_before_outcomes_certify_a_cutoff():
    bound = ErrorBound(0.01, rng=random.Random(1))
    x = features([0.99] * NEIGHBOURS, [True] * NEIGHBOURS, None)
    assert not bound.decide(x).serve and math.isnan(bound.decide(x).p_right)
    for _ in range(100):  # far fewer outcomes than a 1 % bound needs, all of them right
        bound.observe(x, True)
    bound.refit()
    assert bound.cutoff is None and not bound.decide(x).serve


def test_traffic_that_is_always_wrong_is_never_served():
    bound = ErrorBound(0.05, rng=random.Random(2))
    rng = np.random.default_rng(4)
    for _ in range(2000):
        x = features([float(rng.uniform(0.7, 1.0))], [True], None)
        bound.observe(x, bool(rng.random() < 0.2))  # 80 % wrong whatever the features
        if bound.due:
            bound.refit()
    assert bound.cutoff is None


def test_a_share_of_certified_requests_is_explored():
    bound = ErrorBound(0.05, explore_rate=0.2, rng=random.Random(5))
    _traffic(bound, random.Random(6), 4000)
    assert bound.cutoff is not None
    x = features([0.99], [True], None)  # as _traffic makes them, far above the cutoff
    x[1] = 1.0
    decisions = [bound.decide(x) for _ in range(2000)]
    assert all(d.certified for d in decisions)
    assert sum(not d.serve for d in decisions) / len(decisions) == pytest.approx(0.2, abs=0.03)


def test_settings_out_of_range_are_refused():
    for bad in ({"max_error_rate": 0.0}, {"max_error_rate": 1.0}, {"max_error_rate": 0.1, "confidence": 1.0},
                {"max_error_rate": 0.1, "explore_rate": 0.0}):
        with pytest.raises(ValueError):
            ErrorBound(**bad)


def test_what_a_bound_learned_survives_a_restart(tmp_path):
    from mmproxy.cache.answers import Exact
    from mmproxy.cache.verified import VerifiedHits
    from mmproxy.config import CacheSettings

    settings = CacheSettings(semantic=True, max_error_rate=0.05)
    before = VerifiedHits(settings, Exact(), random.Random(1))
    _traffic(before.bound("workload a"), random.Random(2), 3000)
    before.bound("workload a").refit()  # on the last outcomes too, as the restored one does
    assert before.bound("workload a").cutoff is not None
    before.save(tmp_path / "bounds.npz")
    after = VerifiedHits(settings, Exact(), random.Random(1))
    after.load(tmp_path / "bounds.npz")
    assert after.bound("workload a").cutoff == pytest.approx(before.bound("workload a").cutoff)
    assert len(after.bound("workload a")) == len(before.bound("workload a"))
    (tmp_path / "bounds.npz").write_bytes(b"garbage")
    broken = VerifiedHits(settings, Exact())
    broken.load(tmp_path / "bounds.npz")  # warned about, then learned afresh
    assert broken.bound("workload a").cutoff is None
