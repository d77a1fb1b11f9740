"""Training the router's quality model and a cascade on small records, with the real local embedder."""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest

from mmproxy import tokens
from mmproxy.cache.embedder import LocalEmbedder
from mmproxy.smart.features import prompt_matrix
from mmproxy.smart.feedback import encode_features, rated_rows, retrain
from mmproxy.smart.files import ModelFileError
from mmproxy.smart.model import QualityModel
from mmproxy.smart.records import Outcome, Price, Record, split
from mmproxy.smart.router import LearnedRouter
from mmproxy.smart.train import train_cascade, train_router

WEAK, STRONG = "weak-model", "strong-model"
PRICES = {WEAK: Price(1e-7, 1e-7), STRONG: Price(1e-5, 3e-5)}
COUNTRIES = ["France", "Japan", "Kenya", "Peru", "Norway", "Egypt", "Canada", "India", "Chile", "Spain", "Italy",
             "Ghana", "Nepal", "Cuba", "Iran", "Laos", "Mali", "Oman", "Fiji", "Chad", "Togo", "Iraq", "Yemen"]


def _arithmetic(rng: random.Random) -> str:
    a, b, c = rng.randint(12, 99), rng.randint(12, 99), rng.randint(2, 9)
    return f"A shop sells {a} boxes with {b} pencils each and gives away {c} boxes. How many pencils are left?"


def _geography(country: str) -> str:
    return f"What is the capital city of {country}?"


def _records() -> list[Record]:
    rng = random.Random(5)
    records = []
    for i in range(24):  # the weak model fails word problems, the strong one solves them
        records.append(Record(f"math/{i}", "math", _arithmetic(rng), {
            WEAK: Outcome("12 boxes.", 0.0), STRONG: Outcome("So 3 * 12 = 36 pencils. The answer is 36.", 1.0)}))
    for i, country in enumerate(COUNTRIES[:20]):  # both know capitals
        records.append(Record(f"geo/{i}", "geo", _geography(country), {
            WEAK: Outcome("Its capital.", 1.0), STRONG: Outcome("The capital is its capital.", 1.0)}))
    return records


@pytest.fixture(scope="module")
def embedder():
    e = LocalEmbedder()
    yield e
    e.close()


@pytest.fixture(scope="module")
def trained(embedder, tmp_path_factory):
    model = train_router(_records(), [WEAK, STRONG], embedder, PRICES, k=5)  # neighbours: a few, on 44 records
    path = tmp_path_factory.mktemp("router") / "router.npz"
    model.save(path)
    return QualityModel.load(path)


def test_the_router_sends_each_kind_of_prompt_where_it_is_answered_well(trained, embedder):
    rng = random.Random(99)
    unseen = [_arithmetic(rng), _arithmetic(rng), _geography("Peru and Bolivia"), _geography(COUNTRIES[21])]
    vectors, cheap = prompt_matrix(embedder, unseen)
    quality, _ = trained.predict(vectors, cheap)
    assert (quality[:2, 1] - quality[:2, 0] > 0.4).all()  # the strong model is far likelier to solve these
    assert (np.abs(quality[2:, 1] - quality[2:, 0]) < 0.3).all()
    router = LearnedRouter(trained, [0, 1], np.array([1e-7, 1e-5]), np.array([1e-7, 3e-5]), cost_weight=0.3)
    picks = [router.route(vectors[i], cheap[i], 30).decision.index for i in range(4)]
    assert picks == [1, 1, 0, 0]


def test_a_router_over_a_subset_of_candidates_uses_their_columns(trained, embedder):
    vectors, cheap = prompt_matrix(embedder, [_geography("Chad")])
    router = LearnedRouter(trained, [1], np.array([1e-5]), np.array([3e-5]), min_quality=0.5)
    quality, cost = router.predict(vectors, cheap, 10)
    assert quality.shape == cost.shape == (1, 1)
    assert quality[0, 0] == pytest.approx(trained.predict(vectors, cheap)[0][0, 1])


def test_training_stores_what_calibration_and_cost_estimates_need(trained):
    assert len(trained.meta["reference"]) == 44
    typical = trained.meta["typical"]
    assert typical["prompt_tokens"] > 5 and typical["answer_tokens"][1] > typical["answer_tokens"][0]


def test_a_cascade_learns_to_accept_the_cheap_answer_where_it_is_right(trained, embedder):
    plan = train_cascade(_records(), [WEAK, STRONG], trained, embedder, PRICES)
    assert plan.stages == (WEAK, STRONG) and len(plan.thresholds) == 1
    assert plan.meta["fitted_quality"] >= plan.meta["last_stage_quality"]
    # Every capital stays on the weak model; what is left is the word problems' share of the strong model's cost.
    records = _records()
    strong_cost = [tokens.count(r.prompt) * 1e-5 + tokens.count(r.models[STRONG].answer or "") * 3e-5
                   for r in records]
    word_problems = sum(c for c, r in zip(strong_cost, records, strict=True) if r.task == "math") / sum(strong_cost)
    assert plan.meta["fitted_cost_share"] == pytest.approx(word_problems, abs=0.01)


def test_a_damaged_model_file_is_a_clear_error(tmp_path):
    (tmp_path / "m.npz").write_bytes(b"\x00" * 10)
    with pytest.raises(ModelFileError, match="cannot read"):
        QualityModel.load(tmp_path / "m.npz")


def test_the_split_by_prompt_id_is_deterministic_and_near_its_share():
    records = [Record(f"r/{i}", "t", "p", {}) for i in range(2000)]
    fit, check = split(records, 0.7)
    assert abs(len(fit) / 2000 - 0.7) < 0.03
    assert [r.id for r in split(records, 0.7)[0]] == [r.id for r in fit]
    assert not {r.id for r in fit} & {r.id for r in check}


def test_retraining_on_feedback_follows_a_drift_and_keeps_a_better_model(trained, embedder):
    """The weak model got better at word problems: rated requests say so, and the retrained model learns it."""
    rng = random.Random(11)
    prompts = [_arithmetic(rng) for _ in range(40)]
    vectors, cheap = prompt_matrix(embedder, prompts)
    rows = [{"decision": orjson.dumps({"learned_as": WEAK, "prompt_tokens": tokens.count(p),
                                       "features": encode_features(v, c)}).decode(),
             "feedback_score": 1.0, "completion_tokens": 12, "started": float(i)}
            for i, (p, v, c) in enumerate(zip(prompts, vectors, cheap, strict=True))]
    rated = rated_rows(rows, trained.candidates, vectors.shape[1])
    assert rated is not None and len(rated) == 40
    assert (rated.known[:, 0] == 1).all() and (rated.known[:, 1] == 0).all()
    before = trained.predict(vectors[-8:], cheap[-8:])[0][:, 0].mean()
    result = retrain(trained, trained, rated)
    assert result.model is not None and result.new_error < result.old_error
    assert result.model.predict(vectors[-8:], cheap[-8:])[0][:, 0].mean() > before + 0.2
    assert len(result.model.data) == len(trained.data) + 40


def test_retraining_keeps_the_model_in_use_when_the_new_one_predicts_worse(trained, embedder):
    rng = random.Random(12)
    prompts = [_arithmetic(rng) for _ in range(20)]
    vectors, cheap = prompt_matrix(embedder, prompts)
    # the older ratings say the weak model solves word problems, the newest (held out) say it fails them again
    rows = [{"decision": orjson.dumps({"learned_as": WEAK, "prompt_tokens": 30,
                                       "features": encode_features(v, c)}).decode(),
             "feedback_score": 1.0 if i < 16 else 0.0, "completion_tokens": 12, "started": float(i)}
            for i, (v, c) in enumerate(zip(vectors, cheap, strict=True))]
    rated = rated_rows(rows, trained.candidates, vectors.shape[1])
    result = retrain(trained, trained, rated)
    assert result.model is None and result.new_error > result.old_error


def test_rows_without_features_are_not_training_rows(trained):
    rows = [{"decision": '{"router": "smart", "choice": "x"}', "feedback_score": 1.0, "started": 1.0},
            {"decision": "not json", "feedback_score": 0.0, "started": 2.0}]
    assert rated_rows(rows, trained.candidates, 384) is None
