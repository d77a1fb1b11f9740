"""Cost of every request, the spend ledger and its reports, feedback: end to end through the gateway."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, SimControl, gateway_config, start_gateway

HELLO = [{"role": "user", "content": "hi"}]
LONG = "A long and stable instruction that the application sends with every request. " * 80  # ~1,600 tokens
PRICES = {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06, "cache_read_input_token_cost": 1e-07,
          "cache_creation_input_token_cost": 1.25e-06}


def _config(sim_url: str, **general: Any) -> dict[str, Any]:
    config = gateway_config(sim_url)
    config["model_list"] += [
        {"model_name": "cached-gpt", "litellm_params": {"model": "openai/sim-cache", "api_base": f"{sim_url}/v1",
                                                        "api_key": UPSTREAM_KEY},
         "model_info": {"id": "cached-gpt-1", **PRICES}},
        {"model_name": "gem", "litellm_params": {"model": "gemini/sim-gem", "api_base": f"{sim_url}/v1beta",
                                                 "api_key": UPSTREAM_KEY},
         "model_info": {"id": "gem-1", **PRICES}},
        {"model_name": "sonnet", "litellm_params": {"model": "anthropic/sim-sonnet", "api_base": sim_url,
                                                    "api_key": UPSTREAM_KEY, "auto_prompt_cache": True},
         "model_info": {"id": "sonnet-1", "tier": "frontier", **PRICES}},
        {"model_name": "backup", "litellm_params": {"model": "openai/sim-backup", "api_base": f"{sim_url}/v1",
                                                    "api_key": UPSTREAM_KEY},
         "model_info": {"id": "backup-1", "tier": "economy", **PRICES}},
    ]
    config["router_settings"]["fallbacks"] = [{"flaky": ["backup"]}]
    config["general_settings"].update(general)
    return config


@pytest.fixture(scope="module")
def gw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spend")


@pytest.fixture(scope="module")
def gw(simulator: Process, gw_dir: Path) -> Iterator[Process]:
    process = start_gateway(gw_dir, _config(simulator.url))
    yield process
    process.stop()


@pytest.fixture
def client(gw: Process) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)


def _admin(gw: Process) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30)


def _row(gw: Process, request_id: str) -> dict[str, Any]:
    rows = _admin(gw).get("/spend/logs", params={"request_id": request_id}).json()
    assert len(rows) == 1, rows
    return rows[0]


def _cost(usage: Any, prices: dict[str, float] = PRICES) -> float:
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    written = (usage.model_extra or {}).get("cache_creation_input_tokens") or 0
    fresh = usage.prompt_tokens - cached - written
    return (fresh * prices["input_cost_per_token"] + cached * prices["cache_read_input_token_cost"]
            + written * prices["cache_creation_input_token_cost"] + usage.completion_tokens
            * prices["output_cost_per_token"])


# -- cost of every request ----------------------------------------------------------------------
@pytest.mark.parametrize("model", ["cached-gpt", "gem"])
def test_cached_prompt_tokens_are_priced_as_cached(client, gw: Process, model, sim: SimControl):
    messages = [{"role": "system", "content": LONG}, *HELLO]
    first = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    second = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    usage = second.parse().usage
    assert first.parse().usage.prompt_tokens_details.cached_tokens == 0
    assert usage.prompt_tokens_details.cached_tokens > 1000  # the provider's own prompt cache
    assert float(second.headers["x-mmproxy-cost-usd"]) == pytest.approx(_cost(usage), rel=1e-9)
    assert float(second.headers["x-mmproxy-cost-usd"]) < float(first.headers["x-mmproxy-cost-usd"])
    row = _row(gw, second.headers["x-mmproxy-request-id"])
    assert row["cached_tokens"] == usage.prompt_tokens_details.cached_tokens
    assert row["saved_usd"] == pytest.approx(row["cached_tokens"] * (1e-06 - 1e-07), rel=1e-9)


def test_stream_cost_in_the_usage_chunk_and_the_ledger(client, gw: Process, sim: SimControl):
    stream = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HELLO, stream=True, stream_options={"include_usage": True})
    request_id = stream.headers["x-mmproxy-request-id"]
    chunks = list(stream.parse())
    last = chunks[-1]
    expected = last.usage.prompt_tokens * 2.5e-06 + last.usage.completion_tokens * 1e-05
    assert last.model_extra["x_mmproxy_cost_usd"] == pytest.approx(expected, rel=1e-9)
    row = _row(gw, request_id)
    assert row["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert row["stream"] in (True, 1) and row["ttft_ms"] is not None and row["ttft_ms"] <= row["latency_ms"]


def test_stream_without_usage_is_still_priced_and_the_client_gets_no_usage_chunk(client, gw: Process,
                                                                                   sim: SimControl):
    stream = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO, stream=True)
    chunks = list(stream.parse())
    assert all(c.choices for c in chunks)  # no usage-only chunk: the client did not ask for one
    # The gateway asked the upstream for usage on its own account.
    assert sim.last()["body"]["stream_options"] == {"include_usage": True}
    row = _row(gw, stream.headers["x-mmproxy-request-id"])
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0 and row["cost_usd"] > 0


def test_translated_stream_cost(client, gw: Process, sim: SimControl):
    stream = client.chat.completions.with_raw_response.create(
        model="claude", messages=HELLO, stream=True, stream_options={"include_usage": True})
    last = list(stream.parse())[-1]
    expected = last.usage.prompt_tokens * 3e-06 + last.usage.completion_tokens * 1.5e-05
    assert last.model_extra["x_mmproxy_cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert _row(gw, stream.headers["x-mmproxy-request-id"])["cost_usd"] == pytest.approx(expected, rel=1e-9)


def test_fallback_is_recorded_on_the_request_that_caused_it(client, gw: Process, sim: SimControl):
    sim.fault("sim-flaky", "500", count=1)
    reply = client.chat.completions.with_raw_response.create(model="flaky", messages=HELLO)
    assert reply.headers["x-mmproxy-deployment"] == "backup-1"
    row = _row(gw, reply.headers["x-mmproxy-request-id"])
    assert row["requested_model"] == "flaky" and row["model_group"] == "backup"
    assert row["deployment"] == "backup-1" and row["tier"] == "economy"
    assert row["fallbacks"] == 1 and row["status"] == 200
    assert row["cost_usd"] == pytest.approx(float(reply.headers["x-mmproxy-cost-usd"]), rel=1e-9)


def test_failed_request_has_a_row(client, gw: Process, sim: SimControl):
    sim.fault("sim-mini", "400", count=2)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="mini", messages=HELLO)
    row = _row(gw, info.value.response.headers["x-mmproxy-request-id"])
    assert row["status"] == 400 and row["error_code"] and row["cost_usd"] == 0


# -- Anthropic prompt caching ------------------------------------------------------------------
def test_auto_prompt_cache_marks_a_repeated_prefix_and_prices_it(client, gw: Process, sim: SimControl):
    messages = [{"role": "system", "content": LONG}, {"role": "user", "content": "first question"}]
    first = client.chat.completions.with_raw_response.create(model="sonnet", messages=messages)
    assert "cache_control" not in json.dumps(sim.last()["body"])  # a prefix seen once is not marked
    messages[1]["content"] = "second question"
    second = client.chat.completions.with_raw_response.create(model="sonnet", messages=messages)
    system = sim.last()["body"]["system"]
    assert system[-1]["cache_control"] == {"type": "ephemeral"}
    written = second.parse().usage.model_extra["cache_creation_input_tokens"]
    assert written > 1000
    messages[1]["content"] = "third question"
    third = client.chat.completions.with_raw_response.create(model="sonnet", messages=messages)
    usage = third.parse().usage
    assert usage.prompt_tokens_details.cached_tokens == written
    costs = [float(r.headers["x-mmproxy-cost-usd"]) for r in (first, second, third)]
    assert costs[1] > costs[0] > costs[2]  # a write costs 1.25x, a read 0.1x
    assert costs[2] == pytest.approx(_cost(usage), rel=1e-9)
    row = _row(gw, third.headers["x-mmproxy-request-id"])
    assert row["cached_tokens"] == written and row["saved_usd"] > 0
    report = _admin(gw).get("/spend/report", params={"group_by": "tier"}).json()
    assert report["savings"]["prompt"]["tokens"] >= written and report["savings"]["prompt"]["usd"] >= row["saved_usd"]


# -- reports and feedback -------------------------------------------------------------------------
def test_spend_report_with_cost_per_successful_output(simulator: Process, tmp_path: Path, sim: SimControl):
    gw = start_gateway(tmp_path, _config(simulator.url))
    try:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)
        ids = [client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
               .headers["x-mmproxy-request-id"] for _ in range(3)]
        sim.fault("sim-frontier", "400", count=1)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="gpt-4o", messages=HELLO)
        admin = _admin(gw)
        feedback = admin.post("/v1/feedback", json={"request_id": ids[0], "score": 0.0, "label": "wrong"})
        assert feedback.status_code == 200, feedback.text
        unknown = admin.post("/v1/feedback", json={"request_id": "nope", "score": 1})
        assert unknown.status_code == 404
        assert admin.post("/v1/feedback", json={"request_id": ids[1], "score": 7}).status_code == 400

        report = admin.get("/spend/report", params={"group_by": "model"}).json()
        (group,) = [g for g in report["groups"] if g["group"] == "gpt-4o"]
        assert group["requests"] == 4 and group["successes"] == 2  # one error, one answer marked wrong
        assert group["cost_per_success_usd"] == pytest.approx(group["cost_usd"] / 2, rel=1e-9)
        assert group["feedback_count"] == 1
        by_deployment = admin.get("/spend/report", params={"group_by": "deployment"}).json()["groups"]
        assert {g["group"] for g in by_deployment} == {"frontier-1"}
        bad = admin.get("/spend/report", params={"group_by": "colour"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"
        future = admin.get("/spend/report", params={"group_by": "model", "start": "2999-01-01"}).json()
        assert future["groups"] == []
    finally:
        gw.stop()


def test_ledger_survives_a_restart(simulator: Process, tmp_path: Path, sim: SimControl):
    gw = start_gateway(tmp_path, _config(simulator.url))
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)
    ids = [client.chat.completions.with_raw_response.create(model="mini", messages=HELLO)
           .headers["x-mmproxy-request-id"] for _ in range(20)]
    assert gw.stop() == 0  # a clean shutdown flushes the queue
    again = start_gateway(tmp_path, _config(simulator.url))
    try:
        rows = _admin(again).get("/spend/logs", params={"limit": 100}).json()
        assert {r["request_id"] for r in rows} >= set(ids)
    finally:
        again.stop()


def test_postgresql_ledger_and_keys(simulator: Process, tmp_path: Path, postgres_url: str, sim: SimControl):
    gw = start_gateway(tmp_path, _config(simulator.url, database_url=postgres_url))
    try:
        admin = _admin(gw)
        key = admin.post("/key/generate", json={"key_alias": "pg", "max_budget": 10}).json()["key"]
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)
        reply = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
        row = _row(gw, reply.headers["x-mmproxy-request-id"])
        assert row["key_alias"] == "pg" and row["cost_usd"] == pytest.approx(
            float(reply.headers["x-mmproxy-cost-usd"]), rel=1e-9)
        assert not list(tmp_path.glob("mmproxy.db*"))  # nothing went to SQLite
    finally:
        gw.stop()


# -- metrics ------------------------------------------------------------------------------------
def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_as_requests_flow(client, gw: Process, sim: SimControl):
    before = _samples(gw.url)
    replies = [client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO) for _ in range(3)]
    sim.fault("sim-frontier", "400", count=1)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    after = _samples(gw.url)
    ok = {"model": "gpt-4o", "deployment": "frontier-1", "status": "200"}
    assert _value(after, "mmproxy_requests_total", **ok) - _value(before, "mmproxy_requests_total", **ok) == 3
    failed = {**ok, "status": "400"}
    assert _value(after, "mmproxy_requests_total", **failed) - _value(before, "mmproxy_requests_total", **failed) == 1
    spent = sum(float(r.headers["x-mmproxy-cost-usd"]) for r in replies)
    cost = {"model": "gpt-4o", "deployment": "frontier-1", "tier": ""}
    assert _value(after, "mmproxy_cost_usd_total", **cost) - _value(before, "mmproxy_cost_usd_total", **cost) \
        == pytest.approx(spent, rel=1e-6)
    latency = {"model": "gpt-4o", "deployment": "frontier-1"}
    assert _value(after, "mmproxy_request_latency_seconds_count", **latency) \
        - _value(before, "mmproxy_request_latency_seconds_count", **latency) == 4


def test_metrics_cover_every_worker(simulator: Process, tmp_path: Path, sim: SimControl):
    gw = start_gateway(tmp_path, _config(simulator.url), "--workers", "2")
    try:
        for _ in range(12):  # a new connection each time, so both workers get traffic
            httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "mini", "messages": HELLO},
                       headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10).raise_for_status()
        deadline = time.monotonic() + 5
        total = 0.0
        while time.monotonic() < deadline:
            samples = _samples(gw.url)
            total = sum(v for (name, labels), v in samples.items()
                        if name == "mmproxy_requests_total" and dict(labels).get("model") == "mini")
            if total == 12:
                break
            time.sleep(0.3)
        assert total == 12
    finally:
        gw.stop()


def test_an_upstream_without_usage_is_priced_by_our_count(client, gw: Process, sim: SimControl):
    quiet = {"sim": {"usage": False, "content": "Four words of answer."}}
    reply = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO, extra_body=quiet)
    assert reply.parse().usage is None  # the upstream said nothing
    row = _row(gw, reply.headers["x-mmproxy-request-id"])
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] == 5  # "Four words of answer." in o200k
    assert row["cost_usd"] == pytest.approx(row["prompt_tokens"] * 2.5e-06 + 5 * 1e-05, rel=1e-9)
    assert float(reply.headers["x-mmproxy-cost-usd"]) == pytest.approx(row["cost_usd"], rel=1e-9)

    stream = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HELLO, stream=True, stream_options={"include_usage": True}, extra_body=quiet)
    assert all(c.usage is None for c in stream.parse())
    row = _row(gw, stream.headers["x-mmproxy-request-id"])
    assert row["prompt_tokens"] > 0 and row["cost_usd"] > 0


def test_streams_ask_for_usage_only_when_something_reads_it(simulator: Process, tmp_path: Path, sim: SimControl):
    gw = start_gateway(tmp_path, _config(simulator.url, disable_spend_logs=True, disable_metrics=True))
    try:
        master = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)
        list(master.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True))
        assert "stream_options" not in sim.last()["body"]  # no ledger, no metrics: nobody prices it
        key = _admin(gw).post("/key/generate", json={"max_budget": 1}).json()["key"]
        keyed = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)
        list(keyed.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True))
        assert sim.last()["body"]["stream_options"] == {"include_usage": True}  # a budget needs the cost
        info = _admin(gw).get("/key/info", params={"key": key}).json()["info"]
        assert info["spend"] > 0
    finally:
        gw.stop()
