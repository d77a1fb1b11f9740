"""The simulator's Gemini Batch API (batch mode): create, get and cancel over Google's wire format."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import UPSTREAM_KEY, Process, SimControl, poll

MODEL = "sim-gemini-batch"
HEADERS = {"x-goog-api-key": UPSTREAM_KEY}
_TYPES = "type.googleapis.com/google.ai.generativelanguage.v1main."


@pytest.fixture
def http(simulator: Process) -> httpx.Client:
    return httpx.Client(base_url=f"{simulator.url}/v1beta", headers=HEADERS, timeout=10)


def _request(text: str, **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


def _body(requests: list[dict[str, Any]], name: str = "sim batch", **extra: Any) -> dict[str, Any]:
    items = [{"request": r, "metadata": {"key": f"k{i}"}} for i, r in enumerate(requests)]
    return {"batch": {"display_name": name, "input_config": {"requests": {"requests": items}}, **extra}}


def _create(http: httpx.Client, body: Any, model: str = MODEL) -> httpx.Response:
    return http.post(f"/models/{model}:batchGenerateContent", json=body)


def _wait(http: httpx.Client, name: str) -> dict[str, Any]:
    return poll(lambda: http.get(f"/{name}").raise_for_status().json(), lambda op: bool(op.get("done")))


def test_batch_lifecycle_and_responses_match_direct_answers(http: httpx.Client, sim: SimControl):
    sim.http.post("/_sim/config", json={"model": MODEL, "batch_ms": 300}).raise_for_status()
    requests = [
        _request("hello there"),
        _request("tell me more", generation_config={"max_output_tokens": 3}, system_instruction={
            "parts": [{"text": "be brief"}]}),
        {"contents": []},  # generateContent rejects it
        _request("y", sim={"fault": "500"}),
        _request("z", model=f"models/{MODEL}"),
    ]
    created = _create(http, _body(requests, "lifecycle"))
    assert created.status_code == 200, created.text
    op = created.json()
    name = op["name"]
    assert name.startswith("batches/") and "done" not in op and "response" not in op
    meta = op["metadata"]
    assert meta["@type"] == _TYPES + "GenerateContentBatch" and meta["name"] == name
    assert meta["model"] == f"models/{MODEL}" and meta["displayName"] == "lifecycle"
    assert meta["state"] == "BATCH_STATE_PENDING"
    assert meta["batchStats"] == {"requestCount": "5", "pendingRequestCount": "5"}
    assert meta["createTime"].endswith("Z") and meta["updateTime"] == meta["createTime"]
    last = sim.last()
    assert last["path"] == f"/v1beta/models/{MODEL}:batchGenerateContent" and last["model"] == MODEL

    early = http.get(f"/{name}").json()
    assert early["metadata"]["state"] == "BATCH_STATE_PENDING" and "done" not in early

    done = _wait(http, name)
    assert done["done"] is True and done["name"] == name
    meta = done["metadata"]
    assert meta["state"] == "BATCH_STATE_SUCCEEDED" and meta["endTime"].endswith("Z")
    assert meta["batchStats"] == {"requestCount": "5", "successfulRequestCount": "3", "failedRequestCount": "2"}
    assert done["response"]["@type"] == _TYPES + "GenerateContentBatchOutput"
    inlined = done["response"]["inlinedResponses"]["inlinedResponses"]
    assert meta["output"] == {"inlinedResponses": {"inlinedResponses": inlined}}
    assert [next(iter(entry)) for entry in inlined] == ["response", "response", "error", "error", "response"]
    assert all("metadata" not in entry for entry in inlined)  # Google does not echo it: order is the mapping

    for entry, request in zip(inlined, requests, strict=True):
        if "response" not in entry:
            continue
        request = {k: v for k, v in request.items() if k != "model"}
        direct = http.post(f"/models/{MODEL}:generateContent", json=request).raise_for_status().json()
        got = entry["response"]
        assert [c["content"] for c in got["candidates"]] == [c["content"] for c in direct["candidates"]]
        assert [c["finishReason"] for c in got["candidates"]] == [c["finishReason"] for c in direct["candidates"]]
        assert got["usageMetadata"] == direct["usageMetadata"] and got["modelVersion"] == MODEL
    assert inlined[1]["response"]["candidates"][0]["finishReason"] == "MAX_TOKENS"

    direct_bad = http.post(f"/models/{MODEL}:generateContent", json=requests[2])
    assert direct_bad.status_code == 400
    assert inlined[2]["error"] == {"code": 3, "message": direct_bad.json()["error"]["message"]}
    assert inlined[3]["error"]["code"] == 13  # a google.rpc.Status: code, message (and details), no status name

    again = http.get(f"/{name}").json()  # done batches stay put
    assert again == done


def test_status_and_content_faults_per_request(http: httpx.Client, sim: SimControl):
    requests = [_request("a", sim={"fault": "429", "batch_ms": 0}), _request("b", sim={"fault": "503"}),
                _request("c", sim={"fault": "safety_prompt"}), _request("d", sim={"fault": "slow"}),
                _request("e", sim={"bogus_knob": 1}), _request("f", model="models/another-model")]
    done = _wait(http, _create(http, _body(requests)).raise_for_status().json()["name"])
    inlined = done["response"]["inlinedResponses"]["inlinedResponses"]
    assert inlined[0]["error"]["code"] == 8
    assert any(d["@type"].endswith("RetryInfo") for d in inlined[0]["error"]["details"])
    assert inlined[1]["error"]["code"] == 14
    assert inlined[2]["response"]["promptFeedback"]["blockReason"] == "SAFETY"  # as the direct call answers
    assert inlined[3]["response"]["candidates"][0]["finishReason"] == "STOP"  # transport faults do not apply
    assert inlined[4]["error"]["code"] == 3 and "bogus_knob" in inlined[4]["error"]["message"]
    assert inlined[5]["error"]["code"] == 3 and "another-model" in inlined[5]["error"]["message"]


def test_scripted_fault_rule_errors_one_request(http: httpx.Client, sim: SimControl):
    sim.fault(MODEL, "500")
    op = _create(http, _body([_request("a", sim={"batch_ms": 0}), _request("b")])).raise_for_status().json()
    inlined = _wait(http, op["name"])["response"]["inlinedResponses"]["inlinedResponses"]
    assert inlined[0]["error"]["code"] == 13 and "response" in inlined[1]


def test_camel_case_envelope_and_query_key(simulator: Process):
    body = {"batch": {"displayName": "camel", "inputConfig": {"requests": {"requests": [
        {"request": _request("hi", generationConfig={"maxOutputTokens": 2}, sim={"batch_ms": 0})}]}}}}
    base = f"{simulator.url}/v1beta"
    created = httpx.post(f"{base}/models/{MODEL}:batchGenerateContent?key={UPSTREAM_KEY}", json=body, timeout=10)
    assert created.status_code == 200, created.text
    op = httpx.get(f"{base}/{created.json()['name']}", params={"key": UPSTREAM_KEY}, timeout=10).json()
    assert op["done"] is True and op["metadata"]["displayName"] == "camel"
    [entry] = op["response"]["inlinedResponses"]["inlinedResponses"]
    assert entry["response"]["usageMetadata"]["candidatesTokenCount"] == 2


def test_batch_ms_in_a_request_sets_the_due_time(http: httpx.Client):
    fast = _create(http, _body([_request("a", sim={"batch_ms": 0})])).json()
    assert http.get(f"/{fast['name']}").json()["done"] is True
    slow = _create(http, _body([_request("a", sim={"batch_ms": 0}),
                                _request("b", sim={"batch_ms": 60_000})])).json()  # the slowest request wins
    assert "done" not in http.get(f"/{slow['name']}").json()
    http.post(f"/{slow['name']}:cancel")


def test_cancel_ends_the_batch_without_responses(http: httpx.Client):
    op = _create(http, _body([_request(f"q{i}", sim={"batch_ms": 60_000}) for i in range(3)])).json()
    cancelled = http.post(f"/{op['name']}:cancel")
    assert cancelled.status_code == 200 and cancelled.json() == {}
    ended = http.get(f"/{op['name']}").json()
    assert ended["done"] is True and "response" not in ended
    meta = ended["metadata"]
    assert meta["state"] == "BATCH_STATE_CANCELLED" and "output" not in meta and meta["endTime"].endswith("Z")
    assert meta["batchStats"]["requestCount"] == "3"

    finished = _wait(http, _create(http, _body([_request("x", sim={"batch_ms": 0})])).json()["name"])
    assert http.post(f"/{finished['name']}:cancel").json() == {}  # a done batch stays as it is
    assert http.get(f"/{finished['name']}").json() == finished


def _items(*items: Any) -> dict[str, Any]:
    return {"batch": {"display_name": "x", "input_config": {"requests": {"requests": list(items)}}}}


@pytest.mark.parametrize(("body", "needle"), [
    ({}, "batch: batch is not specified"),
    ({"batch": {"input_config": {"requests": {"requests": [{"request": _request("x")}]}}}}, "display_name"),
    ({"batch": {"display_name": "x"}}, "input_config"),
    (_items(), "requests must not be empty"),
    (_items("nope"), "requests[0]"),
    (_items({"metadata": {"key": "a"}}), "requests[0].request"),
    (_items({"request": _request("x"), "custom_id": "a"}), 'Unknown name "custom_id"'),
    ({"batch": {"display_name": "x", "input_config": {"file_name": "files/abc"}}}, "file input is not simulated"),
    ({"batch": {"display_name": "x", "colour": 1, "input_config": {}}}, 'Unknown name "colour"'),
    ({"batch": _body([_request("x")])["batch"], "extra": 1}, 'Unknown name "extra"'),
])
def test_create_validation(http: httpx.Client, body: dict[str, Any], needle: str):
    response = _create(http, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
    assert needle in error["message"]


def test_unknown_batch_and_methods(http: httpx.Client):
    for response in (http.get("/batches/nope"), http.post("/batches/nope:cancel")):
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["status"] == "NOT_FOUND" and "batches/nope" in error["message"]
    op = _create(http, _body([_request("x", sim={"batch_ms": 0})])).json()
    assert http.post(f"/{op['name']}:frobnicate").status_code == 404
    assert http.get(f"/{op['name']}:cancel").status_code == 404


def test_auth_as_generate_content(simulator: Process, http: httpx.Client):
    base = f"{simulator.url}/v1beta"
    op = _create(http, _body([_request("x", sim={"batch_ms": 0})])).json()
    calls = [
        lambda headers: httpx.post(f"{base}/models/{MODEL}:batchGenerateContent", json=_body([_request("x")]),
                                   headers=headers, timeout=10),
        lambda headers: httpx.get(f"{base}/{op['name']}", headers=headers, timeout=10),
        lambda headers: httpx.post(f"{base}/{op['name']}:cancel", headers=headers, timeout=10),
    ]
    for call in calls:
        missing = call({})
        assert missing.status_code == 403 and missing.json()["error"]["status"] == "PERMISSION_DENIED"
        wrong = call({"x-goog-api-key": "nope"})
        assert wrong.status_code == 400
        assert wrong.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
