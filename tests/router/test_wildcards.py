"""LiteLLM's wildcard routing and model_list shapes, end to end: a real gateway on a config written the way LiteLLM
configs write them, the provider simulator behind it, and the openai SDK in front."""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mmproxy.config import parse_config
from mmproxy.registry import defaults_for
from mmproxy.router import Router
from mmproxy.router.wildcards import MAX_RESOLVED
from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, SimControl, poll, start_gateway

HELLO = [{"role": "user", "content": "hello"}]


def wildcard_config(sim_url: str) -> dict[str, object]:
    base = f"{sim_url}/v1"
    return {
        "model_list": [
            # an explicit name inside a wildcard's pattern: the explicit group wins
            {"model_name": "openai/gpt-4o-mini",
             "litellm_params": {"model": "openai/sim-explicit", "api_base": base, "api_key": UPSTREAM_KEY}},
            {"model_name": "openai/*", "litellm_params": {"model": "openai/*", "api_base": base,
                                                          "api_key": UPSTREAM_KEY}},
            {"model_name": "anthropic/*", "litellm_params": {"model": "anthropic/*", "api_base": sim_url,
                                                             "api_key": UPSTREAM_KEY}},
            # a prefix pattern with a fixed model, and the catch-all
            {"model_name": "team-*", "litellm_params": {"model": "openai/gpt-4.1-mini", "api_base": base,
                                                        "api_key": UPSTREAM_KEY}},
            {"model_name": "*", "litellm_params": {"model": "openai/*", "api_base": base, "api_key": UPSTREAM_KEY}},
            # no litellm_params: served as the model it names, at OpenAI's base from the environment
            {"model_name": "gpt-3.5-turbo"},
            {"model_name": "primary", "litellm_params": {"model": "openai/sim-primary", "api_base": base,
                                                         "api_key": UPSTREAM_KEY}},
        ],
        "router_settings": {"fallbacks": [{"primary": ["anthropic/claude-3-haiku"]}], "cooldown_time": 0},
        "environment_variables": {"OPENAI_API_BASE": base, "OPENAI_API_KEY": UPSTREAM_KEY},
        "general_settings": {"master_key": MASTER_KEY},
    }


@pytest.fixture(scope="module")
def gateway(simulator: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = start_gateway(tmp_path_factory.mktemp("wildcards"), wildcard_config(simulator.url))
    yield process
    process.stop()


@pytest.fixture
def client(gateway: Process) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=MASTER_KEY, max_retries=0)


def registry_cost(model: str, usage: openai.types.CompletionUsage) -> float:
    shipped = defaults_for(model)
    assert shipped is not None and shipped.input_cost_per_token and shipped.output_cost_per_token
    return usage.prompt_tokens * shipped.input_cost_per_token + usage.completion_tokens * shipped.output_cost_per_token


def test_provider_wildcard_sends_the_requested_model_priced_from_the_registry(client, sim: SimControl):
    raw = client.chat.completions.with_raw_response.create(model="openai/gpt-4o", messages=HELLO)
    completion = raw.parse()
    assert sim.last()["body"]["model"] == "gpt-4o"
    assert float(raw.headers["x-mmproxy-cost-usd"]) == pytest.approx(registry_cost("gpt-4o", completion.usage))


def test_a_bare_name_reaches_the_provider_it_implies(client, sim: SimControl):
    raw = client.chat.completions.with_raw_response.create(model="anthropic/claude-3-haiku", messages=HELLO)
    received = sim.last()
    assert received["path"].endswith("/v1/messages") and received["body"]["model"] == "claude-3-haiku"
    assert float(raw.headers["x-mmproxy-cost-usd"]) == pytest.approx(
        registry_cost("claude-3-haiku", raw.parse().usage))


def test_explicit_group_wins_over_the_wildcard(client, sim: SimControl):
    client.chat.completions.create(model="openai/gpt-4o-mini", messages=HELLO)
    assert sim.last()["body"]["model"] == "sim-explicit"


def test_prefix_pattern_and_catch_all(client, sim: SimControl):
    client.chat.completions.create(model="team-research", messages=HELLO)
    assert sim.last()["body"]["model"] == "gpt-4.1-mini"
    raw = client.chat.completions.with_raw_response.create(model="vendor-model-x", messages=HELLO)
    assert sim.last()["body"]["model"] == "vendor-model-x"
    assert "x-mmproxy-cost-usd" not in raw.headers  # a model the registry has no price for costs nothing known


def test_entry_without_litellm_params_serves_its_model_name(client, sim: SimControl):
    raw = client.chat.completions.with_raw_response.create(model="gpt-3.5-turbo", messages=HELLO)
    assert sim.last()["body"]["model"] == "gpt-3.5-turbo"
    assert float(raw.headers["x-mmproxy-cost-usd"]) == pytest.approx(
        registry_cost("gpt-3.5-turbo", raw.parse().usage))


def test_a_fallback_may_be_a_name_a_wildcard_serves(client, sim: SimControl):
    sim.fault("sim-primary", "500")
    answer = client.chat.completions.create(model="primary", messages=HELLO)
    assert answer.choices[0].message.content
    assert [(r["model"], r["status"]) for r in sim.requests(2)] == [("sim-primary", 500), ("claude-3-haiku", 200)]


def test_unknown_model_at_a_wildcard_provider_is_the_providers_404(client, sim: SimControl):
    sim.fault("no-such-model", "404", count=-1)
    for _ in range(4):  # more failures than allowed_fails: a wildcard is never cooled down for them
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(model="openai/no-such-model", messages=HELLO)
        assert info.value.body["code"] == "model_not_found"
    client.chat.completions.create(model="openai/gpt-4o", messages=HELLO)
    assert sim.last()["body"]["model"] == "gpt-4o"


@pytest.mark.parametrize("name", ["openai/../files", "openai/a b", "openai/x\r\nHost: evil", "openai/" + "x" * 300])
def test_a_name_that_is_no_model_id_is_not_served(client, sim: SimControl, name: str):
    """Some providers put the model in the upstream URL (Gemini): a client's name must not reach it as a path."""
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=name, messages=HELLO)
    assert info.value.body["code"] == "model_not_found"
    assert sim.requests() == []


def test_models_lists_what_the_wildcards_serve(client):
    names = {model.id for model in client.models.list()}
    assert {"openai/gpt-4o-mini", "gpt-3.5-turbo", "openai/gpt-4o", "anthropic/claude-3-haiku", "team-*"} <= names
    assert "openai/*" not in names  # shown as the models it serves, as LiteLLM does


def test_budgets_and_the_ledger_see_the_requested_model(gateway: Process):
    admin = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30)
    key = admin.post("/key/generate", json={"max_budget": 1.0}).json()["key"]
    budgeted = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:  # no price known: its spend could not be counted
        budgeted.chat.completions.create(model="vendor-model-y", messages=HELLO)
    assert info.value.code == "model_not_priced"
    raw = budgeted.chat.completions.with_raw_response.create(model="openai/gpt-4o", messages=HELLO)
    cost = registry_cost("gpt-4o", raw.parse().usage)
    request_id = raw.headers["x-mmproxy-request-id"]
    rows = poll(lambda: admin.get("/spend/logs", params={"request_id": request_id}).json(), bool)
    assert rows[0]["requested_model"] == "openai/gpt-4o" and rows[0]["model_group"] == "openai/*"
    assert rows[0]["deployment"] == raw.headers["x-mmproxy-deployment"]
    assert rows[0]["cost_usd"] == pytest.approx(cost)
    spent = poll(lambda: admin.get("/key/info", params={"key": key}).json()["info"]["spend"], bool)
    assert spent == pytest.approx(cost)


def test_invented_names_do_not_grow_the_metrics_labels(client, gateway: Process):
    invented = [f"openai/made-up-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    for name in invented:
        client.chat.completions.create(model=name, messages=HELLO)
    text = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"}).text
    models = {sample.labels["model"] for family in text_string_to_metric_families(text)
              for sample in family.samples if "model" in sample.labels}
    assert "openai/*" in models
    assert not models & set(invented)


def test_a_batch_through_a_wildcard_is_refused_before_it_is_created(client, sim: SimControl):
    """A batch job is found again by its deployment's id, which every model of a wildcard shares."""
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "openai/gpt-4o", "messages": HELLO}}
    file_id = client.files.create(file=("in.jsonl", io.BytesIO(orjson.dumps(line) + b"\n")), purpose="batch").id
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert caught.value.body["code"] == "batch_unsupported" and "openai/*" in caught.value.body["message"]
    assert sim.requests() == []


def test_resolved_names_are_bounded(simulator: Process):
    config = parse_config({**wildcard_config(simulator.url), "environment_variables": {}})  # not this process's
    router = Router(config.deployments, config.router, wildcards=config.wildcards)
    first = router.group("openai/first")
    assert first is not None and first.members[0].upstream_model == "first"
    assert router.group("openai/first") is first  # an already-seen name is a lookup
    for n in range(MAX_RESOLVED + 10):
        assert router.group(f"openai/name-{n}") is not None
    assert len(router.wildcards._resolved) == MAX_RESOLVED


def test_shapes_litellm_accepts_start_with_warnings():
    config = parse_config({"model_list": [
        {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o"}, "rpm": 3, "tpm": 20000,
         "description": "entry-level keys"},
        {"model_name": "bedrock/*", "litellm_params": {"model": "bedrock/*"}},
    ]})
    deployment, = config.deployments
    assert (deployment.rpm, deployment.tpm) == (3, 20000)
    assert not config.wildcards  # a provider mmproxy does not speak: skipped, and said so
    assert any("model_list[0].description" in w for w in config.warnings)
    assert any("bedrock/*" in w and "skipped" in w for w in config.warnings)


def test_litellm_configs_bench_starts_litellm_shaped_configs(tmp_path: Path, postgres_url: str):
    """benches/litellm_configs.py on configs shaped like LiteLLM's examples: environment references for URLs and
    ports (given dummies of their shape), an entry without litellm_params, wildcards, a provider mmproxy does not
    speak, and a database_url (served on the one given)."""
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "wildcards.yaml").write_text(yaml.safe_dump({
        "model_list": [{"model_name": "gpt-3.5-turbo"},
                       {"model_name": "*", "litellm_params": {"model": "openai/*",
                                                              "api_base": "os.environ/FAKE_OPENAI_API_BASE"}},
                       {"model_name": "bedrock/*", "litellm_params": {"model": "bedrock/*"}}],
        "general_settings": {"coordination_redis": {"host": "os.environ/REDIS_HOST", "port": "os.environ/REDIS_PORT"}},
        "litellm_settings": {"callbacks": ["prometheus"]}}))
    (folder / "database.yaml").write_text(yaml.safe_dump({
        "model_list": [{"model_name": "m", "litellm_params": {"model": "gpt-4o-mini"}}],
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY",
                             "database_url": "postgresql://user:password@localhost:5432/litellm"}}))
    bench = Path(__file__).resolve().parents[2] / "benches" / "litellm_configs.py"
    result = subprocess.run([sys.executable, str(bench), str(folder), "--database-url", postgres_url, "--warnings"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| database.yaml | ok | yes |" in result.stdout and "| wildcards.yaml | ok | yes |" in result.stdout
    assert "2 of 2 start." in result.stdout
    assert "litellm_settings.callbacks: not implemented yet, ignored" in result.stdout
    assert "no litellm_params; served as model 'gpt-3.5-turbo'" in result.stdout
