"""Tenant isolation: a virtual key never sees another key's (or another team's) cache entries, exact or semantic
(whatever cache namespace it asks for), files, batches, message batches, spend or key details, and cannot rate
another key's answers."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import MASTER_KEY, Process, SimControl, gateway_config, poll, start_gateway


@pytest.fixture(scope="module")
def gw(simulator: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    config = gateway_config(simulator.url)
    # The simulator's embeddings are bags of words: a rephrasing with the same words is a semantic hit.
    config["litellm_settings"] = {"cache": True, "cache_params": {"type": "semantic", "embedding_model": "embed",
                                                                  "similarity_threshold": 0.85}}
    process = start_gateway(tmp_path_factory.mktemp("isolation"), config)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def keys(gw: Process) -> dict[str, str]:
    """alice and bob in team red, carol alone, dave in team blue."""
    admin = httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30)
    teams = {"alice": "red", "bob": "red", "carol": None, "dave": "blue"}
    for team in ("red", "blue"):
        admin.post("/team/new", json={"team_id": team}).raise_for_status()
    return {name: admin.post("/key/generate", json={"team_id": team} if team else {}).json()["key"]
            for name, team in teams.items()}


def _openai(gw: Process, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)


def _ask(gw: Process, key: str, text: str, **extra: Any) -> httpx.Response:
    return _openai(gw, key).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": text}], **extra).http_response


def test_cache_entries_never_cross_keys_or_teams(gw: Process, keys: dict[str, str], sim: SimControl):
    question, near = "How do I sort a dictionary by value in Python?", "how do I sort a python dictionary by value"
    assert _ask(gw, keys["alice"], question).headers["x-mmproxy-cache"] == "miss"
    assert _ask(gw, keys["alice"], question).headers["x-mmproxy-cache"] == "hit"
    assert _ask(gw, keys["bob"], near).headers["x-mmproxy-cache"] == "semantic-hit"  # a teammate's entry
    for outsider in ("carol", "dave"):
        for text in (question, near):
            reply = _ask(gw, keys[outsider], text, extra_body={"cache": {"no-store": True}})
            assert reply.headers["x-mmproxy-cache"] == "miss", (outsider, text)
    assert _ask(gw, MASTER_KEY, question, extra_body={"cache": {"no-store": True}}).headers["x-mmproxy-cache"] \
        == "miss"  # the master key has its own entries too

    # A namespace cannot reach into another scope, whatever separators it holds.
    alice_hash = httpx.get(f"{gw.url}/key/info", params={"key": keys["alice"]},
                           headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()["key"]
    for namespace in ("", "\0team:red\0json", f"\0key:{alice_hash}\0json", "team:red", "\0\0team:red"):
        reply = _ask(gw, keys["carol"], question, extra_body={"cache": {"namespace": namespace, "no-store": True}})
        assert reply.headers["x-mmproxy-cache"] == "miss", namespace


def _line(text: str) -> bytes:
    return orjson.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}})


def test_files_and_batches_stay_with_their_team(gw: Process, keys: dict[str, str], sim: SimControl):
    alice, bob, carol = (_openai(gw, keys[name]) for name in ("alice", "bob", "carol"))
    file_id = alice.files.create(file=("in.jsonl", io.BytesIO(_line("isolated batch"))), purpose="batch").id
    batch = alice.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    done = poll(lambda: bob.batches.retrieve(batch.id), lambda b: b.status == "completed")
    assert done.status == "completed" and done.output_file_id  # the team sees it
    for attempt in (lambda: carol.files.retrieve(file_id), lambda: carol.files.content(file_id),
                    lambda: carol.batches.retrieve(batch.id), lambda: carol.batches.cancel(batch.id),
                    lambda: carol.files.content(done.output_file_id or ""),
                    lambda: carol.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                                 completion_window="24h")):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert batch.id not in [b.id for b in carol.batches.list(limit=100).data]

    claude = {name: anthropic.Anthropic(base_url=gw.url, api_key=keys[name], max_retries=0)
              for name in ("alice", "carol")}
    message_batch = claude["alice"].messages.batches.create(requests=[{"custom_id": "m", "params": {
        "model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "isolated"}]}}])
    ended = poll(lambda: claude["alice"].messages.batches.retrieve(message_batch.id),
                 lambda b: b.processing_status == "ended")
    assert ended.processing_status == "ended"
    for steal in (lambda: claude["carol"].messages.batches.retrieve(message_batch.id),
                  lambda: list(claude["carol"].messages.batches.results(message_batch.id)),
                  lambda: claude["carol"].messages.batches.cancel(message_batch.id)):
        with pytest.raises(anthropic.NotFoundError):
            steal()
    assert message_batch.id not in [b.id for b in claude["carol"].messages.batches.list(limit=100)]


def test_spend_and_key_details_are_the_master_keys_only(gw: Process, keys: dict[str, str], sim: SimControl):
    alice_request = _ask(gw, keys["alice"], "a question whose spend is alice's").headers["x-mmproxy-request-id"]
    carol = {"Authorization": f"Bearer {keys['carol']}"}
    for path, params in (("/spend/logs", {}), ("/spend/logs", {"api_key": keys["alice"]}),
                         ("/spend/logs", {"request_id": alice_request}), ("/spend/report", {"group_by": "key"}),
                         ("/key/info", {"key": keys["alice"]}), ("/key/info", {"key": keys["carol"]}),
                         ("/key/list", {"team_id": "red"})):
        refused = httpx.get(f"{gw.url}{path}", params=params, headers=carol)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_only", (path, refused.text)
        assert alice_request not in refused.text
    for path, body in (("/key/update", {"key": keys["alice"], "max_budget": 0}), ("/key/generate", {}),
                       ("/key/delete", {"keys": [keys["alice"]]})):
        assert httpx.post(f"{gw.url}{path}", json=body, headers=carol).status_code == 403

    # Feedback: carol cannot rate alice's answer (the same 404 as an id that never was), bob (her team) can.
    def rate(key: str, request_id: str) -> httpx.Response:
        return httpx.post(f"{gw.url}/v1/feedback", json={"request_id": request_id, "score": 0.0},
                          headers={"Authorization": f"Bearer {key}"})

    stolen, unknown = rate(keys["carol"], alice_request), rate(keys["carol"], "no-such-request")
    assert stolen.status_code == unknown.status_code == 404
    assert stolen.json()["error"]["code"] == unknown.json()["error"]["code"] == "request_not_found"
    assert rate(keys["bob"], alice_request).status_code == 200
    assert rate(MASTER_KEY, alice_request).status_code == 200
    row = httpx.get(f"{gw.url}/spend/logs", params={"request_id": alice_request},
                    headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()[0]
    assert row["feedback_score"] == 0.0
