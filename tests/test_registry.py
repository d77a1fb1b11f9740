"""Shipped model defaults: the data file is well-formed and lookups find the right entry."""

import json
import math
from importlib import resources

import pytest

from mmproxy.registry import MODES, STRENGTHS, TIERS, ModelDefaults, all_defaults, defaults_for

PRICE_FIELDS = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
)
KNOWN_FIELDS = {"tier", "strengths", "mode", "max_input_tokens", "max_output_tokens", "source", "batch_discount",
                *PRICE_FIELDS}


def _raw() -> dict:
    return json.loads(resources.files("mmproxy").joinpath("data/models.json").read_text(encoding="utf-8"))


def test_data_file_has_about_and_models():
    raw = _raw()
    assert "USD per token" in raw["_about"]
    assert "model_info" in raw["_about"]
    assert len(raw["models"]) >= 30


@pytest.mark.parametrize("name", sorted(_raw()["models"]))
def test_every_entry_is_valid(name):
    raw = _raw()["models"][name]
    assert set(raw) <= KNOWN_FIELDS, f"unknown fields {set(raw) - KNOWN_FIELDS}"
    assert "/" not in name and name == name.lower()
    assert raw["tier"] in TIERS
    assert raw["mode"] in MODES
    assert set(raw["strengths"]) <= set(STRENGTHS)
    assert raw["source"]
    for field in PRICE_FIELDS:
        if field in raw:
            value = raw[field]
            assert isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, field
            assert value < 1e-3, f"{field} looks like a per-1M price, not per token"
    if "batch_discount" in raw:
        assert 0 < raw["batch_discount"] < 1, "batch_discount is the fraction taken off, not the price paid"
    for field in ("max_input_tokens", "max_output_tokens"):
        if field in raw:
            assert isinstance(raw[field], int) and raw[field] > 0
    entry = all_defaults()[name]
    assert isinstance(entry, ModelDefaults) and entry.model == name


def test_spot_prices_per_token():
    mini = defaults_for("gpt-4o-mini")
    assert mini is not None
    assert mini.input_cost_per_token == pytest.approx(0.15e-6)
    assert mini.output_cost_per_token == pytest.approx(0.60e-6)
    sonnet = defaults_for("claude-sonnet-4-5")
    assert sonnet is not None and sonnet.tier == "frontier"
    assert sonnet.cache_creation_input_token_cost == pytest.approx(3.75e-6)


def test_local_models_are_free_economy():
    for name in ("llama3.1", "qwen2.5", "mistral"):
        entry = defaults_for(name)
        assert entry is not None
        assert entry.tier == "economy"
        assert entry.input_cost_per_token == 0 and entry.output_cost_per_token == 0


def test_entries_are_frozen():
    entry = defaults_for("gpt-4o")
    assert entry is not None
    with pytest.raises(AttributeError):
        entry.tier = "economy"  # type: ignore[misc]


def test_exact_lookup():
    entry = defaults_for("gpt-4.1-nano")
    assert entry is not None and entry.model == "gpt-4.1-nano"
    embedding = defaults_for("text-embedding-3-small")
    assert embedding is not None and embedding.mode == "embedding"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("llama3.1:8b", "llama3.1"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
    ],
)
def test_snapshot_shares_its_aliass_tier_strengths_and_price(given, expected):
    """A dated snapshot the generated table lists has its own entry; it still routes and bills as its alias."""
    entry, alias = defaults_for(given), defaults_for(expected)
    assert entry is not None and alias is not None and alias.model == expected
    assert (entry.tier, entry.strengths, entry.tier_derived) == (alias.tier, alias.strengths, False)
    assert (entry.input_cost_per_token, entry.output_cost_per_token) == (alias.input_cost_per_token,
                                                                         alias.output_cost_per_token)


def test_longest_prefix_wins():
    entry = defaults_for("gpt-4o-mini-2099-07-18")
    assert entry is not None and entry.model == "gpt-4o-mini"
    entry = defaults_for("gpt-4.1-mini-2099-04-14")
    assert entry is not None and entry.model == "gpt-4.1-mini"


@pytest.mark.parametrize(
    ("given", "base"),
    [("not-a-model", None), ("", None), ("gpt-4oz", None), ("o3-pro", "o3"), ("gpt-5-pro", "gpt-5"),
     ("gpt-4o-audio-preview", "gpt-4o")],
)
def test_unknown_or_differently_priced_variant_is_not_its_base(given, base):
    """A named variant (o3-pro is priced apart from o3) never gets its base's entry."""
    entry = defaults_for(given)
    assert entry is None or entry.model != base


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        ("anthropic/claude-haiku-4-5-20251001", "claude-haiku-4-5-20251001"),
        ("gemini/gemini-2.5-pro", "gemini-2.5-pro"),
        ("groq/llama-3.3-70b-versatile", "llama-3.3-70b-versatile"),
        ("ollama/qwen2.5:7b", "qwen2.5"),
        ("ollama_chat/mistral", "mistral"),
    ],
)
def test_provider_prefix_is_stripped(given, expected):
    entry = defaults_for(given)
    assert entry is not None and entry.model == expected


@pytest.mark.parametrize(("model", "input_price", "output_price"), [
    ("gpt-4-turbo-2024-04-09", 1e-05, 3e-05),
    ("gpt-3.5-turbo-0125", 5e-07, 1.5e-06),
    ("o1-2024-12-17", 1.5e-05, 6e-05),
    ("o3-mini-2025-01-31", 1.1e-06, 4.4e-06),
    ("claude-3-5-sonnet-20240620", 3e-06, 1.5e-05),
])
def test_models_litellm_configs_often_name_are_priced(model: str, input_price: float, output_price: float):
    """A budget can only hold for a model the gateway can price: these were free to it before."""
    entry = defaults_for(model)
    assert entry is not None
    assert (entry.input_cost_per_token, entry.output_cost_per_token) == (input_price, output_price)


def test_a_price_carries_no_float_noise():
    from mmproxy import cost
    from mmproxy.config import parse_config

    deployment = parse_config({"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/x"},
                                               "model_info": {"input_cost_per_token": 2.5e-6,
                                                              "output_cost_per_token": 1e-5}}]}).deployments[0]
    assert 90 * 2.5e-6 != 0.000225  # what the sum gives unrounded
    priced = cost.price(deployment, 90, 0)
    assert priced is not None and priced[0] == 0.000225 and cost.format_usd(priced[0]) == "0.000225"
    assert cost.price(deployment, 90, 7) == (0.000295, 0.0)
