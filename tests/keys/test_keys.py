"""Virtual keys end to end: LiteLLM's /key endpoints, restrictions, limits and race-safe budgets."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from mmproxy.config import parse_config
from tests.conftest import MASTER_KEY, Process, SimControl, gateway_config, start_gateway
from tests.router.test_shared_redis import redis_url  # noqa: F401  (the module fixture: a real redis-server)

HELLO = [{"role": "user", "content": "hi"}]
# gpt-4o in the test config: 2.5e-06 per input token, 1e-05 per output token.


@pytest.fixture(scope="module")
def gw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="module")
def gw(simulator: Process, gw_dir: Path) -> Iterator[Process]:
    process = start_gateway(gw_dir, gateway_config(simulator.url))
    yield process
    process.stop()


@pytest.fixture
def admin(gw: Process) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30)


def _generate(admin: httpx.Client, **fields) -> dict:
    response = admin.post("/key/generate", json=fields)
    assert response.status_code == 200, response.text
    return response.json()


def _client(gw: Process, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)


def test_key_lifecycle(gw: Process, gw_dir: Path, admin: httpx.Client, sim: SimControl):
    admin.post("/team/new", json={"team_id": "team-a"}).raise_for_status()
    created = _generate(admin, key_alias="team-a-bot", team_id="team-a", metadata={"owner": "ana"},
                        tags=["x"])
    key = created["key"]
    assert key.startswith("sk-") and created["token"] == hashlib.sha256(key.encode()).hexdigest()
    assert created["key_name"] == f"sk-...{key[-4:]}" and created["ignored_fields"] == ["tags"]

    reply = _client(gw, key).chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    cost = float(reply.headers["x-mmproxy-cost-usd"])
    assert cost > 0
    # The upstream never sees the virtual key.
    assert key not in str(sim.last()["headers"])

    info = admin.get("/key/info", params={"key": key}).json()
    assert info["key"] == created["token"]
    assert info["info"]["spend"] == pytest.approx(cost, rel=1e-9)
    assert info["info"]["metadata"] == {"owner": "ana"} and info["info"]["team_id"] == "team-a"
    assert "sk-" not in str(info).replace(created["key_name"], "")  # the clear key is shown once only

    listed = admin.get("/key/list").json()["keys"]
    assert created["token"] in listed

    updated = admin.post("/key/update", json={"key": created["token"], "blocked": True}).json()
    assert updated["blocked"] is True
    with pytest.raises(openai.AuthenticationError, match="blocked"):
        _client(gw, key).chat.completions.create(model="gpt-4o", messages=HELLO)
    admin.post("/key/update", json={"key": key, "blocked": False}).raise_for_status()
    _client(gw, key).chat.completions.create(model="gpt-4o", messages=HELLO)

    deleted = admin.post("/key/delete", json={"keys": [key]}).json()
    assert deleted == {"deleted_keys": [created["token"]]}
    with pytest.raises(openai.AuthenticationError):
        _client(gw, key).chat.completions.create(model="gpt-4o", messages=HELLO)

    # Stored hashed: the clear key is nowhere in the database files.
    for path in gw_dir.glob("mmproxy.db*"):
        assert key.encode() not in path.read_bytes()


def test_key_endpoints_need_the_master_key(gw: Process, admin: httpx.Client):
    key = _generate(admin)["key"]
    as_key = httpx.post(f"{gw.url}/key/generate", json={}, headers={"Authorization": f"Bearer {key}"})
    assert as_key.status_code == 403 and as_key.json()["error"]["code"] == "admin_only"
    anonymous = httpx.get(f"{gw.url}/key/list")
    assert anonymous.status_code == 401
    bad = admin.post("/key/generate", json={"max_budget": "lots"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_budget"
    missing = admin.get("/key/info", params={"key": "sk-does-not-exist"})
    assert missing.status_code == 404


def test_model_restriction(gw: Process, admin: httpx.Client, sim: SimControl):
    key = _generate(admin, models=["mini"])["key"]
    client = _client(gw, key)
    assert client.chat.completions.create(model="mini", messages=HELLO).choices
    before = sim.stats()["requests"]
    with pytest.raises(openai.PermissionDeniedError, match="may not use model 'gpt-4o'"):
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert sim.stats()["requests"] == before  # refused before any upstream call
    assert [m.id for m in client.models.list()] == ["mini"]


def test_expired_key(gw: Process, admin: httpx.Client):
    key = _generate(admin, duration="1s")["key"]
    time.sleep(1.2)
    with pytest.raises(openai.AuthenticationError, match="expired"):
        _client(gw, key).chat.completions.create(model="mini", messages=HELLO)


def test_rpm_limit(gw: Process, admin: httpx.Client):
    key = _generate(admin, rpm_limit=2)["key"]
    client = _client(gw, key)
    # Start at the beginning of a minute window so all three land in the same one.
    if time.time() % 60 > 55:
        time.sleep(60 - time.time() % 60 + 0.1)
    for _ in range(2):
        client.chat.completions.create(model="mini", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="mini", messages=HELLO)
    assert info.value.body["code"] == "key_rpm_exceeded"
    assert int(info.value.response.headers["retry-after"]) >= 1


def test_budget_exceeded_before_any_upstream_call(gw: Process, admin: httpx.Client, sim: SimControl):
    key = _generate(admin, max_budget=1e-9)["key"]
    client = _client(gw, key)
    client.chat.completions.create(model="gpt-4o", messages=HELLO)  # spends more than the budget
    before = sim.stats()["requests"]
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert info.value.body["code"] == "budget_exceeded" and "budget" in info.value.message
    assert sim.stats()["requests"] == before


def test_budget_resets_after_its_duration(gw: Process, admin: httpx.Client):
    key = _generate(admin, max_budget=1e-9, budget_duration="2s")["key"]
    client = _client(gw, key)
    client.chat.completions.create(model="gpt-4o", messages=HELLO)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    time.sleep(2.2)
    assert client.chat.completions.create(model="gpt-4o", messages=HELLO).choices


def _budget_burst(gw: Process, admin: httpx.Client, limit: int | None = 20) -> tuple[list[str], str, float]:
    """Measure one request's cost, give a key the budget of 5.5 and fire 40 at once, each held 300 ms upstream
    so all are in flight together (without reservations all 40 would pass): (outcomes, key, one's cost).
    ``limit``: the requests' max_tokens (None: unset)."""
    probe = _generate(admin)["key"]
    body = {"model": "gpt-4o", "messages": HELLO, "extra_body": {"sim": {"tokens": 20}}}
    if limit is not None:
        body["max_tokens"] = limit
    one = float(_client(gw, probe).chat.completions.with_raw_response.create(**body).headers["x-mmproxy-cost-usd"])
    key = _generate(admin, max_budget=5.5 * one)["key"]
    slow = {**body, "extra_body": {"sim": {"tokens": 20, "latency_ms": 300}}}

    async def burst() -> list[str]:
        client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)

        async def one_call() -> str:
            try:
                await client.chat.completions.create(**slow)
                return "ok"
            except openai.RateLimitError as exc:
                return exc.body["code"]

        return await asyncio.gather(*(one_call() for _ in range(40)))

    outcomes = asyncio.run(burst())
    assert set(outcomes) <= {"ok", "budget_exceeded"}
    return outcomes, key, one


def test_concurrent_requests_cannot_overspend(gw: Process, admin: httpx.Client, sim: SimControl):
    outcomes, key, one = _budget_burst(gw, admin)
    assert 5 <= outcomes.count("ok") <= 7
    spend = admin.get("/key/info", params={"key": key}).json()["info"]["spend"]
    assert spend == pytest.approx(outcomes.count("ok") * one, rel=1e-6)
    assert spend <= 5.5 * one + one  # at most the requests in flight when the budget ran out


def test_a_budget_is_used_when_requests_set_no_max_tokens(gw: Process, admin: httpx.Client, sim: SimControl):
    # Reserving the default answer length (1,024 tokens) for each would admit one or two of the 40; the gateway
    # reserves what this model group's answers take (with a margin), so about as many as the budget pays for.
    outcomes, key, one = _budget_burst(gw, admin, limit=None)
    assert 4 <= outcomes.count("ok") <= 7
    spend = admin.get("/key/info", params={"key": key}).json()["info"]["spend"]
    assert spend <= 5.5 * one + one


def test_a_key_with_a_budget_may_not_use_an_unpriced_model(gw: Process, admin: httpx.Client, simulator: Process,
                                                           tmp_path: Path):
    budgeted, unlimited = _generate(admin, max_budget=1.0)["key"], _generate(admin)["key"]
    with pytest.raises(openai.BadRequestError) as info:  # "small" has no price: its spend would stay 0
        _client(gw, budgeted).chat.completions.create(model="small", messages=HELLO)
    assert info.value.code == "model_not_priced"
    assert _client(gw, budgeted).chat.completions.create(model="gpt-4o", messages=HELLO).choices  # priced
    assert _client(gw, unlimited).chat.completions.create(model="small", messages=HELLO).choices  # no budget
    config = gateway_config(simulator.url)
    config["general_settings"]["budget_on_unpriced_models"] = "allow"
    allowing = start_gateway(tmp_path, config)
    try:
        key = httpx.post(f"{allowing.url}/key/generate", json={"max_budget": 1.0},
                         headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()["key"]
        assert _client(allowing, key).chat.completions.create(model="small", messages=HELLO).choices
    finally:
        allowing.stop()
    config = gateway_config(simulator.url)
    config["environment_variables"] = {"MMPROXY_TEST_UPSTREAM_KEY": "sk-test"}
    warnings = parse_config(config).warnings
    assert any("(small, sim-small): no price known" in w for w in warnings)
    assert not any("(gpt-4o," in w for w in warnings)


def test_routing_rules_see_the_calling_key_and_team(simulator: Process, tmp_path: Path, sim: SimControl):
    config = gateway_config(simulator.url)
    config["routing_rules"] = [
        {"name": "vip-key", "when": {"key": ["vip-bot"]}, "route": {"model": "mini"}},
        {"name": "research-team", "when": {"team": ["research"]}, "route": {"model": "claude"}},
    ]
    gw = start_gateway(tmp_path, config)
    try:
        admin = httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"})
        admin.post("/team/new", json={"team_id": "research"}).raise_for_status()
        vip = admin.post("/key/generate", json={"key_alias": "vip-bot"}).json()["key"]
        researcher = admin.post("/key/generate", json={"team_id": "research"}).json()["key"]
        plain = admin.post("/key/generate", json={}).json()["key"]
        for key, rule, deployment in ((vip, "vip-key", "mini"), (researcher, "research-team", "claude-1")):
            reply = _client(gw, key).chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
            assert reply.headers["x-mmproxy-route-rule"] == rule
            assert reply.headers["x-mmproxy-deployment"].startswith(deployment)
        reply = _client(gw, plain).chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
        assert "x-mmproxy-route-rule" not in reply.headers and reply.headers["x-mmproxy-deployment"] == "frontier-1"
    finally:
        gw.stop()


def test_limits_and_budgets_hold_across_workers_through_redis(simulator: Process, tmp_path: Path, sim: SimControl,
                                                              redis_url: str):  # noqa: F811
    config = gateway_config(simulator.url)
    config["router_settings"] = {"redis_url": redis_url}
    gw = start_gateway(tmp_path, config, "--workers", "2")
    try:
        admin = httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30)
        if time.time() % 60 > 50:  # all in one minute window
            time.sleep(60 - time.time() % 60 + 0.1)
        outcomes = spread_over_workers(gw, [_generate(admin, rpm_limit=4)["key"]])
        assert outcomes.count(200) == 4 and outcomes.count(429) == 8  # one limit, not one per worker
        team_id = admin.post("/team/new", json={"rpm_limit": 4}).json()["team_id"]
        team_keys = [_generate(admin, team_id=team_id)["key"] for _ in range(2)]
        outcomes = spread_over_workers(gw, team_keys)
        assert outcomes.count(200) == 4 and outcomes.count(429) == 8  # one team limit, not one per worker or key

        outcomes_budget, _, _ = _budget_burst(gw, admin)
        assert 5 <= outcomes_budget.count("ok") <= 7  # per worker it would be 5-7 each
    finally:
        gw.stop()


def statuses_by_worker(gw: Process, keys: list[str], count: int = 12, model: str = "mini") -> dict[str, list[int]]:
    """The statuses of ``count`` requests through ``keys`` in turn, by the worker that answered; each on a new
    connection, so a multi-worker gateway's workers share them."""
    statuses: dict[str, list[int]] = {}
    for i in range(count):
        reply = httpx.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {keys[i % len(keys)]}"},
                           json={"model": model, "messages": HELLO})
        statuses.setdefault(reply.headers["x-mmproxy-request-id"].split("-")[0], []).append(reply.status_code)
    return statuses


def spread_over_workers(gw: Process, keys: list[str], count: int = 12) -> list[int]:
    """``statuses_by_worker`` of a two-worker gateway, all together; both workers must have answered."""
    statuses = statuses_by_worker(gw, keys, count)
    assert len(statuses) == 2, "the requests did not reach both workers"
    return [status for worker in statuses.values() for status in worker]


def test_key_limits_fall_back_to_each_process_while_redis_is_down(simulator: Process, tmp_path: Path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    config = gateway_config(simulator.url)
    config["router_settings"] = {"redis_url": f"redis://127.0.0.1:{dead}/0"}
    gw = start_gateway(tmp_path, config)
    try:
        admin = httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30)
        if time.time() % 60 > 55:
            time.sleep(60 - time.time() % 60 + 0.1)
        client = _client(gw, _generate(admin, rpm_limit=2)["key"])
        for _ in range(2):
            assert client.chat.completions.create(model="mini", messages=HELLO).choices
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="mini", messages=HELLO)
        assert info.value.body["code"] == "key_rpm_exceeded"
    finally:
        gw.stop()
