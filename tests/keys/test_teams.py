"""Teams end to end on SQLite and PostgreSQL: LiteLLM's /team endpoints, and a team's models, limits and budget
held across its keys by a real gateway in front of the simulator."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY, Process, SimControl, gateway_config, poll, start_gateway
from tests.keys.conftest import call
from tests.keys.test_keys import HELLO, _client, statuses_by_worker


def _team(master: httpx.Client, **fields: object) -> dict:
    return call(master, "POST", "/team/new", json={"team_id": f"team-{uuid.uuid4().hex[:8]}", **fields})


def _key(master: httpx.Client, **fields: object) -> str:
    return call(master, "POST", "/key/generate", json=fields)["key"]


def _cost(gw: Process, key: str, model: str = "gpt-4o") -> float:
    reply = _client(gw, key).chat.completions.with_raw_response.create(model=model, messages=HELLO)
    return float(reply.headers["x-mmproxy-cost-usd"])


def test_team_shapes_and_spend_across_its_keys(db_gateway: Process, master: httpx.Client):
    created = call(master, "POST", "/team/new", json={
        "team_alias": "research", "models": ["gpt-4o", "claude"], "max_budget": 10, "budget_duration": "30d",
        "rpm_limit": 100, "tpm_limit": 100_000, "metadata": {"owner": "ana"}, "members_with_roles": []})
    team_id = created["team_id"]
    assert str(uuid.UUID(team_id)) == team_id  # generated when absent, as LiteLLM does
    assert {k: created[k] for k in ("team_alias", "models", "max_budget", "budget_duration", "rpm_limit",
                                    "tpm_limit", "metadata", "spend", "blocked")} == {
        "team_alias": "research", "models": ["gpt-4o", "claude"], "max_budget": 10.0, "budget_duration": "30d",
        "rpm_limit": 100, "tpm_limit": 100_000, "metadata": {"owner": "ana"}, "spend": 0.0, "blocked": False}
    assert created["budget_reset_at"] is not None and created["ignored_fields"] == ["members_with_roles"]
    again = master.post("/team/new", json={"team_id": team_id})
    assert again.status_code == 400 and again.json()["error"]["param"] == "team_id"  # as LiteLLM answers

    first, second = _key(master, team_id=team_id), _key(master, team_id=team_id)
    spent = _cost(db_gateway, first) + _cost(db_gateway, second) + _cost(db_gateway, second, "claude")

    info = call(master, "GET", "/team/info", params={"team_id": team_id})
    assert info["team_id"] == team_id and info["team_info"]["spend"] == pytest.approx(spent, rel=1e-9)
    assert sorted(k["token"] for k in info["keys"]) == sorted(
        call(master, "GET", "/key/list", params={"team_id": team_id})["keys"])
    assert sum(k["spend"] for k in info["keys"]) == pytest.approx(spent, rel=1e-9)
    report = call(master, "GET", "/spend/report", params={"group_by": "team"})["groups"]
    assert [g["cost_usd"] for g in report if g["group"] == team_id] == [pytest.approx(spent, rel=1e-9)]

    updated = call(master, "POST", "/team/update", json={"team_id": team_id, "team_alias": "research-2"})
    assert updated["team_id"] == team_id and updated["data"]["team_alias"] == "research-2"
    assert updated["data"]["spend"] == pytest.approx(spent, rel=1e-9)
    listed = {t["team_id"]: t for t in call(master, "GET", "/team/list")}
    assert listed[team_id]["team_alias"] == "research-2"


def test_a_team_budget_holds_across_its_keys(db_gateway: Process, master: httpx.Client, sim: SimControl):
    team_id = _team(master, max_budget=1e-9)["team_id"]
    first, second = _key(master, team_id=team_id), _key(master, team_id=team_id, max_budget=100)
    _cost(db_gateway, first)  # spends more than the team's budget
    before = sim.stats()["requests"]
    with pytest.raises(openai.RateLimitError) as info:
        _client(db_gateway, second).chat.completions.create(model="gpt-4o", messages=HELLO)
    assert info.value.body["code"] == "budget_exceeded" and f"team {team_id!r}" in info.value.message
    assert sim.stats()["requests"] == before  # refused before any upstream call


def test_a_team_budget_resets_after_its_duration(db_gateway: Process, master: httpx.Client):
    team_id = _team(master, max_budget=1e-9, budget_duration="2s")["team_id"]
    client = _client(db_gateway, _key(master, team_id=team_id))
    client.chat.completions.create(model="gpt-4o", messages=HELLO)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    time.sleep(2.2)
    assert client.chat.completions.create(model="gpt-4o", messages=HELLO).choices


def test_concurrent_requests_cannot_overspend_a_team_budget(db_gateway: Process, master: httpx.Client,
                                                            sim: SimControl):
    body = {"model": "gpt-4o", "messages": HELLO, "max_tokens": 20, "extra_body": {"sim": {"tokens": 20}}}
    one = float(_client(db_gateway, _key(master)).chat.completions.with_raw_response.create(**body)
                .headers["x-mmproxy-cost-usd"])
    team_id = _team(master, max_budget=5.5 * one)["team_id"]
    keys = [_key(master, team_id=team_id), _key(master, team_id=team_id)]
    slow = {**body, "extra_body": {"sim": {"tokens": 20, "latency_ms": 300}}}

    async def burst() -> list[str]:
        clients = [openai.AsyncOpenAI(base_url=f"{db_gateway.url}/v1", api_key=key, max_retries=0) for key in keys]

        async def one_call(client: openai.AsyncOpenAI) -> str:
            try:
                await client.chat.completions.create(**slow)
                return "ok"
            except openai.RateLimitError as exc:
                return exc.body["code"]

        return await asyncio.gather(*(one_call(clients[i % 2]) for i in range(50)))

    outcomes = asyncio.run(burst())
    assert set(outcomes) <= {"ok", "budget_exceeded"}
    assert 4 <= outcomes.count("ok") <= 6  # without reservations all 50 would pass
    spend = call(master, "GET", "/team/info", params={"team_id": team_id})["team_info"]["spend"]
    assert spend == pytest.approx(outcomes.count("ok") * one, rel=1e-6)


def test_a_blocked_team_blocks_its_keys(db_gateway: Process, master: httpx.Client):
    team_id = _team(master)["team_id"]
    client = _client(db_gateway, _key(master, team_id=team_id))
    call(master, "POST", "/team/update", json={"team_id": team_id, "blocked": True})
    with pytest.raises(openai.AuthenticationError, match="blocked"):
        client.chat.completions.create(model="mini", messages=HELLO)
    call(master, "POST", "/team/update", json={"team_id": team_id, "blocked": False})
    assert client.chat.completions.create(model="mini", messages=HELLO).choices


def test_a_team_restricts_its_keys_models(db_gateway: Process, master: httpx.Client, sim: SimControl):
    team_id = _team(master, models=["mini"])["team_id"]
    client = _client(db_gateway, _key(master, team_id=team_id))  # the key itself allows every model
    assert client.chat.completions.create(model="mini", messages=HELLO).choices
    before = sim.stats()["requests"]
    with pytest.raises(openai.PermissionDeniedError, match=f"team {team_id!r} may not use model 'gpt-4o'"):
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert sim.stats()["requests"] == before
    assert [m.id for m in client.models.list()] == ["mini"]


def test_team_and_key_rate_limits_both_apply(db_gateway: Process, master: httpx.Client):
    if time.time() % 60 > 50:  # all in one minute window
        time.sleep(60 - time.time() % 60 + 0.1)
    team_id = _team(master, rpm_limit=3)["team_id"]
    first, second = (_client(db_gateway, _key(master, team_id=team_id, rpm_limit=limit)) for limit in (1, None))
    assert first.chat.completions.create(model="mini", messages=HELLO).choices
    with pytest.raises(openai.RateLimitError) as info:  # the key's own limit is the stricter
        first.chat.completions.create(model="mini", messages=HELLO)
    assert info.value.body["code"] == "key_rpm_exceeded"
    for _ in range(2):
        assert second.chat.completions.create(model="mini", messages=HELLO).choices
    with pytest.raises(openai.RateLimitError) as info:  # three through the team's keys
        second.chat.completions.create(model="mini", messages=HELLO)
    assert info.value.body["code"] == "team_rpm_exceeded"


def test_deleting_a_team_deletes_its_keys(db_gateway: Process, master: httpx.Client):
    team_id = _team(master)["team_id"]
    key = _key(master, team_id=team_id)
    token = call(master, "GET", "/key/info", params={"key": key})["key"]
    deleted = call(master, "POST", "/team/delete", json={"team_ids": [team_id]})
    assert deleted == {"deleted_teams": [team_id], "deleted_keys": [token]}
    with pytest.raises(openai.AuthenticationError):
        _client(db_gateway, key).chat.completions.create(model="mini", messages=HELLO)
    assert master.get("/team/info", params={"team_id": team_id}).status_code == 404
    unknown = master.post("/key/generate", json={"team_id": team_id})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "team_id"


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/team/new", {"max_budget": "lots"}, "max_budget"),
    ("/team/new", {"models": "gpt-4o"}, "models"),
    ("/team/new", {"budget_duration": "soon"}, "budget_duration"),
    ("/team/new", {"team_id": 7}, "team_id"),
    ("/team/update", {"rpm_limit": 5}, "team_id"),
    ("/team/update", {"team_id": "no-such-team", "rpm_limit": 5}, "team_id"),
    ("/team/delete", {"team_ids": "team-a"}, "team_ids"),
    ("/team/delete", {"team_ids": ["no-such-team"]}, "team_ids"),
])
def test_bad_team_requests_name_the_field(master: httpx.Client, path: str, body: dict, param: str):
    response = master.post(path, json=body)
    assert response.status_code in (400, 404), response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]


def test_team_endpoints_need_the_master_key(db_gateway: Process, master: httpx.Client):
    team_id = _team(master)["team_id"]
    headers = {"Authorization": f"Bearer {_key(master, team_id=team_id)}"}
    for method, path, kwargs in (("POST", "/team/new", {"json": {}}), ("GET", "/team/list", {}),
                                 ("GET", "/team/info", {"params": {"team_id": team_id}}),
                                 ("POST", "/team/update", {"json": {"team_id": team_id, "max_budget": 1e9}})):
        response = httpx.request(method, f"{db_gateway.url}{path}", headers=headers, **kwargs)
        assert response.status_code == 403 and response.json()["error"]["code"] == "admin_only", path
    assert httpx.get(f"{db_gateway.url}/team/list").status_code == 401


def test_a_team_budget_holds_across_workers_through_the_database(simulator: Process, tmp_path: Path):
    """Without Redis each worker counts on its own, and the team's spend reaches the others through the database:
    the ledger adds a request's cost to its key's team, and every worker reloads teams each second."""
    gw = start_gateway(tmp_path, gateway_config(simulator.url), "--workers", "2")
    try:
        admin = httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30)
        team_id = _team(admin, max_budget=1e-9)["team_id"]
        spender, other = _key(admin, team_id=team_id), _key(admin, team_id=team_id)
        _cost(gw, spender)  # over the team's budget, on one of the workers
        # Within the ledger's next batch (0.5 s) and every worker's next reload (1 s), both workers refuse.
        by_worker = poll(lambda: statuses_by_worker(gw, [other], count=8, model="gpt-4o"),
                         lambda statuses: len(statuses) == 2 and all(set(s) == {429} for s in statuses.values()),
                         every=0.5)
        assert len(by_worker) == 2 and all(set(s) == {429} for s in by_worker.values()), by_worker
    finally:
        gw.stop()
