"""Several gateway instances (and workers) agreeing on limits and cooldowns through a real Redis."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.conftest import UPSTREAM_KEY, Process, SimControl, redis_server_path, start_gateway

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = redis_server_path()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


def _config(sim: Process, upstream: str, redis_url: str, params: dict | None = None, **router) -> dict:
    return {
        "model_list": [{"model_name": "g", "litellm_params": {
            "model": f"openai/{upstream}", "api_base": f"{sim.url}/v1", "api_key": UPSTREAM_KEY, **(params or {})},
            "model_info": {"id": upstream}}],
        "router_settings": {"redis_url": redis_url, **router},
    }


def _post(gw: Process) -> httpx.Response:
    # A new connection per request, so --workers processes all get traffic.
    return httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "g", "messages": HELLO}, timeout=10)


def _clear_of_minute_boundary() -> None:
    if time.time() % 60 > 55:
        time.sleep(61 - time.time() % 60)


def test_two_instances_enforce_one_rpm_limit(simulator: Process, redis_url: str, tmp_path, sim: SimControl):
    config = _config(simulator, "sh-rpm", redis_url, {"rpm": 4})
    gw1, gw2 = start_gateway(tmp_path, config), start_gateway(tmp_path, config)
    try:
        _clear_of_minute_boundary()
        statuses = [_post(gw).status_code for gw in (gw1, gw2, gw1, gw2, gw1, gw2)]
        assert statuses == [200, 200, 200, 200, 429, 429]
        assert sim.stats()["by_model"] == {"sh-rpm": 4}
    finally:
        gw1.stop()
        gw2.stop()


def test_workers_share_the_limit(simulator: Process, redis_url: str, tmp_path, sim: SimControl):
    gw = start_gateway(tmp_path, _config(simulator, "sh-workers", redis_url, {"rpm": 5}), "--workers", "2")
    try:
        _clear_of_minute_boundary()
        # Both workers accept from one socket; send until each has answered (the kernel picks who accepts).
        responses = [_post(gw) for _ in range(12)]
        while len({r.headers["x-mmproxy-request-id"].rsplit("-", 1)[0] for r in responses}) < 2 \
                and len(responses) < 60:
            responses.append(_post(gw))
        assert len({r.headers["x-mmproxy-request-id"].rsplit("-", 1)[0] for r in responses}) == 2  # both workers
        assert sum(r.status_code == 200 for r in responses) == 5
        assert sim.stats()["by_model"] == {"sh-workers": 5}
    finally:
        gw.stop()


def test_a_cooldown_started_by_one_instance_holds_for_the_other(simulator: Process, redis_url: str, tmp_path,
                                                                 sim: SimControl):
    config = _config(simulator, "sh-cool", redis_url, allowed_fails=2, cooldown_time=30)
    gw1, gw2 = start_gateway(tmp_path, config), start_gateway(tmp_path, config)
    try:
        sim.fault("sh-cool", "500", count=-1)
        assert [_post(gw1).status_code for _ in range(2)] == [502, 502]
        time.sleep(1.0)  # the other instance refreshes cooldowns from Redis twice a second
        refused = _post(gw2)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "no_healthy_deployment"
        assert sim.stats()["by_model"] == {"sh-cool": 2}  # gw2 never paid for a failing call
    finally:
        gw1.stop()
        gw2.stop()


def test_without_redis_requests_still_work(simulator: Process, tmp_path, sim: SimControl):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    gw = start_gateway(tmp_path, _config(simulator, "sh-down", f"redis://127.0.0.1:{dead}/0", {"rpm": 100}))
    try:
        assert all(_post(gw).status_code == 200 for _ in range(5))
        time.sleep(0.3)
        assert "Redis unavailable" in "".join(gw.output)
    finally:
        gw.stop()


def test_least_busy_sees_the_other_instances_calls(simulator: Process, redis_url: str, tmp_path, sim: SimControl):
    from concurrent.futures import ThreadPoolExecutor

    config = _config(simulator, "sh-busy-a", redis_url, routing_strategy="least-busy")
    config["model_list"].append({**config["model_list"][0], "litellm_params": {
        **config["model_list"][0]["litellm_params"], "model": "openai/sh-busy-b"}, "model_info": {"id": "sh-busy-b"}})
    gw1, gw2 = start_gateway(tmp_path, config), start_gateway(tmp_path, config)
    try:
        for model in ("sh-busy-a", "sh-busy-b"):
            sim.http.post("/_sim/config", json={"model": model, "latency_ms": 2500}).raise_for_status()
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(_post, gw1)
            time.sleep(1.2)  # gw1's in-flight call reaches gw2 through Redis within two refreshes
            second = _post(gw2)
            assert first.result().headers["x-mmproxy-deployment"] != second.headers["x-mmproxy-deployment"]
    finally:
        gw1.stop()
        gw2.stop()
