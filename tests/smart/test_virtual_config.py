"""Virtual models in config.yaml: router and cascade blocks, their checks, and what a cascade reserves."""

from __future__ import annotations

import pytest

from mmproxy.cache.embedder import LocalEmbedder
from mmproxy.config import ConfigError, parse_config
from mmproxy.pipeline.cascading import JUDGE_MAX_TOKENS, Cascading
from mmproxy.router.groups import build_groups

BASE = "http://127.0.0.1:9/v1"


def _deployment(name: str, price: float) -> dict:
    return {"model_name": name, "litellm_params": {"model": f"openai/{name}-upstream", "api_base": BASE},
            "model_info": {"input_cost_per_token": price, "output_cost_per_token": 2 * price}}


def _config(*virtual: dict) -> dict:
    return {"model_list": [_deployment("cheap", 1e-7), _deployment("dear", 1e-5), _deployment("judge", 1e-6),
                           *virtual]}


def test_router_and_cascade_blocks_become_settings():
    config = parse_config(_config(
        {"model_name": "smart", "router": {"candidates": ["cheap", "dear"], "cost_weight": 0.2}},
        {"model_name": "frugal", "cascade": {"stages": [
            {"model": "cheap", "scorer": "consistency", "samples": 5}, {"model": "dear"}]}}))
    router = config.smart_routers["smart"]
    assert router.candidates == ("cheap", "dear") and router.cost_weight == 0.2 and router.strong_share is None
    cascade = config.cascades["frugal"]
    assert [s.model for s in cascade.stages] == ["cheap", "dear"]
    assert cascade.stages[0].scorer == "consistency" and cascade.stages[0].samples == 5
    assert cascade.stages[1].scorer is None
    assert {d.model_name for d in config.deployments} == {"cheap", "dear", "judge"}  # no deployment for them
    defaulted = parse_config(_config({"model_name": "s", "router": {"candidates": ["cheap", "dear"]}}))
    assert defaulted.smart_routers["s"].strong_share == 0.5


@pytest.mark.parametrize(("virtual", "message"), [
    ({"model_name": "s", "router": {"candidates": ["cheap"]}}, "at least two"),
    ({"model_name": "s", "router": {"candidates": ["cheap", "nope"]}}, "'nope' is not a model_name"),
    ({"model_name": "s", "router": {"candidates": ["cheap", "dear"], "strong_share": 0.2, "cost_weight": 1}},
     "not strong_share and cost_weight"),
    ({"model_name": "s", "router": {"candidates": ["cheap", "dear"], "strong_sahre": 0.2}}, "unknown key"),
    ({"model_name": "cheap", "router": {"candidates": ["cheap", "dear"]}}, "already a model"),
    ({"model_name": "c", "cascade": {"stages": ["cheap"]}}, "at least two stages"),
    ({"model_name": "c", "cascade": {"stages": ["cheap", {"model": "dear", "scorer": "judge"}]}},
     "last stage's answer is always accepted"),
    ({"model_name": "c", "cascade": {"stages": [{"model": "cheap", "scorer": "judge"}, "dear"]}}, "judge"),
    ({"model_name": "c", "cascade": {"stages": [{"model": "cheap", "scorer": "vibes"}, "dear"]}},
     "one of learned, consistency, judge"),
    ({"model_name": "c", "cascade": {"stages": [{"model": "cheap", "samples": 3}, "dear"]}},
     "consistency scorer only"),
    ({"model_name": "c", "router": {"candidates": ["cheap", "dear"]}, "cascade": {"stages": ["cheap", "dear"]}},
     "not both"),
    ({"model_name": "v", "verify": {"generator": "cheap", "verifier": "cheap"}}, "grade its own answer"),
    ({"model_name": "v", "verify": {"generator": "cheap", "verifier": "dear", "on_reject": "escalate"}},
     "escalate_to"),
    ({"model_name": "v", "verify": {"generator": "cheap", "verifier": "dear", "on_reject": "retry"}},
     "one of flag, regenerate, escalate"),
    ({"model_name": "n", "consensus": {"members": ["cheap"]}}, "at least two"),
    ({"model_name": "n", "consensus": {"members": ["cheap", "dear"], "quorum": 3}}, "between 1 and"),
    ({"model_name": "n", "consensus": {"members": ["cheap", "dear"], "min_agreement": 2}}, "share between"),
    ({"model_name": "r", "review": {"personas": [{"name": "style", "model": "cheap"}]}}, "prompt: required"),
    ({"model_name": "r", "review": {"personas": [{"name": "security", "model": "nope"}]}}, "not a model_name"),
    ({"model_name": "r", "review": {"personas": [{"name": "security", "model": "cheap"},
                                                 {"name": "security", "model": "dear"}]}}, "name of its own"),
])
def test_a_bad_block_is_a_one_line_error_naming_the_key(virtual: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        parse_config(_config(virtual))


def test_a_cascade_reserves_every_call_it_may_make():
    config = parse_config(_config({"model_name": "c", "cascade": {"stages": [
        {"model": "cheap", "scorer": "consistency", "samples": 3},
        {"model": "dear", "scorer": "judge", "judge": "judge"},
        "dear"]}}))
    embedder = LocalEmbedder()
    try:
        cascades = Cascading(config.cascades, build_groups(config.deployments)[0], embedder)
    finally:
        embedder.close()
    prompt, completion = 100, 50
    cheap = 100 * 1e-7 + 50 * 2e-7
    dear = 100 * 1e-5 + 50 * 2e-5
    judge = (100 + 50) * 1e-6 + JUDGE_MAX_TOKENS * 2e-6
    assert cascades.worst_cost("c", prompt, completion) == pytest.approx(3 * cheap + dear + judge + dear)


def test_verify_and_consensus_blocks_become_settings():
    config = parse_config(_config(
        {"model_name": "v", "verify": {"generator": "cheap", "verifier": "dear", "on_reject": "regenerate"}},
        {"model_name": "same", "verify": {"generator": "cheap", "verifier": "cheap", "allow_same_model": True}},
        {"model_name": "n", "consensus": {"members": ["cheap", "dear", "judge"], "deadline": 5}}))
    assert config.verifiers["v"].on_reject == "regenerate" and config.verifiers["same"].on_reject == "flag"
    consensus = config.consensus["n"]
    assert consensus.quorum == 2 and consensus.deadline == 5 and consensus.min_agreement == 0.5
    assert consensus.on_disagreement == "flag"
