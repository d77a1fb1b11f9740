"""The verified semantic cache end to end: a gateway whose model is the simulator replaying each Banking77
message's intent. The cache explores, learns, then serves within the error bound; a near miss with another
number is never served; a judge's calls are requests of their own; outcomes travel between instances through
Redis; the metrics count explorations, outcomes and vetoes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, start_gateway, start_process, start_replay
from tests.router.test_shared_redis import redis_url  # noqa: F401  (the module fixture: a real redis-server)

SLICE = Path(__file__).resolve().parents[1] / "data" / "banking77_slice.jsonl"
INSTRUCTION = "Classify the customer's message into one of the bank's support intents. Reply with its name only."
BOUND = 0.25  # loose enough to certify a cutoff within the 300 messages (the bench measures 0.01-0.05)
NEAR_MISS = ("What is 15% of 80?", "What is 15% of 90?")


def _messages() -> list[dict[str, str]]:
    return [orjson.loads(line) for line in SLICE.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """The simulator answering each message with its intent (and the near-miss questions with their numbers)."""
    path = tmp_path_factory.mktemp("verified") / "answers.jsonl"
    records = [{"prompt": m["text"], "models": {"sim-classifier": {"answer": m["intent"]}}} for m in _messages()]
    records += [{"prompt": NEAR_MISS[0], "models": {"sim-classifier": {"answer": "12"}}},
                {"prompt": NEAR_MISS[1], "models": {"sim-classifier": {"answer": "13.5"}}}]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    process = start_replay(path)
    yield process
    process.stop()


def _config(sim_url: str, **cache_params: Any) -> dict[str, Any]:
    return {
        "model_list": [{"model_name": "classifier", "litellm_params": {
            "model": "openai/sim-classifier", "api_base": f"{sim_url}/v1", "api_key": UPSTREAM_KEY}}],
        "general_settings": {"master_key": MASTER_KEY},
        "litellm_settings": {"cache": True, "cache_params": {"type": "semantic", "max_error_rate": BOUND,
                                                             **cache_params}},
    }


def _ask(gw: Process, text: str) -> Any:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)
    return client.chat.completions.with_raw_response.create(
        model="classifier", messages=[{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": text}])


def _metric(gw: Process, line_start: str) -> float:
    for line in httpx.get(f"{gw.url}/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def trained(replay: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, list[tuple]]]:
    """A gateway that has seen the 300 messages once: (gateway, [(message, cache header, answer)])."""
    gw = start_gateway(tmp_path_factory.mktemp("verified-gw"), _config(replay.url))
    try:
        seen = []
        for message in _messages():
            raw = _ask(gw, message["text"])
            seen.append((message, raw.headers["x-mmproxy-cache"], raw.parse().choices[0].message.content,
                         raw.headers.get("x-mmproxy-cost-usd")))
            time.sleep(0.002)  # the outcome of an exploration is learned after the answer left
        yield gw, seen
    finally:
        gw.stop()


def test_it_explores_first_then_serves_hits_within_the_bound(trained: tuple[Process, list[tuple]]):
    gw, seen = trained
    kinds = [kind for _, kind, _, _ in seen]
    assert kinds[0] == "miss"  # nothing cached yet
    assert "semantic-hit" not in kinds[:20]  # no outcome yet: nothing is certified
    assert kinds.count("explore") >= 30
    hits = [(message, answer, charged) for message, kind, answer, charged in seen if kind == "semantic-hit"]
    assert len(hits) >= 30, kinds
    wrong = sum(answer != message["intent"] for message, answer, _ in hits)
    assert wrong / len(hits) <= BOUND
    assert all(charged == "0" for _, _, charged in hits)
    assert _metric(gw, 'mmproxy_cache_requests_total{cache="semantic-hit"}') == len(hits)
    assert _metric(gw, 'mmproxy_cache_requests_total{cache="explore"}') == kinds.count("explore")
    outcomes = (_metric(gw, 'mmproxy_semantic_outcomes_total{outcome="right"}')
                + _metric(gw, 'mmproxy_semantic_outcomes_total{outcome="wrong"}'))
    assert outcomes == kinds.count("explore")  # every exploration was compared and learned from


def test_a_near_miss_with_another_number_is_vetoed_not_explored(trained: tuple[Process, list[tuple]]):
    gw, _ = trained
    vetoes = _metric(gw, "mmproxy_semantic_vetoes_total")
    assert _ask(gw, NEAR_MISS[0]).headers["x-mmproxy-cache"] == "miss"
    time.sleep(0.2)  # its entry is indexed after the answer left
    raw = _ask(gw, NEAR_MISS[1])
    assert raw.headers["x-mmproxy-cache"] == "miss"
    assert raw.parse().choices[0].message.content == "13.5"
    assert _metric(gw, "mmproxy_semantic_vetoes_total") == vetoes + 1


def test_outcomes_reach_the_other_instances_through_redis(replay: Process, tmp_path: Path,
                                                         redis_url: str):  # noqa: F811
    config = _config(replay.url, url=redis_url, namespace="verified-shared")
    config["litellm_settings"]["cache_params"]["type"] = "redis-semantic"
    one, two = start_gateway(tmp_path, config), start_gateway(tmp_path, config)
    try:
        explored = sum(_ask(one, m["text"]).headers["x-mmproxy-cache"] == "explore" for m in _messages()[:60])
        assert explored > 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            learned = (_metric(two, 'mmproxy_semantic_outcomes_total{outcome="right"}')
                       + _metric(two, 'mmproxy_semantic_outcomes_total{outcome="wrong"}'))
            if learned == explored:
                break
            time.sleep(0.2)
        assert learned == explored  # the other instance's bound learned from every outcome
    finally:
        one.stop()
        two.stop()


LONG_ANSWER = ("Your new card is on its way and usually arrives within five to seven working days; you can track "
               "it in the app under Card, and if it has not come after ten days, order a new one.")


def _free_text_gateway(tmp_path: Path, **cache_params: Any) -> tuple[Process, Process]:
    """A simulator whose writer answers in free text (and whose judge groups two answers together), and a gateway
    with the verified cache on it: (gateway, simulator)."""
    knobs = {"sim-writer": {"content": LONG_ANSWER}, "sim-judge": {"content": '{"groups": [[1, 2]]}'}}
    sim = start_process(["mmproxy.simulator", "--host", "127.0.0.1", "--port", "0", "--latency-ms", "0",
                         "--model-knobs", orjson.dumps(knobs).decode()])
    config = _config(sim.url, **cache_params)
    base = f"{sim.url}/v1"
    config["model_list"] = [
        {"model_name": "classifier", "litellm_params": {"model": "openai/sim-writer", "api_base": base},
         "model_info": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}},
        {"model_name": "judge", "litellm_params": {"model": "openai/sim-judge", "api_base": base},
         "model_info": {"input_cost_per_token": 3e-6, "output_cost_per_token": 4e-6}},
    ]
    return start_gateway(tmp_path, config), sim


def test_free_text_answers_compared_by_embedding_through_the_messages_api(tmp_path: Path):
    gw, sim = _free_text_gateway(tmp_path, answer_equivalence="embedding")
    try:
        messages = anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0).messages

        def ask(text: str) -> Any:
            return messages.with_raw_response.create(model="classifier", max_tokens=200, system=INSTRUCTION,
                                                     messages=[{"role": "user", "content": text}])

        assert ask("When will my new card arrive?").headers["x-mmproxy-cache"] == "miss"
        time.sleep(0.2)
        explored = ask("How long until my new card arrives?")
        assert explored.headers["x-mmproxy-cache"] == "explore"
        assert explored.parse().content[0].text == LONG_ANSWER  # the client gets the fresh answer
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _metric(gw, 'mmproxy_semantic_outcomes_total{outcome="right"}'):
            time.sleep(0.1)
        # Read back from the Messages shape and compared by the answers' embeddings: the same text, so right.
        assert _metric(gw, 'mmproxy_semantic_outcomes_total{outcome="right"}') == 1
    finally:
        gw.stop()
        sim.stop()


def test_a_judge_compares_free_text_answers_as_a_request_of_its_own(tmp_path: Path):
    gw, sim = _free_text_gateway(tmp_path, answer_equivalence="judge", judge_model="judge")
    try:
        assert _ask(gw, "When will my new card arrive?").headers["x-mmproxy-cache"] == "miss"
        time.sleep(0.2)
        explored = _ask(gw, "How long until my new card arrives?")
        assert explored.headers["x-mmproxy-cache"] == "explore"
        request_id = explored.headers["x-mmproxy-request-id"]
        admin = {"Authorization": f"Bearer {MASTER_KEY}"}
        rows: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while not rows and time.monotonic() < deadline:
            rows = httpx.get(f"{gw.url}/spend/logs", params={"request_id": f"{request_id}.judge1"},
                             headers=admin).json()
            time.sleep(0.1)
        [row] = rows
        assert row["model_group"] == "judge" and row["status"] == 200 and row["cost_usd"] > 0
        assert _metric(gw, 'mmproxy_semantic_outcomes_total{outcome="right"}') == 1  # the judge grouped them
        report = httpx.get(f"{gw.url}/spend/report", params={"group_by": "model"}, headers=admin).json()
        assert {g["group"] for g in report["groups"]} >= {"classifier", "judge"}  # its cost is nobody's sub-call
    finally:
        gw.stop()
        sim.stop()
