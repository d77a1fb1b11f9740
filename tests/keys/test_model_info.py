"""LiteLLM's GET /model/info on a real gateway: each deployment's parameters and metadata, from the config and the
shipped registry, never a secret, and only the models the calling key may use."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from mmproxy.registry import defaults_for
from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, gateway_config, start_gateway


@pytest.fixture(scope="module")
def gw(simulator: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    config = gateway_config(simulator.url)
    # A model the shipped registry knows, priced and sized by it alone; its api_base carries a credential.
    host = simulator.url.removeprefix("http://")
    config["model_list"].append({"model_name": "known", "litellm_params": {
        "model": "openai/gpt-4o-mini", "api_base": f"http://user:hunter2@{host}/v1?token=hunter3",
        "api_key": UPSTREAM_KEY}})
    process = start_gateway(tmp_path_factory.mktemp("model-info"), config)
    yield process
    process.stop()


def _info(gw: Process, key: str, **params: str) -> httpx.Response:
    return httpx.get(f"{gw.url}/model/info", params=params, headers={"Authorization": f"Bearer {key}"})


def test_model_info_shows_config_and_registry_values_and_no_secret(gw: Process, simulator: Process):
    response = _info(gw, MASTER_KEY)
    assert response.status_code == 200
    assert UPSTREAM_KEY not in response.text and "hunter" not in response.text
    data = {entry["model_info"]["id"]: entry for entry in response.json()["data"]}
    assert {"frontier-1", "mini-a", "mini-b", "claude-1", "embed-1"} <= set(data)

    frontier = data["frontier-1"]
    assert frontier["model_name"] == "gpt-4o"
    assert frontier["litellm_params"]["model"] == "openai/sim-frontier" and "api_key" not in frontier["litellm_params"]
    assert (frontier["model_info"]["input_cost_per_token"], frontier["model_info"]["output_cost_per_token"]) == (
        2.5e-06, 1e-05)  # the config's prices
    assert data["small-1"]["model_info"]["max_input_tokens"] == 50 and data["embed-1"]["model_info"]["mode"] == (
        "embedding")

    known = next(entry for entry in data.values() if entry["model_name"] == "known")
    shipped = defaults_for("gpt-4o-mini")
    assert shipped is not None
    info = known["model_info"]
    assert (info["max_input_tokens"], info["max_output_tokens"], info["max_tokens"]) == (
        shipped.max_input_tokens, shipped.max_output_tokens, shipped.max_output_tokens)
    assert (info["input_cost_per_token"], info["output_cost_per_token"]) == (
        shipped.input_cost_per_token, shipped.output_cost_per_token)
    assert known["litellm_params"]["api_base"] == f"{simulator.url}/v1"  # without user, password and query


def test_a_key_sees_only_its_models(gw: Process):
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    key = httpx.post(f"{gw.url}/key/generate", json={"models": ["mini"]}, headers=headers).json()["key"]
    ids = [entry["model_info"]["id"] for entry in _info(gw, key).json()["data"]]
    assert sorted(ids) == ["mini-a", "mini-b"]
    one = httpx.get(f"{gw.url}/v1/model/info", params={"litellm_model_id": "mini-b"},
                    headers={"Authorization": f"Bearer {key}"}).json()["data"]
    assert [entry["model_info"]["id"] for entry in one] == ["mini-b"]
    assert _info(gw, key, litellm_model_id="frontier-1").json()["data"] == []  # not this key's model
    assert httpx.get(f"{gw.url}/model/info").status_code == 401
