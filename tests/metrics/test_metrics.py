"""GET /metrics content: exact counter and histogram values, escaping, and the cross-worker merge through files."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mmproxy.metrics import CONTENT_TYPE, Metrics
from mmproxy.metrics.worker import MAX_MODELS, OTHER_MODEL
from mmproxy.spend.record import RequestRecord


def record(**fields: object) -> RequestRecord:
    rec = RequestRecord("req", "chat")
    rec.requested_model = "gpt-4o"
    rec.model_group = "gpt-4o"
    rec.deployment = "d1"
    rec.tier = "workhorse"
    for name, value in fields.items():
        setattr(rec, name, value)
    return rec


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as parsed by prometheus_client, keyed by name and sorted labels."""
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def buckets(found: dict, name: str, **labels: str) -> dict[float, float]:
    """le (as a float) -> cumulative count for one histogram series."""
    wanted = set(labels.items())
    return {
        float(dict(lbl)["le"]): value
        for (sample, lbl), value in found.items()
        if sample == f"{name}_bucket" and wanted <= set(lbl) and len(lbl) == len(labels) + 1
    }


def observe_known_sequence(metrics: Metrics) -> None:
    metrics.observe(
        record(prompt_tokens=100, completion_tokens=20, cached_tokens=30, cost_usd=0.01, latency_ms=100.0,
               overhead_ms=0.05, cache="miss")
    )
    metrics.observe(
        record(stream=True, ttft_ms=40.0, latency_ms=2000.0, prompt_tokens=50, completion_tokens=5,
               cache_write_tokens=10, cost_usd=0.002, cache="hit", saved_usd=0.02, retries=1, overhead_ms=0.3)
    )
    metrics.observe(
        record(requested_model="nope", deployment=None, tier=None, status=404, error_code="model_not_found",
               latency_ms=1.0)
    )
    metrics.observe(record(status=429, error_code="rate_limited", fallbacks=2, latency_ms=400_000.0))
    metrics.cooldown("d1")
    metrics.cooldown("d1")
    metrics.budget_rejected(None)


def test_counters_after_a_known_sequence() -> None:
    metrics = Metrics()
    observe_known_sequence(metrics)
    found = samples(metrics)

    assert found[key("mmproxy_requests_total", model="gpt-4o", deployment="d1", status="200")] == 2
    assert found[key("mmproxy_requests_total", model="gpt-4o", deployment="d1", status="429")] == 1
    # Rejected before routing: deployment None is an empty label, never "None".
    assert found[key("mmproxy_requests_total", model="nope", deployment="", status="404")] == 1
    assert "None" not in metrics.render().decode()

    tokens = {t: found[key("mmproxy_tokens_total", model="gpt-4o", deployment="d1", type=t)] for t in
              ("prompt", "completion", "cached", "cache_write")}
    assert tokens == {"prompt": 150, "completion": 25, "cached": 30, "cache_write": 10}
    assert found[key("mmproxy_cost_usd_total", model="gpt-4o", deployment="d1", tier="workhorse")] == pytest.approx(
        0.012
    )
    assert found[key("mmproxy_cost_usd_total", model="nope", deployment="", tier="")] == 0

    assert found[key("mmproxy_cache_requests_total", cache="miss")] == 1
    assert found[key("mmproxy_cache_requests_total", cache="hit")] == 1
    assert found[key("mmproxy_cache_requests_total", cache="none")] == 2
    assert found[key("mmproxy_saved_usd_total", cache="hit")] == pytest.approx(0.02)
    assert found[key("mmproxy_saved_usd_total", cache="none")] == 0

    assert found[key("mmproxy_retries_total", model="gpt-4o")] == 1
    assert found[key("mmproxy_fallbacks_total", model="gpt-4o")] == 2
    assert found[key("mmproxy_errors_total", model="nope", code="model_not_found")] == 1
    assert found[key("mmproxy_errors_total", model="gpt-4o", code="rate_limited")] == 1
    assert found[key("mmproxy_cooldowns_total", deployment="d1")] == 2
    assert found[key("mmproxy_budget_rejections_total", team="")] == 1


def test_histograms_after_a_known_sequence() -> None:
    metrics = Metrics()
    observe_known_sequence(metrics)
    found = samples(metrics)

    latency = buckets(found, "mmproxy_request_latency_seconds", model="gpt-4o", deployment="d1")
    # 0.1 s lands in le="0.1" (bounds are inclusive), 2 s in le="2.5", 400 s only in +Inf.
    assert latency[0.05] == 0
    assert latency[0.1] == 1
    assert latency[1.0] == 1
    assert latency[2.5] == 2
    assert latency[300.0] == 2
    assert latency[float("inf")] == 3
    assert list(latency.values()) == sorted(latency.values())  # cumulative
    assert found[key("mmproxy_request_latency_seconds_count", model="gpt-4o", deployment="d1")] == 3
    assert found[key("mmproxy_request_latency_seconds_sum", model="gpt-4o", deployment="d1")] == pytest.approx(402.1)

    ttft = buckets(found, "mmproxy_time_to_first_token_seconds", model="gpt-4o", deployment="d1")
    assert ttft[0.025] == 0
    assert ttft[0.05] == 1
    assert ttft[float("inf")] == 1
    assert found[key("mmproxy_time_to_first_token_seconds_sum", model="gpt-4o", deployment="d1")] == pytest.approx(
        0.04
    )
    # Only streams observe time to first token.
    assert buckets(found, "mmproxy_time_to_first_token_seconds", model="nope", deployment="") == {}

    overhead = buckets(found, "mmproxy_gateway_overhead_seconds")
    assert min(overhead) == pytest.approx(50e-6)
    assert max(b for b in overhead if b != float("inf")) == pytest.approx(0.05)
    assert overhead[min(overhead)] == 1  # 0.05 ms is on the bound
    assert overhead[0.00025] == 1
    assert overhead[0.0005] == 2
    assert found[key("mmproxy_gateway_overhead_seconds_count")] == 2
    assert found[key("mmproxy_gateway_overhead_seconds_sum")] == pytest.approx(0.00035)


def test_render_parses_with_help_and_type_for_every_family() -> None:
    metrics = Metrics()
    observe_known_sequence(metrics)
    text = metrics.render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counters = {"requests", "tokens", "cost_usd", "saved_usd", "cache_requests", "retries", "fallbacks", "cooldowns",
                "budget_rejections", "errors", "semantic_outcomes", "semantic_vetoes"}
    histograms = {"request_latency_seconds", "time_to_first_token_seconds", "gateway_overhead_seconds"}
    # The parser names a counter family without its _total suffix.
    assert {name: f.type for name, f in families.items()} == {
        **{f"mmproxy_{n}": "counter" for n in counters},
        **{f"mmproxy_{n}": "histogram" for n in histograms},
    }
    assert all(f.documentation for f in families.values())
    assert "# TYPE mmproxy_requests_total counter" in text
    assert text.endswith("\n")
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_empty_metrics_render_every_family() -> None:
    text = Metrics().render().decode()
    assert len(list(text_string_to_metric_families(text))) == 15
    assert text.count("# HELP ") == 15


def test_series_of_another_part_are_read_at_each_scrape() -> None:
    metrics = Metrics()
    outcomes = {"right": 3, "wrong": 1}
    metrics.add_source(lambda: {"mmproxy_semantic_outcomes_total": {(k,): v for k, v in outcomes.items()}})
    assert samples(metrics)[key("mmproxy_semantic_outcomes_total", outcome="wrong")] == 1
    outcomes["wrong"] = 2
    assert samples(metrics)[key("mmproxy_semantic_outcomes_total", outcome="wrong")] == 2


def test_label_values_are_escaped() -> None:
    metrics = Metrics()
    nasty = 'quote " backslash \\ newline \n end'
    metrics.observe(record(requested_model=nasty, deployment="dep\\1", error_code='bad "code"'))
    metrics.budget_rejected('team "x"\n')
    text = metrics.render().decode()
    assert 'model="quote \\" backslash \\\\ newline \\n end"' in text
    found = samples(metrics)
    assert found[key("mmproxy_requests_total", model=nasty, deployment="dep\\1", status="200")] == 1
    assert found[key("mmproxy_errors_total", model=nasty, code='bad "code"')] == 1
    assert found[key("mmproxy_budget_rejections_total", team='team "x"\n')] == 1


def test_client_invented_models_are_capped() -> None:
    metrics = Metrics()
    for i in range(MAX_MODELS + 50):
        metrics.observe(record(requested_model=f"m{i}", deployment=None, tier=None, status=400))
    metrics.observe(record(requested_model="x" * 10_000, deployment=None, tier=None, status=400))
    metrics.observe(record(requested_model="m0", deployment=None, tier=None, status=400))  # known: keeps its label
    found = samples(metrics)
    models = {dict(lbl)["model"] for (name, lbl) in found if name == "mmproxy_requests_total"}
    assert len(models) == MAX_MODELS + 1
    assert found[key("mmproxy_requests_total", model=OTHER_MODEL, deployment="", status="400")] == 51
    assert found[key("mmproxy_requests_total", model="m0", deployment="", status="400")] == 2


async def test_two_workers_sharing_a_directory_each_render_the_sum(tmp_path: Path) -> None:
    first, second = Metrics(tmp_path, worker=0), Metrics(tmp_path, worker=1)
    observe_known_sequence(first)
    second.observe(record(prompt_tokens=7, latency_ms=30.0, cost_usd=0.5))
    second.cooldown("d2")
    tasks = [asyncio.create_task(m.run_sharing(interval=0.02)) for m in (first, second)]
    try:
        await asyncio.sleep(0.1)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["worker-0.json", "worker-1.json"]
        for metrics in (first, second):
            found = samples(metrics)
            assert found[key("mmproxy_requests_total", model="gpt-4o", deployment="d1", status="200")] == 3
            assert found[key("mmproxy_tokens_total", model="gpt-4o", deployment="d1", type="prompt")] == 157
            assert found[key("mmproxy_cost_usd_total", model="gpt-4o", deployment="d1", tier="workhorse")] == (
                pytest.approx(0.512)
            )
            assert found[key("mmproxy_cooldowns_total", deployment="d1")] == 2
            assert found[key("mmproxy_cooldowns_total", deployment="d2")] == 1
            latency = buckets(found, "mmproxy_request_latency_seconds", model="gpt-4o", deployment="d1")
            assert (latency[0.025], latency[0.05], latency[0.1], latency[float("inf")]) == (0, 1, 2, 4)

        # A worker's own state is live; the peer sees it at the peer's next write.
        first.observe(record())
        assert samples(first)[key("mmproxy_requests_total", model="gpt-4o", deployment="d1", status="200")] == 4
        await asyncio.sleep(0.1)
        assert samples(second)[key("mmproxy_requests_total", model="gpt-4o", deployment="d1", status="200")] == 4
    finally:
        for task in tasks:
            task.cancel()
    for task in tasks:
        with pytest.raises(asyncio.CancelledError):
            await task
    assert list(tmp_path.iterdir()) == []  # a stopped worker removes its snapshot


def test_stale_and_corrupt_snapshots_are_ignored(tmp_path: Path) -> None:
    peer = Metrics(tmp_path, worker=1)
    peer.observe(record())
    peer.write_snapshot(tmp_path / "worker-1.json")  # fresh and valid: counted
    peer.write_snapshot(tmp_path / "worker-2.json")
    stale = orjson.loads((tmp_path / "worker-2.json").read_bytes())
    stale["written"] = time.time() - 3600
    (tmp_path / "worker-2.json").write_bytes(orjson.dumps(stale))
    now = time.time()
    bad = {
        "worker-3.json": b'{"written": 1, "famil',
        "worker-4.json": b"\x00\xff binary",
        "worker-5.json": b"[1, 2, 3]",
        "worker-6.json": orjson.dumps({"written": now, "families": {"mmproxy_requests_total": [["a", 1]]}}),
        "worker-7.json": orjson.dumps({"written": now, "families": {"mmproxy_unknown_total": []}}),
        "worker-8.json": orjson.dumps(
            {"written": now, "families": {"mmproxy_gateway_overhead_seconds": [[[1, 2, 3]]]}}
        ),
        "worker-9.json": orjson.dumps(
            {"written": now, "families": {"mmproxy_requests_total": [["a", "b", "200", 1], ["a", "b", 5, 1]]}}
        ),
        "worker-10.json": orjson.dumps({"written": "yesterday", "families": {}}),
        "worker-11.json": orjson.dumps({"written": now, "families": {"mmproxy_retries_total": [["m", "lots"]]}}),
    }
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "worker-12.json").mkdir()

    metrics = Metrics(tmp_path, worker=0)
    metrics.observe(record())
    found = samples(metrics)
    assert found[key("mmproxy_requests_total", model="gpt-4o", deployment="d1", status="200")] == 2
    assert key("mmproxy_requests_total", model="a", deployment="b", status="200") not in found
    assert key("mmproxy_retries_total", model="m") not in found


def test_missing_shared_directory_renders_local_state(tmp_path: Path) -> None:
    metrics = Metrics(tmp_path / "not-yet", worker=0)
    metrics.observe(record())
    assert samples(metrics)[key("mmproxy_requests_total", model="gpt-4o", deployment="d1", status="200")] == 1


async def test_unwritable_shared_directory_keeps_the_worker_running(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    metrics = Metrics(blocker, worker=0)
    metrics.observe(record())
    task = asyncio.create_task(metrics.run_sharing(interval=0.01))
    await asyncio.sleep(0.05)
    assert not task.done()
    assert sum("cannot write" in r.message for r in caplog.records) == 1  # once, not every interval
    assert samples(metrics)[key("mmproxy_requests_total", model="gpt-4o", deployment="d1", status="200")] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
