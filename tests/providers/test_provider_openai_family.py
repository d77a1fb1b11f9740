"""The OpenAI-compatible provider family: every prefix reaches its upstream with the right path and auth."""

from __future__ import annotations

import httpx
import openai
import pytest
import yaml

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, SimControl, start_process

PREFIXES = ["openai", "openai_compatible", "hosted_vllm", "mistral", "groq", "deepseek", "together_ai", "openrouter"]
HELLO = [{"role": "user", "content": "Which provider is this?"}]


@pytest.fixture(scope="module")
def family_gateway(simulator: Process, tmp_path_factory: pytest.TempPathFactory):
    base = f"{simulator.url}/v1"
    model_list = [
        {"model_name": prefix, "litellm_params": {"model": f"{prefix}/up-{prefix}", "api_base": base,
                                                  "api_key": UPSTREAM_KEY}}
        for prefix in PREFIXES
    ]
    # Key from the provider's environment variable, as in LiteLLM.
    model_list.append({"model_name": "mistral-env", "litellm_params": {"model": "mistral/up-env", "api_base": base}})
    model_list.append({"model_name": "azure", "litellm_params": {
        "model": "azure/my-deployment", "api_base": simulator.url, "api_key": UPSTREAM_KEY,
        "api_version": "2024-06-01"}})
    model_list.append({"model_name": "azure-embed", "litellm_params": {
        "model": "azure/my-embedder", "api_base": simulator.url, "api_key": UPSTREAM_KEY},
        "model_info": {"mode": "embedding"}})
    path = tmp_path_factory.mktemp("family") / "config.yaml"
    path.write_text(yaml.safe_dump({"model_list": model_list, "general_settings": {"master_key": MASTER_KEY},
                                     "router_settings": {"cooldown_time": 0}}))
    gw = start_process(["mmproxy", "serve", "--config", str(path), "--host", "127.0.0.1", "--port", "0"],
                       env={"MISTRAL_API_KEY": UPSTREAM_KEY})
    yield gw
    gw.stop()


@pytest.fixture
def client(family_gateway: Process) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{family_gateway.url}/v1", api_key=MASTER_KEY, max_retries=0)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_openai_wire_prefixes(client, sim: SimControl, prefix: str):
    reply = client.chat.completions.create(model=prefix, messages=HELLO, extra_body={"provider_extra": 1})
    assert reply.choices[0].message.content
    received = sim.last()
    assert received["path"] == "/v1/chat/completions"
    assert received["body"]["model"] == f"up-{prefix}"
    assert received["body"]["provider_extra"] == 1
    assert received["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_key_from_provider_environment_variable(client, sim: SimControl):
    client.chat.completions.create(model="mistral-env", messages=HELLO)
    assert sim.last()["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_azure_deployment_path_version_and_key(client, sim: SimControl):
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="azure", messages=HELLO, stream=True)
        if c.choices
    )
    assert text
    received = sim.last()
    assert received["path"] == "/openai/deployments/my-deployment/chat/completions"
    assert received["query"] == "api-version=2024-06-01"
    assert received["headers"]["api-key"] == UPSTREAM_KEY
    assert "authorization" not in received["headers"]


def test_azure_embeddings_default_api_version(client, sim: SimControl):
    result = client.embeddings.create(model="azure-embed", input="hello")
    assert result.data[0].embedding
    received = sim.last()
    assert received["path"] == "/openai/deployments/my-embedder/embeddings"
    assert received["query"].startswith("api-version=")


def test_wrong_upstream_key_is_an_auth_error(simulator: Process, tmp_path, sim: SimControl):
    from tests.conftest import start_gateway

    config = {"model_list": [{"model_name": "bad", "litellm_params": {
        "model": "groq/x", "api_base": f"{simulator.url}/v1", "api_key": "sk-wrong-key-123"}}]}
    gw = start_gateway(tmp_path, config)
    try:
        response = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "bad", "messages": HELLO})
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
        assert "sk-wrong-key-123" not in response.text
    finally:
        gw.stop()
