"""Retries, fallbacks and cooldowns through the real gateway, with the simulator's scripted faults."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, SimControl, start_gateway

HELLO = [{"role": "user", "content": "Are you there?"}]


def _deployment(name: str, upstream: str, sim: Process, **info) -> dict:
    return {"model_name": name,
            "litellm_params": {"model": f"openai/{upstream}", "api_base": f"{sim.url}/v1", "api_key": UPSTREAM_KEY},
            "model_info": {"id": upstream, **info}}


@pytest.fixture(scope="module")
def failover_gateway(simulator: Process, tmp_path_factory: pytest.TempPathFactory):
    config = {
        "model_list": [
            _deployment("pair", "fo-a", simulator),
            _deployment("pair", "fo-b", simulator),
            _deployment("solo", "fo-solo", simulator),
            _deployment("primary", "fo-primary", simulator),
            _deployment("backup", "fo-backup", simulator),
            _deployment("primary-stream", "fo-primary-stream", simulator),
            _deployment("tiny", "fo-tiny", simulator, max_input_tokens=30),
            _deployment("big", "fo-big", simulator),
            _deployment("strict", "fo-strict", simulator),
            _deployment("lenient", "fo-lenient", simulator),
        ],
        "general_settings": {"master_key": MASTER_KEY},
        "router_settings": {
            "num_retries": 2,
            "allowed_fails": 3,
            "cooldown_time": 30,
            "fallbacks": [{"primary": ["backup"]}, {"primary-stream": ["backup"]}],
            "context_window_fallbacks": [{"tiny": ["big"]}],
            "content_policy_fallbacks": [{"strict": ["lenient"]}],
        },
    }
    gw = start_gateway(tmp_path_factory.mktemp("failover"), config)
    yield gw
    gw.stop()


@pytest.fixture
def raw(failover_gateway: Process) -> httpx.Client:
    return httpx.Client(base_url=failover_gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"},
                        timeout=20)


def _count(sim: SimControl, model: str) -> int:
    return sim.stats()["by_model"].get(model, 0)


def _chat(raw: httpx.Client, model: str, **extra) -> httpx.Response:
    return raw.post("/v1/chat/completions", json={"model": model, "messages": HELLO, **extra})


def _health(raw: httpx.Client) -> dict[str, dict]:
    return {d["id"]: d for d in raw.get("/health").json()["deployments"]}


def test_retry_goes_to_the_other_deployment_and_the_failing_one_cools_down(raw, sim: SimControl):
    sim.fault("fo-a", "500", count=-1)
    for _ in range(40):
        response = _chat(raw, "pair")
        assert response.status_code == 200
        assert response.headers["x-mmproxy-deployment"] == "fo-b"
    # Three failed attempts put fo-a in cooldown; after that it got no traffic at all.
    assert _count(sim, "fo-a") == 3
    report = _health(raw)
    assert report["fo-a"]["healthy"] is False and report["fo-a"]["cooldown_remaining_s"] > 20
    assert report["fo-b"]["healthy"] is True


def test_single_deployment_retries_after_retry_after(raw, sim: SimControl):
    sim.fault("fo-solo", "429", count=1, retry_after=1)
    start = time.monotonic()
    response = _chat(raw, "solo")
    assert response.status_code == 200
    assert time.monotonic() - start >= 1.0  # waited as the upstream asked
    assert _count(sim, "fo-solo") == 2


def test_request_errors_are_not_retried(raw, sim: SimControl):
    sim.fault("fo-solo", "400", count=1)
    response = _chat(raw, "solo")
    assert response.status_code == 400
    assert _count(sim, "fo-solo") == 1


def test_fallback_then_straight_to_fallback_during_an_outage(raw, sim: SimControl):
    sim.fault("fo-primary", "503", count=-1)
    first = _chat(raw, "primary")
    assert first.status_code == 200 and first.headers["x-mmproxy-deployment"] == "fo-backup"
    # num_retries 2: three attempts on the only primary deployment, which is now cooling down.
    assert _count(sim, "fo-primary") == 3
    for _ in range(5):
        response = _chat(raw, "primary")
        assert response.status_code == 200 and response.headers["x-mmproxy-deployment"] == "fo-backup"
    assert _count(sim, "fo-primary") == 3  # no more failed attempts paid during the outage


def test_stream_falls_back_before_its_first_byte(failover_gateway: Process, sim: SimControl):
    sim.fault("fo-primary-stream", "503", count=-1)
    client = openai.OpenAI(base_url=f"{failover_gateway.url}/v1", api_key=MASTER_KEY, max_retries=0)
    text = "".join(c.choices[0].delta.content or "" for c in
                   client.chat.completions.create(model="primary-stream", messages=HELLO, stream=True)
                   if c.choices)
    assert text
    assert _count(sim, "fo-primary-stream") == 3 and _count(sim, "fo-backup") == 1


def test_stream_cut_after_first_byte_does_not_fall_back(raw, sim: SimControl):
    sim.fault("fo-solo", "cut", count=1, cut_after=3)
    with raw.stream("POST", "/v1/chat/completions", json={"model": "solo", "messages": HELLO, "stream": True}) as r:
        text = "".join(r.iter_text())
    assert "stream_cut" in text and "[DONE]" not in text
    assert _count(sim, "fo-solo") == 1  # the client already had bytes: no second attempt


def test_context_window_fallback_is_decided_before_the_call(raw, sim: SimControl):
    long = [{"role": "user", "content": "many words " * 100}]
    response = raw.post("/v1/chat/completions", json={"model": "tiny", "messages": long})
    assert response.status_code == 200 and response.headers["x-mmproxy-deployment"] == "fo-big"
    assert _count(sim, "fo-tiny") == 0


def test_content_policy_fallback(raw, sim: SimControl):
    sim.fault("fo-strict", "400_policy", count=1)
    response = _chat(raw, "strict")
    assert response.status_code == 200 and response.headers["x-mmproxy-deployment"] == "fo-lenient"
    assert _count(sim, "fo-strict") == 1  # a policy refusal is not retried on the same model


def test_no_healthy_deployment_and_no_fallback_is_a_429_with_retry_after(simulator: Process, tmp_path,
                                                                         sim: SimControl):
    config = {"model_list": [_deployment("only", "fo-only", simulator)],
              "router_settings": {"allowed_fails": 1, "cooldown_time": 30}}
    gw = start_gateway(tmp_path, config)
    try:
        sim.fault("fo-only", "500", count=1)
        first = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "only", "messages": HELLO})
        assert first.status_code == 502
        second = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "only", "messages": HELLO})
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "no_healthy_deployment"
        assert 1 <= int(second.headers["retry-after"]) <= 30
        assert _count(sim, "fo-only") == 1
    finally:
        gw.stop()


def test_a_fallback_to_an_unknown_group_is_a_warning_and_left_out(tmp_path, simulator: Process):
    import subprocess
    import sys

    import yaml

    from mmproxy.config import load_config

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model_list": [_deployment("a", "x", simulator), _deployment("b", "y", simulator)],
                                    "router_settings": {"fallbacks": [{"a": ["nope", "b"]}, {"ghost": ["a"]}]}}))
    config = load_config(path)  # LiteLLM starts with such a config: so does mmproxy, saying what it left out
    assert config.router.fallbacks == {"a": ["b"]}
    assert any("router_settings.fallbacks[0].a: 'nope' not a model_name" in w for w in config.warnings)
    assert any("router_settings.fallbacks[1].ghost: 'ghost' not a model_name" in w for w in config.warnings)
    result = subprocess.run([sys.executable, "-m", "mmproxy", "check", "--config", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "'nope' not a model_name in model_list; left out" in result.stderr
