"""The simulator's Anthropic Message Batches API, driven by the real ``anthropic`` SDK."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import UPSTREAM_KEY, Process, SimControl, poll

MODEL = "sim-claude-batch"
HEADERS = {"x-api-key": UPSTREAM_KEY, "anthropic-version": "2023-06-01"}


@pytest.fixture
def client(simulator: Process) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=simulator.url, api_key=UPSTREAM_KEY, max_retries=0)


def _params(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": text}], **extra}


def _wait(client: anthropic.Anthropic, batch_id: str) -> Any:
    return poll(lambda: client.messages.batches.retrieve(batch_id), lambda batch: batch.processing_status == "ended")


def _create_raw(simulator: Process, body: Any) -> httpx.Response:
    return httpx.post(f"{simulator.url}/v1/messages/batches", json=body, headers=HEADERS, timeout=10)


def test_batch_lifecycle_and_results_match_direct_answers(client, sim: SimControl, simulator: Process):
    sim.http.post("/_sim/config", json={"model": MODEL, "batch_ms": 300}).raise_for_status()
    requests = [
        {"custom_id": "plain", "params": _params("hello there")},
        {"custom_id": "with-system_2", "params": _params("tell me more", system="be brief", max_tokens=5)},
        {"custom_id": "bad", "params": _params("x", messages=[])},
        {"custom_id": "faulty", "params": _params("y", sim={"fault": "500"})},
    ]
    batch = client.messages.batches.create(requests=requests)
    assert batch.id.startswith("msgbatch_") and batch.type == "message_batch"
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.model_dump() == {"processing": 4, "succeeded": 0, "errored": 0, "canceled": 0,
                                                 "expired": 0}
    assert batch.ended_at is None and batch.results_url is None and batch.cancel_initiated_at is None
    assert batch.archived_at is None
    assert batch.expires_at - batch.created_at == timedelta(hours=24)
    assert sim.last()["path"] == "/v1/messages/batches" and sim.last()["model"] == MODEL

    assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"
    early = httpx.get(f"{simulator.url}/v1/messages/batches/{batch.id}/results", headers=HEADERS, timeout=10)
    assert early.status_code == 400
    assert early.json()["error"] == {"type": "invalid_request_error", "message": "Batch is still processing"}

    ended = _wait(client, batch.id)
    assert ended.processing_status == "ended" and ended.ended_at is not None
    assert ended.request_counts.model_dump() == {"processing": 0, "succeeded": 2, "errored": 2, "canceled": 0,
                                                 "expired": 0}
    assert ended.results_url == f"{simulator.url}/v1/messages/batches/{batch.id}/results"

    results = list(client.messages.batches.results(batch.id))
    assert [r.custom_id for r in results] == ["plain", "with-system_2", "bad", "faulty"]
    for line, request in zip(results[:2], requests[:2], strict=True):
        assert line.result.type == "succeeded"
        direct = client.messages.create(**request["params"])
        got = line.result.message
        assert [b.model_dump() for b in got.content] == [b.model_dump() for b in direct.content]
        assert (got.model, got.stop_reason, got.usage) == (direct.model, direct.stop_reason, direct.usage)
    assert results[1].result.message.stop_reason == "max_tokens"

    bad = results[2].result
    assert bad.type == "errored" and bad.error.type == "error"
    assert bad.error.error.type == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError) as direct_error:
        client.messages.create(**requests[2]["params"])
    assert bad.error.error.message == direct_error.value.body["error"]["message"]
    assert results[3].result.type == "errored" and results[3].result.error.error.type == "api_error"

    again = client.messages.batches.retrieve(batch.id)  # ended batches stay put
    assert again.ended_at == ended.ended_at and again.request_counts == ended.request_counts


def test_cancel_ends_with_canceled_results(client):
    requests = [{"custom_id": f"r{i}", "params": _params(f"q{i}", sim={"batch_ms": 60_000})} for i in range(3)]
    batch = client.messages.batches.create(requests=requests)
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    assert canceling.results_url is None
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.cancel_initiated_at == canceling.cancel_initiated_at
    assert ended.request_counts.canceled == 3 and ended.request_counts.processing == 0
    results = list(client.messages.batches.results(batch.id))
    assert [(r.custom_id, r.result.type) for r in results] == [("r0", "canceled"), ("r1", "canceled"),
                                                               ("r2", "canceled")]
    assert client.messages.batches.cancel(batch.id).processing_status == "ended"  # nothing left to cancel


def test_batch_ms_knob_in_params_sets_the_due_time(client):
    fast = client.messages.batches.create(requests=[{"custom_id": "a", "params": _params("a", sim={"batch_ms": 0})}])
    assert client.messages.batches.retrieve(fast.id).processing_status == "ended"
    slow = client.messages.batches.create(requests=[
        {"custom_id": "a", "params": _params("a", sim={"batch_ms": 0})},
        {"custom_id": "b", "params": _params("b", sim={"batch_ms": 60_000})},  # the slowest request wins
    ])
    assert client.messages.batches.retrieve(slow.id).processing_status == "in_progress"
    client.messages.batches.cancel(slow.id)


@pytest.mark.parametrize(("body", "needle"), [
    ({}, "requests: Field required"),
    ({"requests": []}, "at least 1 item"),
    ({"requests": [{"custom_id": "a", "params": _params("x")}, {"custom_id": "a", "params": _params("y")}]},
     "requests.1.custom_id: Duplicate"),
    ({"requests": [{"custom_id": "a", "params": _params("x", stream=True)}]}, "requests.0.params.stream"),
    ({"requests": [{"custom_id": "no spaces", "params": _params("x")}]}, "requests.0.custom_id: String should"),
    ({"requests": [{"custom_id": "x" * 65, "params": _params("x")}]}, "requests.0.custom_id: String should"),
    ({"requests": [{"custom_id": "a", "params": {"model": MODEL, "messages": []}}]},
     "requests.0.params.max_tokens: Field required"),
    ({"requests": [{"custom_id": "a"}]}, "requests.0.params: Field required"),
])
def test_create_validation(simulator: Process, body: dict[str, Any], needle: str):
    response = _create_raw(simulator, body)
    assert response.status_code == 400
    payload = response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert needle in payload["error"]["message"]


def test_create_validation_through_the_sdk(client):
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.batches.create(requests=[{"custom_id": "a", "params": _params("x")},
                                                 {"custom_id": "a", "params": _params("y")}])
    assert exc.value.body["error"]["type"] == "invalid_request_error"


def test_unknown_batch_and_auth(client, simulator: Process):
    for call in (client.messages.batches.retrieve, client.messages.batches.cancel):
        with pytest.raises(anthropic.NotFoundError) as exc:
            call("msgbatch_nope")
        body = exc.value.body
        assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
        assert "msgbatch_nope" in body["error"]["message"]
    missing = httpx.get(f"{simulator.url}/v1/messages/batches/msgbatch_nope/results", headers=HEADERS, timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": _params("x", sim={"batch_ms": 0})}])
    wrong_action = httpx.get(f"{simulator.url}/v1/messages/batches/{batch.id}/cancel", headers=HEADERS, timeout=10)
    assert wrong_action.status_code == 404

    stranger = anthropic.Anthropic(base_url=simulator.url, api_key="nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        stranger.messages.batches.retrieve(batch.id)
    with pytest.raises(anthropic.AuthenticationError):
        stranger.messages.batches.create(requests=[{"custom_id": "a", "params": _params("x")}])
