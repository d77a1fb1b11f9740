"""OpenAI's Batch API through the gateway: real gateway process, real simulator, the real openai SDK."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from mmproxy.registry import defaults_for
from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, SimControl, poll, start_gateway

UPSTREAM_MODEL = "gpt-4o-mini"  # a registry model: prices and the 0.5 batch discount come from models.json
CLAUDE_MODEL = "claude-haiku-4-5"  # likewise, run as an Anthropic Message Batch
GEMINI_MODEL = "gemini-2.5-flash"  # and as a Gemini batch


@pytest.fixture(scope="module")
def gw(simulator: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    base = f"{simulator.url}/v1"
    config: dict[str, Any] = {
        "model_list": [
            {"model_name": "batchy", "model_info": {"id": "batchy-1"},
             "litellm_params": {"model": f"openai/{UPSTREAM_MODEL}", "api_base": base, "api_key": UPSTREAM_KEY}},
            {"model_name": "claude", "model_info": {"id": "claude-1"},
             "litellm_params": {"model": f"anthropic/{CLAUDE_MODEL}", "api_base": simulator.url,
                                "api_key": UPSTREAM_KEY}},
            {"model_name": "gem", "model_info": {"id": "gem-1"},
             "litellm_params": {"model": f"gemini/{GEMINI_MODEL}", "api_base": f"{simulator.url}/v1beta",
                                "api_key": UPSTREAM_KEY}},
            {"model_name": "llama", "model_info": {"id": "llama-1"},
             "litellm_params": {"model": "ollama_chat/llama3", "api_base": simulator.url}},
            {"model_name": "azb", "model_info": {"id": "azb-1"},
             "litellm_params": {"model": f"azure/{UPSTREAM_MODEL}", "api_base": simulator.url,
                                "api_key": UPSTREAM_KEY, "api_version": "2024-10-21"}},
        ],
        "general_settings": {"master_key": MASTER_KEY},
    }
    process = start_gateway(tmp_path_factory.mktemp("batches"), config)
    yield process
    process.stop()


def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


@pytest.fixture
def client(gw: Process) -> openai.OpenAI:
    return _client(gw.url, MASTER_KEY)


@pytest.fixture
def direct(simulator: Process) -> openai.OpenAI:
    return _client(simulator.url, UPSTREAM_KEY)


def _line(custom_id: str, model: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}], **extra}}


def _upload(client: openai.OpenAI, lines: list[dict[str, Any]], tail: bytes = b"") -> str:
    data = b"\n".join(orjson.dumps(line) for line in lines) + b"\n" + tail
    return client.files.create(file=("input.jsonl", io.BytesIO(data)), purpose="batch").id


def _create(client: openai.OpenAI, file_id: str) -> Any:
    return client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h",
                                 metadata={"job": "nightly"})


def _wait(client: openai.OpenAI, batch_id: str) -> Any:
    return poll(lambda: client.batches.retrieve(batch_id),
                lambda batch: batch.status in ("completed", "failed", "cancelled", "expired"))


def _batch_rows(gw: Process, batch_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{gw.url}/spend/logs", params={"limit": 1000},
                         headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10)
    response.raise_for_status()
    return [row for row in response.json() if row["request_id"].startswith(f"{batch_id}:")]


def test_batch_answers_come_back_under_the_clients_model_priced_at_half(client, direct, gw, sim: SimControl):
    lines = [_line(f"q{i}", "batchy", f"batch question number {i}", max_tokens=5 + i) for i in range(3)]
    created = _create(client, _upload(client, lines))
    assert created.id.startswith("batch_") and created.status == "in_progress"
    assert created.metadata == {"job": "nightly"}

    # The upstream got the deployment's model and key, never the client's.
    uploaded = next(r for r in sim.requests(50) if r["path"] == "/v1/files")
    assert f'"model":"{UPSTREAM_MODEL}"' in uploaded["body"] and '"batchy"' not in uploaded["body"]
    assert uploaded["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"

    batch = _wait(client, created.id)
    assert batch.status == "completed", batch
    assert batch.id == created.id and batch.request_counts.completed == 3 and batch.request_counts.failed == 0
    out = [orjson.loads(raw) for raw in client.files.content(batch.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == ["q0", "q1", "q2"]
    by_id = {o["custom_id"]: o for o in out}
    for line in lines:
        answer = by_id[line["custom_id"]]["response"]
        assert answer["status_code"] == 200
        assert answer["body"]["model"] == "batchy"
        expected = direct.chat.completions.create(**{**line["body"], "model": UPSTREAM_MODEL})
        assert answer["body"]["choices"][0]["message"]["content"] == expected.choices[0].message.content

    prices = defaults_for(UPSTREAM_MODEL)
    assert prices is not None and prices.batch_discount == 0.5
    client.batches.retrieve(created.id)  # polling again must not charge again
    rows = {row["request_id"]: row for row in _batch_rows(gw, created.id)}
    assert len(rows) == 3
    for custom_id, line in by_id.items():
        row = rows[f"{created.id}:{custom_id}"]
        usage = line["response"]["body"]["usage"]
        standard = usage["prompt_tokens"] * prices.input_cost_per_token \
            + usage["completion_tokens"] * prices.output_cost_per_token
        assert row["endpoint"] == "batch" and row["deployment"] == "batchy-1"
        assert row["requested_model"] == "batchy" and row["status"] == 200
        assert (row["prompt_tokens"], row["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
        assert row["cost_usd"] == pytest.approx(standard / 2, rel=1e-9)
        assert row["cost_usd"] > 0
    # The lines are in the Prometheus metrics too: their tokens and cost, no latency of their own.
    metrics = httpx.get(f"{gw.url}/metrics").text.splitlines()
    cost_lines = [m for m in metrics if m.startswith("mmproxy_cost_usd_total{") and 'model="batchy"' in m]
    assert cost_lines and float(cost_lines[0].rsplit(" ", 1)[1]) == pytest.approx(
        sum(r["cost_usd"] for r in rows.values()), rel=1e-6)
    assert not any(m.startswith("mmproxy_request_latency_seconds_count{") and 'model="batchy"' in m
                   and not m.endswith(" 0") for m in metrics)

    listed = client.batches.list(limit=100).data
    assert created.id in [b.id for b in listed]


def test_a_line_for_another_model_is_rejected_before_anything_goes_upstream(client, sim: SimControl):
    file_id = _upload(client, [_line("a", "batchy", "one"), _line("b", "claude", "two")])
    with pytest.raises(openai.BadRequestError) as caught:
        _create(client, file_id)
    assert "line 2" in caught.value.message and "body.model" in (caught.value.body or {}).get("param", "")
    assert not [r for r in sim.requests(50) if r["path"].startswith(("/v1/files", "/v1/batches"))]


@pytest.mark.parametrize(("tail", "lines", "field"), [
    (b"{not json", [_line("a", "batchy", "x")], "line"),
    (b"", [{**_line("a", "batchy", "x"), "url": "/v1/embeddings"}], "url"),
    (b"", [_line("a", "batchy", "x"), _line("a", "batchy", "y")], "custom_id"),
])
def test_bad_input_lines_are_400_naming_the_field(client, tail, lines, field):
    with pytest.raises(openai.BadRequestError) as caught:
        _create(client, _upload(client, lines, tail))
    assert field in caught.value.body["param"]


def test_request_fields_are_checked(client):
    file_id = _upload(client, [_line("a", "batchy", "x")])
    for kwargs, param in (({"endpoint": "/v1/embeddings"}, "endpoint"), ({"input_file_id": "file-nope"}, "")):
        args = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **kwargs}
        with pytest.raises((openai.BadRequestError, openai.NotFoundError)) as caught:
            client.batches.create(**args)
        assert caught.value.body["param"] == (param or "input_file_id")
    with pytest.raises(openai.BadRequestError) as caught:
        _create(client, _upload(client, [_line("a", "llama", "x")]))  # Ollama has no batch API
    assert caught.value.body["code"] == "batch_unsupported"


def test_unknown_ids_are_404(client):
    for ident in ("batch_" + "0" * 24, "../../etc/passwd", "nonsense"):
        with pytest.raises(openai.NotFoundError):
            client.batches.retrieve(ident)
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-" + "0" * 24)


def test_a_batch_the_upstream_fails_is_failed(client, sim: SimControl):
    sim.fault(UPSTREAM_MODEL, "500")
    batch = _wait(client, _create(client, _upload(client, [_line("a", "batchy", "x")])).id)
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data and batch.output_file_id is None


def test_cancel(client, sim: SimControl):
    sim.http.post("/_sim/config", json={"model": UPSTREAM_MODEL, "batch_ms": 60_000}).raise_for_status()
    created = _create(client, _upload(client, [_line("a", "batchy", "x")]))
    assert client.batches.cancel(created.id).status == "cancelled"
    assert client.batches.retrieve(created.id).status == "cancelled"


def _new_key(gw: Process, **fields: object) -> str:
    response = httpx.post(f"{gw.url}/key/generate", json={"models": ["batchy"], **fields},
                          headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10)
    response.raise_for_status()
    return str(response.json()["key"])


def test_a_virtual_key_sees_only_its_own_files_and_batches(gw: Process, client, sim: SimControl):
    def new_key() -> str:
        return _new_key(gw)

    alice, bob = _client(gw.url, new_key()), _client(gw.url, new_key())
    file_id = _upload(alice, [_line("a", "batchy", "x")])
    batch = _create(alice, file_id)
    with pytest.raises(openai.NotFoundError):
        bob.files.retrieve(file_id)
    with pytest.raises(openai.NotFoundError):
        _create(bob, file_id)
    with pytest.raises(openai.NotFoundError):
        bob.batches.retrieve(batch.id)
    assert batch.id not in [b.id for b in bob.batches.list().data]
    assert _wait(alice, batch.id).status == "completed"
    assert client.batches.retrieve(batch.id).status == "completed"  # the master key sees every batch
    with pytest.raises(openai.PermissionDeniedError):  # the key may use batchy only
        _create(alice, _upload(alice, [_line("a", "claude", "x")]))


def test_keys_of_one_team_share_its_files_and_batches(gw: Process, sim: SimControl):
    """Files and batches belong to the caller's team when it has one, as cache entries do."""
    for team_id in ("research", "sales"):
        httpx.post(f"{gw.url}/team/new", json={"team_id": team_id}, headers={"Authorization": f"Bearer {MASTER_KEY}"},
                   timeout=10).raise_for_status()
    carol, dave = (_client(gw.url, _new_key(gw, team_id="research")) for _ in range(2))
    eve = _client(gw.url, _new_key(gw, team_id="sales"))
    file_id = _upload(carol, [_line("a", "batchy", "x")])
    batch = _create(dave, file_id)  # a teammate's upload
    assert _wait(carol, batch.id).status == "completed"
    assert batch.id in [b.id for b in carol.batches.list().data]
    with pytest.raises(openai.NotFoundError):
        eve.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        eve.files.retrieve(file_id)


def test_simulator_fails_batches_as_openai_does(direct):
    def run(lines: list[dict[str, Any]], tail: bytes = b"") -> Any:
        return _create(direct, _upload(direct, lines, tail))

    assert run([_line("a", "m1", "x"), _line("b", "m2", "y")]).status == "failed"
    assert run([_line("a", "m1", "x")], b"{oops").errors.data[0].line == 2
    wrong = run([{**_line("a", "m1", "x"), "url": "/v1/embeddings"}])
    assert wrong.status == "failed" and wrong.errors.data[0].param == "url"


def test_a_batch_on_an_azure_deployment_runs_on_azures_batch_api(client, direct, gw, sim: SimControl):
    lines = [_line(f"z{i}", "azb", f"azure batch question {i}", max_tokens=4 + i) for i in range(2)]
    created = _create(client, _upload(client, lines))
    assert created.status == "in_progress" and created.endpoint == "/v1/chat/completions"

    # Azure's Files API under the resource's /openai root, versioned, keyed with api-key; the lines' url is
    # Azure's batch endpoint and their model the deployment name.
    uploaded = next(r for r in sim.requests(50) if r["path"] == "/openai/files")
    assert uploaded["query"] == "api-version=2024-10-21"
    assert uploaded["headers"]["api-key"] == UPSTREAM_KEY and "authorization" not in uploaded["headers"]
    assert '"url":"/chat/completions"' in uploaded["body"] and f'"model":"{UPSTREAM_MODEL}"' in uploaded["body"]
    assert '"azb"' not in uploaded["body"]
    started = next(r for r in sim.requests(50) if r["path"] == "/openai/batches")
    assert started["query"] == "api-version=2024-10-21" and started["body"]["endpoint"] == "/chat/completions"

    batch = _wait(client, created.id)
    assert batch.status == "completed" and batch.endpoint == "/v1/chat/completions", batch
    assert batch.request_counts.completed == 2
    out = {o["custom_id"]: o for o in map(orjson.loads, client.files.content(batch.output_file_id).text.splitlines())}
    for line in lines:
        answer = out[line["custom_id"]]["response"]
        assert answer["status_code"] == 200 and answer["body"]["model"] == "azb"
        expected = direct.chat.completions.create(**{**line["body"], "model": UPSTREAM_MODEL})
        assert answer["body"]["choices"][0]["message"]["content"] == expected.choices[0].message.content
    rows = _batch_rows(gw, created.id)
    assert len(rows) == 2 and all(row["deployment"] == "azb-1" and row["cost_usd"] > 0 for row in rows)

    sim.http.post("/_sim/config", json={"model": UPSTREAM_MODEL, "batch_ms": 60_000}).raise_for_status()
    pending = _create(client, _upload(client, lines))
    assert client.batches.cancel(pending.id).status == "cancelled"
    assert sim.last()["path"].startswith("/openai/batches/") and sim.last()["path"].endswith("/cancel")


def _assert_billed_at_half(gw: Process, batch_id: str, out: dict[str, Any], upstream_model: str,
                           deployment: str) -> None:
    """One ledger row per line (the failed "broken" one too); each answered line at half the registry price."""
    prices = defaults_for(upstream_model)
    assert prices is not None and prices.batch_discount == 0.5
    rows = {row["request_id"]: row for row in _batch_rows(gw, batch_id)}
    assert len(rows) == len(out) + 1 and rows[f"{batch_id}:broken"]["status"] == 500
    for custom_id, line in out.items():
        row, usage = rows[f"{batch_id}:{custom_id}"], line["response"]["body"]["usage"]
        standard = usage["prompt_tokens"] * prices.input_cost_per_token \
            + usage["completion_tokens"] * prices.output_cost_per_token
        assert row["deployment"] == deployment and row["cost_usd"] == pytest.approx(standard / 2, rel=1e-9)


def test_a_batch_on_an_anthropic_deployment_runs_as_a_message_batch(client, gw, sim: SimControl):
    lines = [_line(f"c{i}", "claude", f"anthropic batch question {i}", max_tokens=6 + i) for i in range(2)]
    lines.append(_line("broken", "claude", "please fail", sim={"fault": "500"}))  # an errored line upstream
    created = _create(client, _upload(client, lines))
    assert created.status == "in_progress" and created.request_counts.total == 3

    # Anthropic got a Message Batch in its own format, under the deployment's model and key.
    sent = next(r for r in sim.requests(50) if r["path"] == "/v1/messages/batches")
    assert sent["headers"]["x-api-key"] == UPSTREAM_KEY
    requests = sent["body"]["requests"]
    assert [r["custom_id"] for r in requests] == ["c0", "c1", "broken"]
    assert requests[0]["params"]["model"] == CLAUDE_MODEL and requests[0]["params"]["max_tokens"] == 6
    assert requests[0]["params"]["messages"] == [{"role": "user", "content": "anthropic batch question 0"}]

    batch = _wait(client, created.id)
    assert batch.status == "completed", batch
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 1)
    out = {o["custom_id"]: o for o in map(orjson.loads, client.files.content(batch.output_file_id).text.splitlines())}
    assert sorted(out) == ["c0", "c1"]
    for line in lines[:2]:
        answer = out[line["custom_id"]]["response"]
        assert answer["status_code"] == 200
        body = answer["body"]
        assert body["object"] == "chat.completion" and body["model"] == "claude"
        # The same answer the gateway gives for the request outside a batch.
        direct = client.chat.completions.create(**line["body"])
        assert body["choices"][0]["message"]["content"] == direct.choices[0].message.content
        assert body["usage"]["completion_tokens"] == direct.usage.completion_tokens
    errors = [orjson.loads(raw) for raw in client.files.content(batch.error_file_id).text.splitlines()]
    assert [e["custom_id"] for e in errors] == ["broken"]
    assert errors[0]["response"]["status_code"] == 500
    assert errors[0]["response"]["body"]["error"]["type"] == "api_error"

    _assert_billed_at_half(gw, created.id, out, CLAUDE_MODEL, "claude-1")


def test_a_cancelled_anthropic_batch_reports_its_lines_as_cancelled(client, gw):
    lines = [_line(f"k{i}", "claude", f"slow question {i}", sim={"batch_ms": 60_000}) for i in range(2)]
    created = _create(client, _upload(client, lines))
    assert client.batches.cancel(created.id).status in ("cancelling", "cancelled")
    batch = _wait(client, created.id)
    assert batch.status == "cancelled" and batch.output_file_id is None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (0, 2)
    errors = [orjson.loads(raw) for raw in client.files.content(batch.error_file_id).text.splitlines()]
    assert sorted(e["custom_id"] for e in errors) == ["k0", "k1"]
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"} and all(e["response"] is None for e in errors)


def test_anthropic_custom_ids_are_checked_before_anything_goes_upstream(client, sim: SimControl):
    def message_batches() -> int:
        return sum(r["path"] == "/v1/messages/batches" for r in sim.requests(200))

    before = message_batches()
    with pytest.raises(openai.BadRequestError) as caught:
        _create(client, _upload(client, [_line("fine", "claude", "a"), _line("not fine!", "claude", "b")]))
    assert "line 2" in caught.value.message and "custom_id" in caught.value.body["param"]
    assert message_batches() == before


def test_a_batch_on_a_gemini_deployment_runs_as_a_gemini_batch(client, gw, sim: SimControl):
    lines = [_line(f"g{i}", "gem", f"gemini batch question {i}", max_tokens=5 + i) for i in range(2)]
    lines.append(_line("broken", "gem", "please fail", sim={"fault": "500"}))
    created = _create(client, _upload(client, lines))
    assert created.status == "in_progress"

    # Gemini got inline generateContent requests under the deployment's model and key.
    sent = next(r for r in reversed(sim.requests(50)) if r["path"].endswith(":batchGenerateContent"))
    assert sent["path"] == f"/v1beta/models/{GEMINI_MODEL}:batchGenerateContent"
    assert sent["headers"]["x-goog-api-key"] == UPSTREAM_KEY
    requests = sent["body"]["batch"]["input_config"]["requests"]["requests"]
    assert [r["metadata"]["key"] for r in requests] == ["g0", "g1", "broken"]
    assert requests[0]["request"]["contents"] == [{"role": "user", "parts": [{"text": "gemini batch question 0"}]}]
    assert requests[0]["request"]["generationConfig"]["maxOutputTokens"] == 5

    batch = _wait(client, created.id)
    assert batch.status == "completed", batch
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (3, 2, 1)
    out = {o["custom_id"]: o for o in map(orjson.loads, client.files.content(batch.output_file_id).text.splitlines())}
    assert sorted(out) == ["g0", "g1"]
    for line in lines[:2]:
        body = out[line["custom_id"]]["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == "gem"
        direct = client.chat.completions.create(**line["body"])  # the same request outside a batch
        assert body["choices"][0]["message"]["content"] == direct.choices[0].message.content
        assert body["usage"]["completion_tokens"] == direct.usage.completion_tokens
    errors = [orjson.loads(raw) for raw in client.files.content(batch.error_file_id).text.splitlines()]
    assert [e["custom_id"] for e in errors] == ["broken"] and errors[0]["response"]["status_code"] == 500

    _assert_billed_at_half(gw, created.id, out, GEMINI_MODEL, "gem-1")


def test_a_cancelled_gemini_batch_reports_its_lines_as_cancelled(client):
    lines = [_line(f"q{i}", "gem", f"slow gemini question {i}", sim={"batch_ms": 60_000}) for i in range(2)]
    created = _create(client, _upload(client, lines))
    client.batches.cancel(created.id)
    batch = _wait(client, created.id)
    assert batch.status == "cancelled" and batch.output_file_id is None
    errors = [orjson.loads(raw) for raw in client.files.content(batch.error_file_id).text.splitlines()]
    assert [e["custom_id"] for e in errors] == ["q0", "q1"]
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}


# -- Anthropic's Message Batches API in front of the gateway ------------------------------------------------
def _claude_client(gw: Process) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0)


def _params(model: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": text}], **extra}


def _ended(claude: anthropic.Anthropic, batch_id: str) -> Any:
    return poll(lambda: claude.messages.batches.retrieve(batch_id), lambda batch: batch.processing_status == "ended")


@pytest.mark.parametrize("model", ["batchy", "claude"])  # an OpenAI-wire and an Anthropic deployment
def test_message_batches_api_runs_on_any_batch_deployment(gw, sim: SimControl, model: str):
    claude = _claude_client(gw)
    requests = [{"custom_id": f"m{i}", "params": _params(model, f"message batch question {i}", system="Be brief.")}
                for i in range(2)]
    batch = claude.messages.batches.create(requests=requests)
    assert batch.type == "message_batch" and batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 2 and batch.results_url is None
    ended = _ended(claude, batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.succeeded == 2
    assert ended.results_url == f"{gw.url}/v1/messages/batches/{batch.id}/results"
    results = {r.custom_id: r.result for r in claude.messages.batches.results(batch.id)}
    assert sorted(results) == ["m0", "m1"]
    for request in requests:
        result = results[request["custom_id"]]
        assert result.type == "succeeded" and result.message.model == model
        direct = claude.messages.create(**request["params"])  # the same request outside a batch
        assert result.message.content[0].text == direct.content[0].text
        assert result.message.usage.output_tokens == direct.usage.output_tokens
    rows = _batch_rows(gw, batch.id)
    assert len(rows) == 2 and all(r["requested_model"] == model and r["cost_usd"] > 0 for r in rows)
    if model == "claude":
        sent = [r for r in sim.requests(100) if r["path"] == "/v1/messages/batches"][-1]["body"]["requests"]
        assert [r["params"]["system"] for r in sent] == ["Be brief.", "Be brief."]
    # Each API lists its own batches.
    assert batch.id in [b.id for b in claude.messages.batches.list(limit=100)]
    assert batch.id not in [b.id for b in _client(gw.url, MASTER_KEY).batches.list(limit=100).data]


def test_message_batch_cancel_and_errors(gw):
    claude = _claude_client(gw)
    slow = [{"custom_id": f"s{i}", "params": _params("claude", f"slow {i}", sim={"batch_ms": 60_000})}
            for i in range(2)]
    batch = claude.messages.batches.create(requests=slow)
    assert claude.messages.batches.cancel(batch.id).processing_status in ("canceling", "ended")
    ended = _ended(claude, batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.canceled == 2
    assert [r.result.type for r in claude.messages.batches.results(batch.id)] == ["canceled", "canceled"]

    for bad, where in (
        ([{"custom_id": "a", "params": _params("claude", "x")}, {"custom_id": "b", "params": _params("batchy", "y")}],
         "requests.1.params.model"),
        ([{"custom_id": "not ok", "params": _params("claude", "x")}], "requests.0.custom_id"),
        ([{"custom_id": "a", "params": {"model": "claude", "messages": []}}], "requests.0.params"),
    ):
        with pytest.raises(anthropic.BadRequestError) as caught:
            claude.messages.batches.create(requests=bad)
        assert caught.value.body["type"] == "error" and where in caught.value.message
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.batches.retrieve("batch_" + "0" * 24)
    assert missing.value.body["error"]["type"] == "not_found_error"
