"""No secret anywhere a gateway writes: provider keys, the master key, virtual keys, the database and Redis
passwords never reach stdout/stderr (debug logging and both access log formats), a response body or header,
``/metrics``, ``/health*``, ``/spend/*``, ``/key/*`` or ``mmproxy check`` — through every kind of error: bad,
expired, blocked and over-budget keys, upstream 401/429/5xx, malformed bodies, Redis down, the database down at
start and mid-run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pytest
import yaml

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, SimControl, gateway_config, start_gateway
from tests.security.conftest import DB_PASSWORD, REDIS_PASSWORD, Relay, Server, assert_no_secret, free_port, redis_url

WRONG_UPSTREAM_KEY = "sk-wrong-provider-key-0f9e8d7c"  # a deployment key the provider refuses
HELLO = [{"role": "user", "content": "hi"}]
MALFORMED: list[tuple[str, bytes]] = [
    ("/v1/chat/completions", b"{not json"),
    ("/v1/chat/completions", b"[1, 2]"),
    ("/v1/chat/completions", b'{"model": "gpt-4o", "messages": "hi"}'),
    ("/v1/chat/completions", b'{"model": 7, "messages": []}'),
    ("/v1/messages", b'{"model": "claude", "max_tokens": "x", "messages": []}'),
    ("/v1/embeddings", b'{"model": "embed"}'),
    ("/key/generate", b'{"key": 12}'),
]


class Transcript:
    """Every response the test saw, as text: status, headers and body."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.sent = 0  # chat requests sent, numbering their prompts

    def add(self, response: httpx.Response) -> httpx.Response:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.texts.append(f"{response.request.method} {response.request.url.path} -> {response.status_code}\n"
                          f"{headers}\n{response.text}")
        return response


def _with_password(url: str, port: int) -> str:
    """``postgres_url`` with a password and another port (trust auth accepts any password)."""
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.username}:{DB_PASSWORD}@127.0.0.1:{port}").geturl()


def _config(sim_url: str, database_url: str | None = None, redis: str | None = None) -> dict[str, Any]:
    """The test config, plus a deployment whose key the provider refuses; with ``redis`` (a URL) for limits and the
    cache."""
    config = gateway_config(sim_url)
    if redis is not None:
        config["router_settings"]["redis_url"] = redis
        config["litellm_settings"] = {"cache": True, "cache_params": {"type": "redis", "url": redis}}
    if database_url is not None:
        config["general_settings"]["database_url"] = database_url
    config["model_list"].append({"model_name": "wrongkey", "litellm_params": {
        "model": "openai/sim-wrong", "api_base": f"{sim_url}/v1", "api_key": WRONG_UPSTREAM_KEY},
        "model_info": {"id": "wrong-1"}})
    return config


def _check_output(tmp_path: Path, config: dict[str, Any]) -> str:
    """What ``mmproxy check`` prints for ``config`` (stdout and stderr)."""
    path = tmp_path / f"check-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "mmproxy", "check", "--config", str(path)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "MMPROXY_TEST_UPSTREAM_KEY": UPSTREAM_KEY})
    return done.stdout + done.stderr


def _traffic(gw: Process, sim: SimControl, out: Transcript, clear_keys: list[str]) -> dict[str, str]:
    """Keys of every kind, then requests that fail every way; returns the virtual keys by name."""
    admin = httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30)
    keys: dict[str, str] = {}
    admin.post("/team/new", json={"team_id": "team-sec"}).raise_for_status()
    for name, fields in (("good", {"key_alias": "alias-good", "team_id": "team-sec"}),
                         ("broke", {"max_budget": 1e-9}), ("expiring", {"duration": "1s"}),
                         ("blocked", {}), ("limited", {"models": ["mini"]})):
        created = admin.post("/key/generate", json=fields)  # the one response that shows a clear key
        assert created.status_code == 200, created.text
        keys[name] = created.json()["key"]
        clear_keys.append(keys[name])
    clear_keys.append("sk-never-issued-key-31415926")
    out.add(admin.post("/key/update", json={"key": keys["blocked"], "blocked": True}))

    def chat(key: str, model: str = "gpt-4o", **extra: Any) -> httpx.Response:
        out.sent += 1  # a new prompt each time: no answer comes from the cache
        messages = [{"role": "user", "content": f"question {out.sent}"}]
        return out.add(httpx.post(f"{gw.url}/v1/chat/completions", json={"model": model, "messages": messages,
                                                                          **extra},
                                  headers={"Authorization": f"Bearer {key}"}, timeout=30))

    assert chat(keys["good"]).status_code == 200
    assert chat(keys["good"], stream=True).status_code == 200
    assert chat(keys["good"], model="made-up-model").status_code in (400, 404)
    assert chat(keys["limited"]).status_code == 403
    assert chat("sk-never-issued-key-31415926").status_code == 401
    assert chat(keys["blocked"]).status_code == 401
    time.sleep(1.2)
    assert chat(keys["expiring"]).status_code == 401
    assert chat(keys["broke"]).status_code == 200  # the first request is within budget...
    assert chat(keys["broke"]).status_code == 429  # ...and spends it
    out.add(httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO},
                       headers={"Authorization": f"Basic {keys['good']}"}))
    out.add(httpx.post(f"{gw.url}/v1/messages", json={"model": "claude", "max_tokens": 5, "messages": HELLO},
                       headers={"x-api-key": "sk-never-issued-key-31415926"}))
    for fault in ("401", "429", "500", "503"):
        sim.fault("sim-frontier", fault, count=5)
        assert chat(keys["good"]).status_code >= 400
        sim.reset()
    for path, body in MALFORMED:
        reply = out.add(httpx.post(f"{gw.url}{path}", content=body, headers={
            "Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}))
        assert 400 <= reply.status_code < 500, reply.text

    # The provider refuses the deployment's own key: a 401 that must not read as the client's bad key.
    refused = chat(keys["good"], model="wrongkey")
    assert refused.status_code == 401
    error = refused.json()["error"]
    assert error["code"] == "upstream_auth_failed" and error["code"] != "invalid_api_key"
    assert "upstream wrong-1" in error["message"] and "not the client's API key" in error["message"]
    with pytest.raises(openai.AuthenticationError) as caught:
        openai.OpenAI(base_url=f"{gw.url}/v1", api_key=keys["good"], max_retries=0).chat.completions.create(
            model="wrongkey", messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.code == "upstream_auth_failed"

    # The dashboard: a failed and a good login, then its data with the session.
    ui = httpx.Client(base_url=gw.url, timeout=30)
    assert out.add(ui.post("/ui/login", data={"key": "sk-never-issued-key-31415926"})).status_code == 401
    assert out.add(ui.post("/ui/login", data={"key": keys["good"]})).status_code == 303
    for path in ("/ui", "/ui/api/report", "/ui/api/decisions"):
        assert out.add(ui.get(path, headers={"x-mmproxy-ui": "1"})).status_code == 200, path

    reads = [admin.get("/key/info", params={"key": keys["good"]}),
             admin.get("/key/list", params={"return_full_object": "true"}), admin.get("/key/list"),
             admin.get("/spend/logs"), admin.get("/spend/logs", params={"api_key": keys["good"]}),
             admin.get("/spend/report", params={"group_by": "key"}), admin.get("/metrics"), admin.get("/health"),
             admin.get("/health/readiness"), admin.get("/health/liveliness"), admin.get("/v1/models")]
    for reply in reads:
        out.add(reply)
        assert reply.status_code == 200, reply.text
    good_hash = reads[0].json()["key"]
    assert len(good_hash) == 64 and reads[0].json()["info"]["key_name"] == f"sk-...{keys['good'][-4:]}"
    assert good_hash in reads[2].json()["keys"]
    assert any(row["key_hash"] == good_hash for row in reads[4].json())
    return keys


def test_no_secret_in_any_output(simulator: Process, sim: SimControl, postgres_url: str, password_redis: Server,
                                 tmp_path: Path) -> None:
    relay = Relay(urlsplit(postgres_url).port or 5432)
    database_url = _with_password(postgres_url, relay.port)
    config = _config(simulator.url, database_url, redis_url(password_redis))
    gw = start_gateway(tmp_path, config, "--log-level", "debug", "--access-log", "json")
    out = Transcript()
    clear_keys: list[str] = []
    try:
        keys = _traffic(gw, sim, out, clear_keys)

        # Redis goes away: limits, budgets and the cache fall back, with warnings.
        password_redis.stop()
        for _ in range(3):
            out.add(httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO},
                               headers={"Authorization": f"Bearer {keys['good']}"}, timeout=30))
        # The database goes away mid-run: the ledger keeps rows, reads fail with a 503, writes with an error.
        relay.cut()
        admin = {"Authorization": f"Bearer {MASTER_KEY}"}
        for _ in range(3):
            out.add(httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO},
                               headers={"Authorization": f"Bearer {keys['good']}"}, timeout=30))
        for reply in (httpx.get(f"{gw.url}/spend/logs", headers=admin, timeout=30),
                      httpx.post(f"{gw.url}/key/generate", json={}, headers=admin, timeout=30),
                      httpx.get(f"{gw.url}/key/info", params={"key": keys["good"]}, headers=admin, timeout=30)):
            out.add(reply)
            assert reply.status_code == 503 and reply.json()["error"]["code"] == "database_unavailable", reply.text
        out.add(httpx.get(f"{gw.url}/health/readiness", timeout=30))
        time.sleep(1.5)  # the key refresh and the ledger's retry run (and log) against the missing database
    finally:
        gw.stop()
    assert any(reply.startswith("POST /v1/chat/completions -> 200") for reply in out.texts[-10:]), \
        "requests are served while Redis and the database are down"
    secrets = [UPSTREAM_KEY, WRONG_UPSTREAM_KEY, MASTER_KEY, DB_PASSWORD, REDIS_PASSWORD, *clear_keys]
    log = "".join(gw.output)
    assert '"endpoint":"chat"' in log, "the access log ran"
    assert "Redis unavailable" in log and "spend ledger: write failed" in log, "Redis and the database were down"
    assert_no_secret(log, secrets, "the gateway's stdout/stderr (debug log, JSON access log)")
    for text in out.texts:
        assert_no_secret(text, secrets, f"a response: {text.splitlines()[0]}")

    # The database unreachable at start: the gateway says why and exits, without the password.
    down = _config(simulator.url, _with_password(postgres_url, free_port()), "redis://:x@127.0.0.1:1/0")
    with pytest.raises(RuntimeError) as failed:
        start_gateway(tmp_path, down, "--log-level", "debug")
    assert "cannot open the database" in str(failed.value)
    assert_no_secret(str(failed.value), secrets, "the output of a gateway that cannot reach its database")

    # mmproxy check: a valid config and configs with errors around the secrets.
    assert "is valid" in _check_output(tmp_path, config)
    bad_db = {**config, "general_settings": {**config["general_settings"],
                                            "database_url": f"mysql://root:{DB_PASSWORD}@db/x"}}
    bad_redis = {**config, "router_settings": {"redis_url": f"http://:{REDIS_PASSWORD}@cache:6379"}}
    bad_base = {**config, "model_list": [{"model_name": "x", "litellm_params": {
        "model": "openai/x", "api_base": f"ftp://u:{DB_PASSWORD}@h/v1", "api_key": UPSTREAM_KEY}}]}
    for broken in (bad_db, bad_redis, bad_base):
        said = _check_output(tmp_path, broken)
        assert "error" in said, said
        assert_no_secret(said, secrets, "mmproxy check's output on a config with an error")


def test_text_access_log_and_debug_log_show_no_key(simulator: Process, sim: SimControl, tmp_path: Path) -> None:
    """The text access log names a key by alias or hash prefix; a caller's wrong key is never written."""
    gw = start_gateway(tmp_path, _config(simulator.url), "--log-level", "debug", "--access-log", "text")
    out = Transcript()
    clear_keys: list[str] = []
    try:
        _traffic(gw, sim, out, clear_keys)
    finally:
        gw.stop()
    log = "".join(gw.output)
    assert "key=alias-good" in log and "endpoint=chat" in log
    secrets = [UPSTREAM_KEY, WRONG_UPSTREAM_KEY, MASTER_KEY, *clear_keys]
    assert_no_secret(log, secrets, "the gateway's stdout/stderr (debug log, text access log)")
    for text in out.texts:
        assert_no_secret(text, secrets, f"a response: {text.splitlines()[0]}")
