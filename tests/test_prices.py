"""Prices: the shipped table's figures, provider-specific lookup, ``mmproxy prices import`` and
``general_settings.price_file`` from the config to the cost a running gateway reports."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from mmproxy.config import ConfigError, parse_config
from mmproxy.prices.files import FORMAT, PriceFileError, from_litellm, read
from mmproxy.prices.update import SHIPPED_PROVIDERS, is_shipped
from mmproxy.registry import all_defaults, defaults_for, derive_tier
from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, poll, start_gateway

M = 1e-6  # USD per token of a "$ per million tokens" figure


@pytest.mark.parametrize(("model", "input_per_m", "output_per_m"), [
    # openai.com/api/pricing (standard tier)
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4o-2024-08-06", 2.50, 10.00),
    ("gpt-4o-2024-05-13", 5.00, 15.00),  # the first gpt-4o snapshot kept its launch price
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4o-mini", 0.15, 0.60),
    ("o3", 2.00, 8.00),
    # anthropic.com/pricing
    ("claude-sonnet-4-5-20250929", 3.00, 15.00),
    ("claude-haiku-4-5", 1.00, 5.00),
    ("claude-opus-4-1", 15.00, 75.00),
    ("claude-opus-4-5", 5.00, 25.00),
    # ai.google.dev/gemini-api/docs/pricing (prompts up to 200k tokens)
    ("gemini/gemini-2.5-pro", 1.25, 10.00),
    ("gemini/gemini-2.5-flash", 0.30, 2.50),
    # groq.com/pricing
    ("groq/llama-3.1-8b-instant", 0.05, 0.08),
    ("groq/llama-3.3-70b-versatile", 0.59, 0.79),
    # together.ai/pricing
    ("together_ai/meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo", 0.18, 0.18),
    ("together_ai/meta-llama/Llama-4-Scout-17B-16E-Instruct", 0.18, 0.59),
])
def test_common_models_cost_what_their_pricing_pages_say(model: str, input_per_m: float, output_per_m: float):
    entry = defaults_for(model)
    assert entry is not None and entry.source
    assert entry.input_cost_per_token == pytest.approx(input_per_m * M, rel=1e-9)
    assert entry.output_cost_per_token == pytest.approx(output_per_m * M, rel=1e-9)


def test_prompt_cache_and_batch_prices():
    sonnet = defaults_for("anthropic/claude-sonnet-4-5")
    assert sonnet is not None  # anthropic.com/pricing: 5-minute cache writes $3.75, cache hits $0.30 per 1M
    assert sonnet.cache_creation_input_token_cost == pytest.approx(3.75 * M)
    assert sonnet.cache_read_input_token_cost == pytest.approx(0.30 * M)
    snapshot = defaults_for("gpt-4.1-2025-04-14")  # generated from LiteLLM's *_batches prices: half price
    assert snapshot is not None and snapshot.batch_discount == 0.5 and snapshot.model == "gpt-4.1-2025-04-14"


def test_a_hosts_own_price_comes_first_and_a_bare_id_finds_its_makers():
    openai_price, azure_eu = defaults_for("gpt-4o"), defaults_for("azure/eu/gpt-4o")
    assert openai_price is not None and azure_eu is not None
    # Azure's EU data zone bills 10% over the global price (azure.microsoft.com, Azure OpenAI pricing).
    assert azure_eu.input_cost_per_token == pytest.approx(2.75 * M)
    assert openai_price.input_cost_per_token == pytest.approx(2.50 * M)
    # One model, three hosts, three prices.
    llama = {host: defaults_for(model) for host, model in (
        ("groq", "groq/llama-3.3-70b-versatile"),
        ("deepinfra", "deepinfra/meta-llama/Llama-3.3-70B-Instruct-Turbo"),
        ("cerebras", "cerebras/llama-3.3-70b"))}
    prices = {host: entry.output_cost_per_token for host, entry in llama.items() if entry is not None}
    assert len(set(prices.values())) == 3, prices
    # A host without an entry for the model falls back to the maker's price.
    assert defaults_for("openrouter/openai/gpt-4.1-nano") == defaults_for("gpt-4.1-nano")
    # An owner's prefix and the bare id are one entry; a bare id the curated file lacks finds its maker's.
    assert defaults_for("gemini/gemini-2.5-pro") == defaults_for("gemini-2.5-pro")
    bare, prefixed = defaults_for("gemini-3.1-pro-preview"), defaults_for("gemini/gemini-3.1-pro-preview")
    assert bare is not None and bare == prefixed
    assert defaults_for("ollama_chat/llama3.1") == defaults_for("ollama/llama3.1")  # the same host


def test_a_snapshot_the_table_lacks_shares_its_alias():
    alias, snapshot = defaults_for("claude-sonnet-4-5"), defaults_for("anthropic/claude-sonnet-4-5-20991231")
    assert alias is not None and snapshot == alias


def test_tier_is_curated_or_derived_from_price():
    azure = defaults_for("azure/gpt-4o")  # a generated entry of a curated model: the model's tier and strengths
    curated = defaults_for("gpt-4o")
    assert azure is not None and curated is not None
    assert (azure.tier, azure.strengths, azure.tier_derived) == (curated.tier, curated.strengths, False)
    scout = defaults_for("together_ai/meta-llama/Llama-4-Scout-17B-16E-Instruct")
    assert scout is not None and scout.tier_derived and scout.tier == "economy"  # $0.59 per 1M out
    assert [derive_tier(p) for p in (0, 1.99e-6, 2e-6, 19.99e-6, 20e-6, 75e-6)] == [
        "economy", "economy", "workhorse", "workhorse", "frontier", "frontier"]
    assert derive_tier(None) is None


def test_shipped_table_covers_every_provider_and_names_its_sources():
    text = resources.files("mmproxy").joinpath("data/prices.json").read_text(encoding="utf-8")
    assert len(text.encode()) < 500_000
    shipped = read(resources.files("mmproxy").joinpath("data/prices.json"))  # checked as a user's file would be
    assert shipped.source.startswith("LiteLLM model_prices_and_context_window.json (litellm ") and shipped.read
    table = all_defaults()
    assert len(table) >= 1000
    hosts = {key.partition("/")[0] for key in table if "/" in key}
    assert {"azure", "groq", "together_ai", "fireworks_ai", "deepinfra", "perplexity", "ollama", "cerebras"} <= hosts
    for maker, model in (("openai", "gpt-5-mini"), ("anthropic", "claude-3-7-sonnet"), ("gemini", "gemini-2.0-flash"),
                         ("mistral", "mistral-small-latest"), ("deepseek", "deepseek-chat")):
        assert defaults_for(f"{maker}/{model}") is not None, maker
    for key, entry in table.items():
        assert entry.mode in ("chat", "embedding"), key
        assert entry.source, key
        if entry.source.startswith("LiteLLM") or entry.source.startswith("http"):
            assert f", read {shipped.read}" in entry.source, key


def test_the_generator_keeps_served_models_of_supported_providers():
    sample = {
        "sample_spec": {"mode": "one of: chat, embedding"},
        "groq/llama-x": {"litellm_provider": "groq", "mode": "chat", "input_cost_per_token": 1e-7},
        "bedrock/llama-x": {"litellm_provider": "bedrock", "mode": "chat", "input_cost_per_token": 1e-7},
        "together-ai-8.1b-21b": {"litellm_provider": "together_ai", "mode": "chat", "input_cost_per_token": 3e-7},
        "gpt-image-9": {"litellm_provider": "openai", "mode": "image_generation", "input_cost_per_token": 5e-6},
        "gpt-x": {"litellm_provider": "openai", "mode": "chat", "output_cost_per_token": 1e-6,
                  "input_cost_per_token": 4e-7, "input_cost_per_token_batches": 2e-7,
                  "output_cost_per_token_batches": 5e-7, "supports_vision": True, "max_input_tokens": 0},
        "gpt-y": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 4e-7,
                  "output_cost_per_token": 1e-6, "input_cost_per_token_batches": 2e-7,
                  "output_cost_per_token_batches": 8e-7},  # unequal discounts: none the gateway could apply
        "azure/no-figures": {"litellm_provider": "azure", "mode": "chat"},
    }
    assert {"groq", "together_ai", "openai", "azure", "anthropic", "gemini", "ollama"} <= SHIPPED_PROVIDERS
    document = from_litellm(sample, "sample", "2026-12-01", keep=is_shipped)
    assert set(document.models) == {"groq/llama-x", "gpt-x", "gpt-y"}
    assert document.models["gpt-x"] == {"mode": "chat", "input_cost_per_token": 4e-7, "output_cost_per_token": 1e-6,
                                        "batch_discount": 0.5, "strengths": ["vision"]}  # a window of 0 is unknown
    assert "batch_discount" not in document.models["gpt-y"]
    assert document.skipped == {"image_generation": 1}


def _litellm_file(tmp_path: Path, entries: Any, name: str = "prices.json") -> Path:
    path = tmp_path / name
    path.write_text(entries if isinstance(entries, str) else json.dumps(entries))
    return path


def _mmproxy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmproxy", *args], capture_output=True, text=True, timeout=60)


GOOD = {
    "gpt-4o-mini": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1e-6,
                    "output_cost_per_token": 2e-6, "max_input_tokens": 128000, "source": "https://example.com/a"},
    "my_host/team-model": {"litellm_provider": "my_host", "mode": "chat", "input_cost_per_token": 3e-7,
                           "output_cost_per_token": 9e-7},
    "my_host/embedder": {"litellm_provider": "my_host", "mode": "embedding", "input_cost_per_token": 1e-8},
    "my_host/whisper": {"litellm_provider": "my_host", "mode": "audio_transcription", "input_cost_per_second": 1e-4},
}


def test_import_writes_an_mmproxy_price_file(tmp_path: Path):
    out = tmp_path / "out.json"
    done = _mmproxy("prices", "import", str(_litellm_file(tmp_path, GOOD)), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "3 models (2 chat, 1 embedding) written to" in done.stderr
    assert "left out 1 entries of modes the gateway does not serve (audio_transcription 1)" in done.stderr
    written = json.loads(out.read_text())
    assert written["format"] == FORMAT and written["source"] == "prices.json" and written["read"]
    assert written["models"]["gpt-4o-mini"] == {"mode": "chat", "max_input_tokens": 128000,
                                                "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
                                                "source": "https://example.com/a"}
    again = _mmproxy("prices", "import", str(out))  # its own output reads back the same (stdout by default)
    assert again.returncode == 0 and json.loads(again.stdout) == written


@pytest.mark.parametrize(("content", "expected"), [
    ({"m": {"input_cost_per_token": "0.000001"}}, "entry 'm': input_cost_per_token: must be a number of USD per token"),
    ({"m": {"output_cost_per_token": -1e-6}}, "entry 'm': output_cost_per_token: must be a number of USD per token"),
    ('{"m": {"input_cost_per_token": NaN}}', "entry 'm': input_cost_per_token: must be a number"),
    ({"m": {"input_cost_per_token": True}}, "entry 'm': input_cost_per_token: must be a number"),
    ({"m": {"max_input_tokens": "128k"}}, "entry 'm': max_input_tokens: must be a whole number of tokens"),
    ({"m": {"mode": 3}}, "entry 'm': mode: must be a string"),
    ({"m": {"supports_vision": "yes"}}, "entry 'm': supports_vision: must be true or false"),
    ({"m": ["not", "an", "object"]}, "entry 'm': (entry): must be an object of fields"),
    (["gpt-4o"], "the top level must be an object of model ids to entries"),
    ('{"m": {"input_cost_per_token": 1e-6,}}', "not valid JSON: Expecting property name enclosed in double quotes "
                                               "at line 1 column 37"),
    ({"format": "mmproxy-prices/9", "models": {}}, "format: 'mmproxy-prices/9' is not 'mmproxy-prices/1'"),
    ({"format": FORMAT, "models": {"m": {"tier": "premium"}}}, "entry 'm': tier: must be one of frontier"),
    ({"format": FORMAT, "models": {"m": {"input_price": 1e-6}}}, "entry 'm': input_price: unknown field"),
    ({"format": FORMAT, "models": {"m": {"batch_discount": 50}}}, "entry 'm': batch_discount: must be the fraction"),
])
def test_a_broken_file_is_refused_naming_the_entry_and_field(tmp_path: Path, content: Any, expected: str):
    with pytest.raises(PriceFileError) as info:
        read(_litellm_file(tmp_path, content))
    assert expected in str(info.value)


def test_import_lists_every_problem_and_warns_of_per_million_figures(tmp_path: Path):
    broken = {f"m{i}": {"input_cost_per_token": "cheap"} for i in range(12)}
    with pytest.raises(PriceFileError) as info:
        read(_litellm_file(tmp_path, broken))
    assert len(info.value.problems) == 12 and str(info.value).endswith("(and 4 more)")
    out = tmp_path / "out.json"
    done = _mmproxy("prices", "import", str(_litellm_file(tmp_path, broken)), "--out", str(out))
    assert done.returncode == 2 and all(f"entry 'm{i}'" in done.stderr for i in range(12))
    assert not out.exists()
    suspect = read(_litellm_file(tmp_path, {"m": {"input_cost_per_token": 2.5}}))
    assert suspect.warnings == ["entry 'm': input_cost_per_token: 2.5 is $2,500,000 per million tokens; prices are "
                                "USD per token (a per-1M price / 1e6)"]
    missing = _mmproxy("prices", "import", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "No such file" in missing.stderr


def _config(price_file: Path | None, *deployments: dict[str, Any]) -> dict[str, Any]:
    general: dict[str, Any] = {"master_key": MASTER_KEY}
    if price_file is not None:
        general["price_file"] = str(price_file)
    return {"model_list": list(deployments), "general_settings": general}


def _deployment(name: str, model: str, api_base: str = "http://127.0.0.1:9/v1", **info: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"model_name": name, "litellm_params": {"model": model, "api_base": api_base,
                                                                    "api_key": UPSTREAM_KEY}}
    if info:
        entry["model_info"] = info
    return entry


@pytest.mark.parametrize("shape", ["litellm", "mmproxy"])
def test_price_file_overrides_the_shipped_table_and_model_info_still_wins(tmp_path: Path, shape: str):
    path = _litellm_file(tmp_path, GOOD)
    if shape == "mmproxy":
        done = _mmproxy("prices", "import", str(path), "--out", str(tmp_path / "mm.json"))
        assert done.returncode == 0, done.stderr
        path = tmp_path / "mm.json"
    config = parse_config(_config(path, _deployment("mini", "openai/gpt-4o-mini"),
                                  _deployment("pinned", "openai/gpt-4o-mini", input_cost_per_token=5e-6),
                                  _deployment("team", "my_host/team-model"),
                                  _deployment("sonnet", "anthropic/claude-sonnet-4-5")))
    mini, pinned, team, sonnet = config.deployments
    assert (mini.input_cost_per_token, mini.output_cost_per_token) == (1e-6, 2e-6)  # the file's, not 0.15/0.60
    assert mini.tier == "economy" and "fast" in mini.strengths  # the curated tier stays: it describes the model
    assert (pinned.input_cost_per_token, pinned.output_cost_per_token) == (5e-6, 2e-6)  # model_info wins
    assert (team.input_cost_per_token, team.output_cost_per_token, team.tier) == (3e-7, 9e-7, "economy")
    assert sonnet.input_cost_per_token == pytest.approx(3 * M)  # what the file does not name stays shipped
    assert not any("no price known" in w for w in config.warnings)


def test_a_broken_or_missing_price_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"general_settings\.price_file: .*prices\.json: entry 'gpt-4o': "
                                          r"input_cost_per_token: must be a number"):
        parse_config(_config(_litellm_file(tmp_path, {"gpt-4o": {"input_cost_per_token": "2.5"}})))
    with pytest.raises(ConfigError, match=r"general_settings\.price_file: cannot read .*nope\.json"):
        parse_config(_config(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match=r"general_settings\.price_file: must be the path of a price file"):
        parse_config({"general_settings": {"price_file": ["a.json"]}})
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(_config(_litellm_file(tmp_path, {"m": {"max_input_tokens": -1}}, "b.json"))))
    done = _mmproxy("check", "--config", str(config_path))
    assert done.returncode == 2 and "entry 'm': max_input_tokens" in done.stderr


def test_an_unpriced_model_still_warns(tmp_path: Path):
    config = parse_config(_config(_litellm_file(tmp_path, GOOD), _deployment("mine", "openai/my-finetune"),
                                  _deployment("mini", "openai/gpt-4o-mini")))
    unpriced = [w for w in config.warnings if "no price known" in w]
    assert len(unpriced) == 1 and "(mine, my-finetune)" in unpriced[0]


def test_a_gateway_bills_at_the_price_files_figures(simulator: Process, tmp_path: Path):
    """End to end: the imported price is in the cost header and the ledger row of a real request."""
    prices = _litellm_file(tmp_path, {"gpt-4o-mini": {"litellm_provider": "openai", "mode": "chat",
                                                      "input_cost_per_token": 7e-6, "output_cost_per_token": 3e-5}})
    gateway = start_gateway(tmp_path, _config(prices, _deployment("mini", "openai/gpt-4o-mini",
                                                                  f"{simulator.url}/v1")))
    try:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=MASTER_KEY)
        reply = client.chat.completions.with_raw_response.create(
            model="mini", messages=[{"role": "user", "content": "What does a price file change?"}])
        usage = reply.parse().usage
        assert usage is not None and usage.prompt_tokens > 0
        expected = usage.prompt_tokens * 7e-6 + usage.completion_tokens * 3e-5
        assert float(reply.headers["x-mmproxy-cost-usd"]) == pytest.approx(expected, rel=1e-6)
        admin = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10)
        request_id = reply.headers["x-mmproxy-request-id"]
        rows = poll(lambda: admin.get("/spend/logs", params={"request_id": request_id}).json(), bool)
        assert len(rows) == 1 and rows[0]["cost_usd"] == pytest.approx(expected, rel=1e-6)
    finally:
        gateway.stop()
