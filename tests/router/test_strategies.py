"""Routing strategies and rpm/tpm limits through the real gateway."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import UPSTREAM_KEY, Process, SimControl, start_gateway

HELLO = [{"role": "user", "content": "hi"}]


def _dep(name: str, upstream: str, sim: Process, params: dict | None = None, **info) -> dict:
    return {"model_name": name,
            "litellm_params": {"model": f"openai/{upstream}", "api_base": f"{sim.url}/v1", "api_key": UPSTREAM_KEY,
                               **(params or {})},
            "model_info": {"id": upstream, **info}}


def _gateway(tmp_path, model_list: list[dict], strategy: str = "simple-shuffle") -> Process:
    return start_gateway(tmp_path, {"model_list": model_list, "router_settings": {"routing_strategy": strategy}})


def _post(gw: Process, model: str, messages: list | None = None) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", json={"model": model, "messages": messages or HELLO},
                      timeout=20)


def _clear_of_minute_boundary() -> None:
    """rpm/tpm windows are calendar minutes: keep a limit test inside one."""
    if time.time() % 60 > 55:
        time.sleep(61 - time.time() % 60)


def test_rpm_limit_skips_full_deployments_then_429s(simulator: Process, tmp_path, sim: SimControl):
    gw = _gateway(tmp_path, [_dep("g", "st-rpm-a", simulator, {"rpm": 3}),
                             _dep("g", "st-rpm-b", simulator, {"rpm": 3})])
    try:
        _clear_of_minute_boundary()
        assert all(_post(gw, "g").status_code == 200 for _ in range(6))
        assert sim.stats()["by_model"] == {"st-rpm-a": 3, "st-rpm-b": 3}
        refused = _post(gw, "g")
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert sum(sim.stats()["by_model"].values()) == 6  # refused without an upstream call
    finally:
        gw.stop()


def test_tpm_limit_counts_input_tokens(simulator: Process, tmp_path, sim: SimControl):
    gw = _gateway(tmp_path, [_dep("g", "st-tpm", simulator, {"tpm": 40})])
    try:
        _clear_of_minute_boundary()
        long = [{"role": "user", "content": "word " * 60}]
        assert _post(gw, "g", long).status_code == 429
        assert _post(gw, "g").status_code == 200  # a small request still fits
        assert sim.stats()["by_model"] == {"st-tpm": 1}
    finally:
        gw.stop()


def test_cost_based_routing_prefers_the_cheapest(simulator: Process, tmp_path, sim: SimControl):
    gw = _gateway(tmp_path, [
        _dep("g", "st-pricey", simulator, input_cost_per_token=1e-5, output_cost_per_token=3e-5),
        _dep("g", "st-cheap", simulator, input_cost_per_token=1e-7, output_cost_per_token=4e-7),
        _dep("g", "st-unpriced", simulator),
    ], "cost-based-routing")
    try:
        assert {_post(gw, "g").headers["x-mmproxy-deployment"] for _ in range(10)} == {"st-cheap"}
    finally:
        gw.stop()


def test_least_busy_spreads_concurrent_requests(simulator: Process, tmp_path, sim: SimControl):
    gw = _gateway(tmp_path, [_dep("g", "st-busy-a", simulator), _dep("g", "st-busy-b", simulator)], "least-busy")
    try:
        for model in ("st-busy-a", "st-busy-b"):
            sim.http.post("/_sim/config", json={"model": model, "latency_ms": 400}).raise_for_status()
        with ThreadPoolExecutor(4) as pool:
            picks = list(pool.map(lambda _: _post(gw, "g").headers["x-mmproxy-deployment"], range(4)))
        assert sorted(picks) == ["st-busy-a", "st-busy-a", "st-busy-b", "st-busy-b"]
    finally:
        gw.stop()


def test_latency_based_routing_learns_the_faster_deployment(simulator: Process, tmp_path, sim: SimControl):
    gw = _gateway(tmp_path, [_dep("g", "st-slow", simulator), _dep("g", "st-fast", simulator)],
                  "latency-based-routing")
    try:
        sim.http.post("/_sim/config", json={"model": "st-slow", "latency_ms": 150}).raise_for_status()
        first_two = {_post(gw, "g").headers["x-mmproxy-deployment"] for _ in range(2)}
        assert first_two == {"st-slow", "st-fast"}  # both measured before either is preferred
        assert {_post(gw, "g").headers["x-mmproxy-deployment"] for _ in range(8)} == {"st-fast"}
    finally:
        gw.stop()


def test_usage_based_routing_follows_headroom(simulator: Process, tmp_path, sim: SimControl):
    gw = _gateway(tmp_path, [_dep("g", "st-small", simulator, {"rpm": 4}), _dep("g", "st-large", simulator,
                                                                                 {"rpm": 100})],
                  "usage-based-routing")
    try:
        _clear_of_minute_boundary()
        picks = [_post(gw, "g").headers["x-mmproxy-deployment"] for _ in range(12)]
        assert picks.count("st-small") <= 1  # one request already uses a quarter of its minute
    finally:
        gw.stop()


@pytest.mark.parametrize("strategy", ["simple-shuffle", "least-busy", "latency-based-routing",
                                      "usage-based-routing", "cost-based-routing"])
def test_every_strategy_skips_a_cooling_deployment(simulator: Process, tmp_path, sim: SimControl, strategy):
    config = {"model_list": [_dep("g", "st-cool-a", simulator), _dep("g", "st-cool-b", simulator)],
              "router_settings": {"routing_strategy": strategy, "allowed_fails": 1, "cooldown_time": 30,
                                  "num_retries": 1}}
    gw = start_gateway(tmp_path, config)
    try:
        sim.fault("st-cool-a", "500", count=-1)
        results = [_post(gw, "g") for _ in range(6)]
        assert all(r.status_code == 200 and r.headers["x-mmproxy-deployment"] == "st-cool-b" for r in results)
        assert sim.stats()["by_model"].get("st-cool-a", 0) <= 1
    finally:
        gw.stop()
