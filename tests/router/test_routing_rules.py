"""``routing_rules`` through the real gateway: rules route as written, decisions show in headers."""

from __future__ import annotations

import subprocess
import sys

import anthropic
import httpx
import pytest
import yaml

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, SimControl, start_gateway

RULES = [
    {"name": "sensitive-stays-local", "when": {"tags_any": ["pii"], "keywords_any": ["diagnosis"], "match": "any"},
     "route": {"local_only": True}},
    {"name": "code-to-frontier", "when": {"regex": r"(?i)\b(def|class)\b"}, "route": {"tier": "frontier"}},
    {"name": "tools-to-mini", "when": {"has_tools": True}, "route": {"model": "mini"}},
    {"name": "beta-header", "when": {"headers": {"x-team": "research"}}, "route": {"tier": "workhorse"}},
    {"name": "explicit-models-untouched", "when": {"model": ["big", "mini"]}, "route": {"model": "big"}},
    {"name": "default", "route": {"tier": "economy"}},
]
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def rules_gateway(simulator: Process, tmp_path_factory: pytest.TempPathFactory):
    def openai_dep(name: str, upstream: str, tier: str) -> dict:
        return {"model_name": name, "litellm_params": {"model": f"openai/{upstream}", "api_base": f"{simulator.url}/v1",
                                                       "api_key": UPSTREAM_KEY},
                "model_info": {"id": upstream, "tier": tier}}

    config = {
        "model_list": [
            openai_dep("big", "rr-frontier", "frontier"),
            openai_dep("mini", "rr-workhorse", "workhorse"),
            openai_dep("cheap", "rr-economy", "economy"),
            {"model_name": "local-llama",
             "litellm_params": {"model": "ollama_chat/rr-local", "api_base": simulator.url},
             "model_info": {"id": "rr-local"}},
        ],
        "general_settings": {"master_key": MASTER_KEY},
        "routing_rules": RULES,
    }
    gw = start_gateway(tmp_path_factory.mktemp("rules"), config)
    yield gw
    gw.stop()


@pytest.fixture
def raw(rules_gateway: Process) -> httpx.Client:
    return httpx.Client(base_url=rules_gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10)


@pytest.mark.parametrize(
    ("body", "headers", "rule", "deployment"),
    [
        ({"messages": [{"role": "user", "content": "What does my diagnosis mean?"}]}, {}, "sensitive-stays-local",
         "rr-local"),
        ({"messages": [{"role": "user", "content": "hi"}], "metadata": {"tags": ["pii"]}}, {},
         "sensitive-stays-local", "rr-local"),
        ({"messages": [{"role": "user", "content": "Fix this: def f(): pass"}]}, {}, "code-to-frontier",
         "rr-frontier"),
        ({"messages": [{"role": "user", "content": "Look it up"}], "tools": [TOOL]}, {}, "tools-to-mini",
         "rr-workhorse"),
        ({"messages": [{"role": "user", "content": "Summarise"}]}, {"x-team": "research"}, "beta-header",
         "rr-workhorse"),
        ({"messages": [{"role": "user", "content": "Summarise"}]}, {}, "default", "rr-economy"),
    ],
)
def test_auto_routes_by_the_first_matching_rule(raw, sim: SimControl, body, headers, rule, deployment):
    response = raw.post("/v1/chat/completions", json={"model": "auto", **body}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["x-mmproxy-route-rule"] == rule
    assert response.headers["x-mmproxy-deployment"] == deployment
    assert sim.last()["body"]["model"] == deployment


def test_rules_apply_to_named_models_too(raw):
    response = raw.post("/v1/chat/completions", json={"model": "mini", "messages": [{"role": "user", "content": "x"}]})
    assert response.headers["x-mmproxy-route-rule"] == "explicit-models-untouched"
    assert response.headers["x-mmproxy-deployment"] == "rr-frontier"


def test_streams_carry_the_decision(raw):
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "class A: pass"}]}
    with raw.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["x-mmproxy-route-target"] == "tier:frontier"
        assert "[DONE]" in "".join(response.iter_text())


def test_messages_api_is_routed_too(rules_gateway: Process):
    claude = anthropic.Anthropic(base_url=rules_gateway.url, api_key=MASTER_KEY, max_retries=0)
    raw_reply = claude.messages.with_raw_response.create(
        model="auto", max_tokens=20, messages=[{"role": "user", "content": "my diagnosis?"}])
    assert raw_reply.headers["x-mmproxy-deployment"] == "rr-local"
    assert raw_reply.parse().content[0].text


def test_auto_is_listed(raw):
    assert "auto" in {m["id"] for m in raw.get("/v1/models").json()["data"]}


def test_a_rule_that_does_not_compile_stops_start_up(tmp_path, simulator: Process):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/x", "api_base": f"{simulator.url}/v1"}}],
        "routing_rules": [{"name": "broken", "when": {"regex": "(unclosed"}, "route": {"model": "m"}}],
    }))
    result = subprocess.run([sys.executable, "-m", "mmproxy", "serve", "--config", str(path), "--port", "0"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()
    assert len(line) == 1 and '"broken"' in line[0] and "when.regex" in line[0]


def test_without_a_default_auto_is_a_400(simulator: Process, tmp_path):
    config = {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/x",
                                                                       "api_base": f"{simulator.url}/v1"}}],
              "routing_rules": [{"name": "only-tools", "when": {"has_tools": True}, "route": {"model": "m"}}]}
    gw = start_gateway(tmp_path, config)
    try:
        response = httpx.post(f"{gw.url}/v1/chat/completions",
                              json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 400 and response.json()["error"]["code"] == "no_route"
    finally:
        gw.stop()
