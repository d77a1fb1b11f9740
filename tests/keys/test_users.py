"""Users end to end on SQLite and PostgreSQL: LiteLLM's /user endpoints, the key /user/new makes, and a user's
budget held across their keys by a real gateway in front of the simulator."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest

from tests.conftest import Process, SimControl
from tests.keys.conftest import call
from tests.keys.test_keys import HELLO, _client


def _user(master: httpx.Client, **fields: object) -> dict:
    return call(master, "POST", "/user/new", json={"user_id": f"user-{uuid.uuid4().hex[:8]}", **fields})


def test_user_shapes_key_and_spend(db_gateway: Process, master: httpx.Client):
    team_id = call(master, "POST", "/team/new", json={})["team_id"]
    created = call(master, "POST", "/user/new", json={
        "user_email": "ana@example.com", "user_alias": "ana", "max_budget": 5, "budget_duration": "7d",
        "models": ["gpt-4o"], "teams": [team_id], "key_alias": "ana-laptop", "user_role": "internal_user"})
    user_id = created["user_id"]
    assert str(uuid.UUID(user_id)) == user_id  # generated when absent
    assert {k: created[k] for k in ("user_email", "user_alias", "max_budget", "budget_duration", "models", "teams",
                                    "spend", "key_alias")} == {
        "user_email": "ana@example.com", "user_alias": "ana", "max_budget": 5.0, "budget_duration": "7d",
        "models": ["gpt-4o"], "teams": [team_id], "spend": 0.0, "key_alias": "ana-laptop"}
    assert created["key"].startswith("sk-") and created["ignored_fields"] == ["user_role"]

    reply = _client(db_gateway, created["key"]).chat.completions.with_raw_response.create(model="gpt-4o",
                                                                                          messages=HELLO)
    cost = float(reply.headers["x-mmproxy-cost-usd"])
    with pytest.raises(openai.PermissionDeniedError, match=f"user {user_id!r} may not use model 'claude'"):
        _client(db_gateway, created["key"]).chat.completions.create(model="claude", messages=HELLO)

    info = call(master, "GET", "/user/info", params={"user_id": user_id})
    assert info["user_id"] == user_id and info["user_info"]["spend"] == pytest.approx(cost, rel=1e-9)
    assert [k["token"] for k in info["keys"]] == [created["token"]]
    assert [t["team_id"] for t in info["teams"]] == [team_id]

    updated = call(master, "POST", "/user/update", json={"user_id": user_id, "max_budget": 7.5, "key_alias": "x"})
    assert updated["user_id"] == user_id and updated["data"]["max_budget"] == 7.5
    assert updated["ignored_fields"] == ["key_alias"]  # only /user/new makes a key
    listed = call(master, "GET", "/user/list", params={"page_size": 1000})
    assert listed["page"] == 1 and user_id in {u["user_id"] for u in listed["users"]}


def test_a_user_budget_holds_across_their_keys(db_gateway: Process, master: httpx.Client, sim: SimControl):
    created = _user(master, max_budget=1e-9)
    second = call(master, "POST", "/key/generate", json={"user_id": created["user_id"]})["key"]
    _client(db_gateway, created["key"]).chat.completions.create(model="gpt-4o", messages=HELLO)  # over budget
    before = sim.stats()["requests"]
    with pytest.raises(openai.RateLimitError) as info:
        _client(db_gateway, second).chat.completions.create(model="gpt-4o", messages=HELLO)
    assert info.value.body["code"] == "budget_exceeded" and f"user {created['user_id']!r}" in info.value.message
    assert sim.stats()["requests"] == before


def test_a_key_for_a_new_user_id_makes_the_user(db_gateway: Process, master: httpx.Client):
    user_id = f"user-{uuid.uuid4().hex[:8]}"
    key = call(master, "POST", "/key/generate", json={"user_id": user_id})["key"]
    reply = _client(db_gateway, key).chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    info = call(master, "GET", "/user/info", params={"user_id": user_id})
    assert info["user_info"]["spend"] == pytest.approx(float(reply.headers["x-mmproxy-cost-usd"]), rel=1e-9)


def test_deleting_a_user_deletes_their_keys(db_gateway: Process, master: httpx.Client):
    created = _user(master, auto_create_key=True)
    deleted = call(master, "POST", "/user/delete", json={"user_ids": [created["user_id"]]})
    assert deleted == {"deleted_users": [created["user_id"]], "deleted_keys": [created["token"]]}
    with pytest.raises(openai.AuthenticationError):
        _client(db_gateway, created["key"]).chat.completions.create(model="mini", messages=HELLO)
    assert master.get("/user/info", params={"user_id": created["user_id"]}).status_code == 404
    without_key = _user(master, auto_create_key=False)
    assert "key" not in without_key


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/user/new", {"max_budget": -1}, "max_budget"),
    ("/user/new", {"teams": ["no-such-team"]}, "teams"),
    ("/user/new", {"user_email": 5}, "user_email"),
    ("/user/new", {"auto_create_key": "yes"}, "auto_create_key"),
    ("/user/new", {"duration": "forever"}, "duration"),
    ("/user/update", {"max_budget": 1}, "user_id"),
    ("/user/delete", {"user_ids": []}, "user_ids"),
])
def test_bad_user_requests_name_the_field(master: httpx.Client, path: str, body: dict, param: str):
    response = master.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_user_endpoints_need_the_master_key(db_gateway: Process, master: httpx.Client):
    created = _user(master)
    headers = {"Authorization": f"Bearer {created['key']}"}
    for method, path, kwargs in (("POST", "/user/new", {"json": {}}), ("GET", "/user/list", {}),
                                 ("GET", "/user/info", {"params": {"user_id": created["user_id"]}}),
                                 ("POST", "/user/delete", {"json": {"user_ids": [created["user_id"]]}})):
        response = httpx.request(method, f"{db_gateway.url}{path}", headers=headers, **kwargs)
        assert response.status_code == 403 and response.json()["error"]["code"] == "admin_only", path
