"""Privacy routing through the real gateway: rules on detected sensitive data, the trust boundary, and redaction
round trips with the OpenAI and Anthropic SDKs (the simulator echoes the last user message)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, SimControl, poll, start_gateway

EMAIL, PHONE, CARD = "jane.doe@example.com", "+1 415 555 2671", "4111 1111 1111 1111"
ECHO = {"sim": {"echo": True}}


def _openai_wire(name: str, upstream: str, base: str, **info: Any) -> dict[str, Any]:
    return {"model_name": name, "litellm_params": {"model": f"openai/{upstream}", "api_base": f"{base}/v1",
                                                   "api_key": UPSTREAM_KEY},
            "model_info": {"id": upstream, **info}}


def _config(sim_url: str, *, trusted: bool = True, **extra: Any) -> dict[str, Any]:
    models = [_openai_wire("cloud", "pv-cloud", sim_url),
              {"model_name": "claude", "litellm_params": {"model": "anthropic/pv-claude", "api_base": sim_url,
                                                          "api_key": UPSTREAM_KEY}, "model_info": {"id": "pv-claude"}}]
    if trusted:
        models.append(_openai_wire("onprem", "pv-onprem", sim_url, trusted=True))
    return {
        "model_list": models,
        "general_settings": {"master_key": MASTER_KEY},
        "router_settings": {"cooldown_time": 0},
        "litellm_settings": {"cache": True, "cache_params": {"type": "local"}},
        "privacy": {"patterns": {"employee_id": r"EMP-\d{6}"}, "terms": {"project": ["Bluebird"]}},
        "routing_rules": [
            {"name": "cards-stay-inside", "when": {"pii_any": ["card", "iban"]}, "route": {"local_only": True}},
            {"name": "hr-stays-inside", "when": {"pii_any": ["employee_id", "project"]},
             "route": {"local_only": True}},
            {"name": "many-findings-inside", "when": {"pii_count": 4}, "route": {"local_only": True}},
            {"name": "contacts-redacted", "when": {"pii_any": ["email", "phone"]}, "route": {"redact": True}},
        ],
        **extra,
    }


@pytest.fixture(scope="module")
def gw(simulator: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = start_gateway(tmp_path_factory.mktemp("privacy"), _config(simulator.url), "--access-log", "json")
    yield process
    process.stop()


@pytest.fixture
def client(gw: Process) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)


def _ledger_row(gw: Process, request_id: str) -> dict[str, Any]:
    def fetch() -> list[dict[str, Any]]:
        return httpx.get(f"{gw.url}/spend/logs", params={"request_id": request_id},
                         headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()

    rows = poll(fetch, bool)
    assert len(rows) == 1
    return rows[0]


def _sent_upstream(sim: SimControl) -> str:
    """Everything the simulator received since the test began, as text."""
    return repr(sim.requests(50))


@pytest.mark.parametrize(("content", "rule", "pii"), [
    (f"charge card {CARD} please", "cards-stay-inside", "card:1"),
    ("IBAN GB82 WEST 1234 5698 7654 32 for the refund", "cards-stay-inside", "iban:1"),
    ("badge EMP-123456 asked about Project bluebird", "hr-stays-inside", "employee_id:1,project:1"),
    ("hosts 10.0.0.1, 10.0.0.2, 10.0.0.3 and 192.168.1.20 are down", "many-findings-inside", "ip_address:4"),
])
def test_each_condition_routes_inside_the_boundary(client: openai.OpenAI, sim: SimControl, content, rule, pii):
    raw = client.chat.completions.with_raw_response.create(
        model="cloud", messages=[{"role": "user", "content": content}])
    assert raw.headers["x-mmproxy-route-rule"] == rule
    assert raw.headers["x-mmproxy-deployment"] == "pv-onprem"
    assert raw.headers["x-mmproxy-pii"] == pii
    assert {r["body"]["model"] for r in sim.requests(50)} == {"pv-onprem"}


def test_a_card_in_a_tool_result_routes_inside(client: openai.OpenAI, gw: Process, sim: SimControl):
    raw = client.chat.completions.with_raw_response.create(model="cloud", messages=[
        {"role": "user", "content": "what card is on file?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "account", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": f'{{"card": "{CARD}"}}'},
        {"role": "user", "content": "read it back"}])
    assert raw.headers["x-mmproxy-deployment"] == "pv-onprem"
    row = _ledger_row(gw, raw.headers["x-mmproxy-request-id"])
    assert (row["rule"], row["pii"]) == ("cards-stay-inside", "card:1")
    assert CARD not in repr(row)


def test_without_sensitive_data_nothing_changes(client: openai.OpenAI, gw: Process, sim: SimControl):
    raw = client.chat.completions.with_raw_response.create(
        model="cloud", messages=[{"role": "user", "content": "summarise the meeting"}], extra_body=ECHO)
    assert raw.headers["x-mmproxy-deployment"] == "pv-cloud"
    assert "x-mmproxy-pii" not in raw.headers and "x-mmproxy-route-rule" not in raw.headers
    assert _ledger_row(gw, raw.headers["x-mmproxy-request-id"])["pii"] is None


def test_redaction_round_trip(client: openai.OpenAI, gw: Process, sim: SimControl):
    text = f"Write to {EMAIL} or call {PHONE}; again: {EMAIL}"
    raw = client.chat.completions.with_raw_response.create(
        model="cloud", messages=[{"role": "system", "content": "Repeat the user."},
                                 {"role": "user", "content": text}], extra_body=ECHO)
    assert raw.parse().choices[0].message.content == text
    sent = sim.last()["body"]["messages"][-1]["content"]
    assert sent == "Write to [EMAIL_1] or call [PHONE_1]; again: [EMAIL_1]"
    assert raw.headers["x-mmproxy-route-rule"] == "contacts-redacted"
    assert raw.headers["x-mmproxy-deployment"] == "pv-cloud"  # redaction alone keeps the requested model
    assert raw.headers["x-mmproxy-pii"] == "email:2,phone:1"
    row = _ledger_row(gw, raw.headers["x-mmproxy-request-id"])
    assert row["pii"] == "email:2,phone:1"
    assert EMAIL not in repr(row) and PHONE not in repr(row)


def test_redaction_round_trip_streamed(client: openai.OpenAI, sim: SimControl):
    text = f"mail {EMAIL}, phone {PHONE} today"
    stream = client.chat.completions.create(
        model="cloud", messages=[{"role": "user", "content": text}], stream=True,
        stream_options={"include_usage": True}, extra_body={"sim": {"echo": True, "chunks": 0}})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == text
    assert len(pieces) > 3  # relayed chunk by chunk, not buffered whole
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert EMAIL not in _sent_upstream(sim) and "[EMAIL_1]" in _sent_upstream(sim)


@pytest.mark.parametrize("stream", [False, True])
def test_redaction_through_the_messages_api(gw: Process, sim: SimControl, stream: bool):
    claude = anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0)
    text = f"my address is {EMAIL}"
    kwargs: dict[str, Any] = {"model": "claude", "max_tokens": 50, "messages": [{"role": "user", "content": text}],
                              "extra_body": ECHO}
    if stream:
        with claude.messages.stream(**kwargs) as events:
            answer = "".join(events.text_stream)
    else:
        answer = claude.messages.create(**kwargs).content[0].text
    assert answer == text
    assert EMAIL not in _sent_upstream(sim) and "[EMAIL_1]" in _sent_upstream(sim)


@pytest.mark.parametrize("stream", [False, True])
def test_redaction_through_the_responses_api(client: openai.OpenAI, sim: SimControl, stream: bool):
    sim.http.post("/_sim/config", json={"model": "pv-cloud", "echo": True}).raise_for_status()  # no `sim` field here
    text = f"reach me on {PHONE}"
    if stream:
        with client.responses.stream(model="cloud", input=text) as events:
            answer = events.get_final_response().output_text
    else:
        answer = client.responses.create(model="cloud", input=text).output_text
    assert answer == text
    assert PHONE not in _sent_upstream(sim) and "[PHONE_1]" in _sent_upstream(sim)


def test_redacted_requests_never_share_a_cached_answer(client: openai.OpenAI, sim: SimControl):
    # Both redact to "mail [EMAIL_1]": a cache keyed on that would hand the second caller the first one's address.
    for address in ("first@example.com", "second@example.org"):
        raw = client.chat.completions.with_raw_response.create(
            model="cloud", messages=[{"role": "user", "content": f"mail {address}"}], extra_body=ECHO)
        assert raw.parse().choices[0].message.content == f"mail {address}"
        assert "x-mmproxy-cache" not in raw.headers
    assert len(sim.requests(50)) == 2
    # A request without sensitive data is cached as usual.
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model="cloud", messages=[{"role": "user", "content": "cache me"}])
    assert raw.headers["x-mmproxy-cache"] == "hit"


def test_the_access_log_never_holds_the_values(gw: Process, client: openai.OpenAI):
    client.chat.completions.create(model="cloud", messages=[{"role": "user", "content": f"{EMAIL} {CARD}"}])
    everything = "".join(gw.output)
    assert EMAIL not in everything and CARD not in everything and PHONE not in everything


def test_no_trusted_deployment_is_a_clear_error_and_no_cloud_call(simulator: Process, sim: SimControl,
                                                                   tmp_path: Path):
    gw = start_gateway(tmp_path, _config(simulator.url, trusted=False))
    try:
        reply = httpx.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                           json={"model": "cloud", "messages": [{"role": "user", "content": f"card {CARD}"}]})
        assert reply.status_code == 503
        error = reply.json()["error"]
        assert error["code"] == "no_trusted_deployment" and "cards-stay-inside" in error["message"]
        assert set(error) == {"message", "type", "param", "code"}
        assert sim.requests(50) == []
    finally:
        gw.stop()


def test_failing_and_cooling_trusted_deployments_never_fall_back_outside(simulator: Process, sim: SimControl,
                                                                          tmp_path: Path):
    config = _config(simulator.url, router_settings={
        "num_retries": 1, "allowed_fails": 1, "cooldown_time": 60,
        "fallbacks": [{"local": ["cloud"]}, {"onprem": ["cloud"]}]})
    gw = start_gateway(tmp_path, config)
    try:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)
        sim.fault("pv-onprem", "500", count=5)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="cloud", messages=[{"role": "user", "content": f"card {CARD}"}])
        # Cooling down now: refused before any call.
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="cloud", messages=[{"role": "user", "content": f"card {CARD}"}])
        assert caught.value.status_code == 503
        assert caught.value.body["code"] == "no_trusted_deployment"  # type: ignore[index]
        assert {r["body"]["model"] for r in sim.requests(50)} == {"pv-onprem"}
        # Requests without sensitive data still use the fallback as configured.
        assert client.chat.completions.create(model="cloud", messages=[{"role": "user", "content": "hi"}])
    finally:
        gw.stop()


def test_kinds_redacted_from_every_request_without_a_rule(simulator: Process, sim: SimControl, tmp_path: Path):
    config = _config(simulator.url, privacy={"redact": ["credential"]})
    del config["routing_rules"]
    gw = start_gateway(tmp_path, config)
    try:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)
        key = "sk-proj-a1B2c3D4e5F6g7H8i9J0k1L2m3N4"
        text = f"why does {key} fail for {EMAIL}?"
        raw = client.chat.completions.with_raw_response.create(
            model="cloud", messages=[{"role": "user", "content": text}], extra_body=ECHO)
        assert raw.parse().choices[0].message.content == text
        assert sim.last()["body"]["messages"][0]["content"] == f"why does [CREDENTIAL_1] fail for {EMAIL}?"
        assert raw.headers["x-mmproxy-pii"] == "credential:1"
    finally:
        gw.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_a_virtual_models_members_see_placeholders_and_the_client_its_values(simulator: Process, sim: SimControl,
                                                                           tmp_path: Path, stream: bool):
    config = _config(simulator.url)
    config["model_list"].append({"model_name": "agreed", "consensus": {"members": ["cloud", "onprem"],
                                                                       "min_agreement": 0.5}})
    gw = start_gateway(tmp_path, config)
    try:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)
        text = f"Forward this to {EMAIL}"
        sim.reset()
        if stream:
            chunks = client.chat.completions.create(model="agreed", messages=[{"role": "user", "content": text}],
                                                    stream=True, extra_body=ECHO)
            answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            answer = client.chat.completions.create(model="agreed", messages=[{"role": "user", "content": text}],
                                                    extra_body=ECHO).choices[0].message.content
        assert answer == text
        sent = _sent_upstream(sim)
        assert EMAIL not in sent and "[EMAIL_1]" in sent  # every member was asked with the placeholder
    finally:
        gw.stop()


def test_kinds_redacted_from_every_request_reach_embeddings_too(simulator: Process, sim: SimControl,
                                                                tmp_path: Path):
    config = _config(simulator.url, privacy={"redact": ["credential", "email"]})
    del config["routing_rules"]
    config["model_list"].append(_openai_wire("embed", "pv-embed", simulator.url, mode="embedding"))
    gw = start_gateway(tmp_path, config)
    try:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)
        key = "sk-proj-a1B2c3D4e5F6g7H8i9J0k1L2m3N4"
        raw = client.embeddings.with_raw_response.create(model="embed", input=[f"rotate {key}", f"mail {EMAIL}"])
        assert len(raw.parse().data) == 2
        assert sim.last()["body"]["input"] == ["rotate [CREDENTIAL_1]", "mail [EMAIL_1]"]
        assert raw.headers["x-mmproxy-pii"] == "credential:1,email:1"
    finally:
        gw.stop()
