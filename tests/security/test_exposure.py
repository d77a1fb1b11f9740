"""What ``/metrics`` and the health endpoints show (``/metrics`` and ``/health/*`` need no key): no key, key
alias or hash, no prompt, no model name a client made up, no upstream URL or its credentials."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, SimControl, gateway_config, start_gateway
from tests.security.conftest import assert_no_secret, free_port

URL_PASSWORD = "url-pw-Secret-0b7d"
ALIAS = "alias-ExposureBot-42"
PROMPT = "PROMPT-MARKER-confidential-plan"
MADE_UP = ["made-up-model-zq9", "gpt-4o\nfake_metric 1", "x" * 300]


def test_metrics_and_health_name_only_what_the_operator_configured(simulator: Process, sim: SimControl,
                                                                   tmp_path: Path) -> None:
    config = gateway_config(simulator.url)
    sim_host = simulator.url.removeprefix("http://")
    config["model_list"] += [
        {"model_name": "creds-ok", "litellm_params": {"model": "openai/sim-creds", "api_key": UPSTREAM_KEY,
                                                      "api_base": f"http://user:{URL_PASSWORD}@{sim_host}/v1"},
         "model_info": {"id": "creds-ok-1", "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}},
        {"model_name": "creds-down", "litellm_params": {
            "model": "openai/sim-creds", "api_key": UPSTREAM_KEY,
            "api_base": f"http://user:{URL_PASSWORD}@127.0.0.1:{free_port()}/v1"},
         "model_info": {"id": "creds-down-1"}},
    ]
    gw = start_gateway(tmp_path, config)
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    try:
        httpx.post(f"{gw.url}/team/new", headers=admin, json={"team_id": "team-exposure"}).raise_for_status()
        created = httpx.post(f"{gw.url}/key/generate", headers=admin,
                             json={"key_alias": ALIAS, "team_id": "team-exposure", "max_budget": 1e-9}).json()
        key, token = created["key"], created["token"]
        as_key = {"Authorization": f"Bearer {key}"}
        replies = []

        def chat(model: str, headers: dict[str, str]) -> httpx.Response:
            reply = httpx.post(f"{gw.url}/v1/chat/completions", headers=headers, timeout=30,
                               json={"model": model, "messages": [{"role": "user", "content": PROMPT}]})
            replies.append(reply)
            return reply

        assert chat("gpt-4o", as_key).status_code == 200
        assert chat("gpt-4o", as_key).status_code == 429  # over budget: counted by team
        for model in MADE_UP:
            assert chat(model, admin).status_code == 400
            assert chat(model, as_key).status_code == 429  # refused for its budget before the model is looked at
        assert chat("creds-ok", admin).status_code == 200  # the URL's user info is not sent nor shown
        assert sim.last()["model"] == "sim-creds" and URL_PASSWORD not in str(sim.last())
        down = chat("creds-down", admin)
        assert down.status_code == 502 and "creds-down-1" in down.json()["error"]["message"]

        metrics = httpx.get(f"{gw.url}/metrics").text  # no key needed, as Prometheus scrapes it
        health = [httpx.get(f"{gw.url}{path}", headers=admin).text
                  for path in ("/health", "/health/readiness", "/health/liveliness")]
    finally:
        gw.stop()
    assert 'model="__other__"' in metrics and 'model="gpt-4o"' in metrics and 'model="creds-ok"' in metrics
    assert f'mmproxy_budget_rejections_total{{team="team-exposure"}} {1 + len(MADE_UP)}' in metrics
    never = [ALIAS, key, token, token[:12], PROMPT, URL_PASSWORD, "user:", UPSTREAM_KEY, MASTER_KEY, "made-up",
             "fake_metric", "x" * 100, "127.0.0.1"]
    assert_no_secret(metrics, never, "/metrics")
    for text in health:
        assert_no_secret(text, never, "a health endpoint")
    for reply in replies:
        assert_no_secret(reply.text + str(reply.headers), [URL_PASSWORD, UPSTREAM_KEY, MASTER_KEY, key], "a response")
    assert_no_secret("".join(gw.output), [URL_PASSWORD, UPSTREAM_KEY, MASTER_KEY, key], "the gateway's output")
