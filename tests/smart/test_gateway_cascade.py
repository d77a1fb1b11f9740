"""Cascades as virtual models, end to end: the openai SDK → the gateway → the replay upstream (stages) and the
plain simulator (judges). Each stage and each judge call is billed to the one request."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import openai
import orjson
import pytest

from mmproxy.cache.embedder import LocalEmbedder
from mmproxy.smart.agreement import JUDGE_SYSTEM
from mmproxy.smart.cascade import CascadePlan, walk
from mmproxy.smart.model import QualityModel
from mmproxy.smart.records import costs, load_records
from mmproxy.smart.train import stage_rows
from mmproxy.tokens import count
from tests.conftest import MASTER_KEY, Process, priced_deployment, start_gateway
from tests.smart.conftest import (
    PRICES,
    SHIPPED,
    SLICE,
    STRONG,
    WEAK,
    ask_claude,
    claude,
    client,
    replayed_models,
    scripted_simulator,
)

JUDGE_PRICE = 1e-06  # per token, in and out
YES, NO = '{"score": 9, "reason": "right"}', '{"score": 2, "reason": "the total is wrong"}'


def _word_problems() -> list:
    return [r for r in load_records(SLICE) if r.task == "gsm8k"][:12]


@pytest.fixture(scope="module")
def judge_sim() -> Iterator[Process]:
    knobs = {"judge-yes": {"content": YES}, "judge-no": {"content": NO}, "broken": {"fault": "500"}}
    process = scripted_simulator(knobs)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def gw(replay_sim: Process, judge_sim: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    judges = f"{judge_sim.url}/v1"
    config = {
        "model_list": [
            *replayed_models(replay_sim),
            priced_deployment("judge-yes", "judge-yes", judges, JUDGE_PRICE, JUDGE_PRICE),
            priced_deployment("judge-no", "judge-no", judges, JUDGE_PRICE, JUDGE_PRICE),
            priced_deployment("broken", "broken", judges, JUDGE_PRICE, JUDGE_PRICE),
            {"model_name": "frugal", "cascade": {"stages": [{"model": "mixtral"}, "gpt-4"]}},
            {"model_name": "frugal-votes", "cascade": {"stages": [
                {"model": "mixtral", "scorer": "consistency", "samples": 3}, "gpt-4"]}},
            {"model_name": "frugal-judged", "cascade": {"stages": [
                {"model": "mixtral", "scorer": "judge", "judge": "judge-yes"}, "gpt-4"]}},
            {"model_name": "frugal-strict", "cascade": {"stages": [
                {"model": "mixtral", "scorer": "judge", "judge": "judge-no"}, "gpt-4"]}},
            {"model_name": "frugal-broken", "cascade": {"stages": [
                {"model": "mixtral", "scorer": "judge", "judge": "judge-no"}, "broken"]}},
            {"model_name": "frugal-broken-judge", "cascade": {"stages": [
                {"model": "mixtral", "scorer": "judge", "judge": "broken"}, "gpt-4"]}},
        ],
        "general_settings": {"master_key": MASTER_KEY},
    }
    process = start_gateway(tmp_path_factory.mktemp("cascade"), config)
    yield process
    process.stop()


def _ask(gw: Process, model: str, prompt: str, **extra):
    return client(gw).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], **extra)


def test_the_learned_cascade_accepts_or_escalates_as_the_offline_plan_does(gw: Process):
    records = _word_problems()
    stages, charged = [], []
    for record in records:
        raw = _ask(gw, "frugal", record.prompt)
        stage = raw.headers["x-mmproxy-cascade-stage"]
        model = WEAK if stage == "mixtral" else STRONG
        assert raw.parse().choices[0].message.content == record.models[model].answer
        assert raw.headers["x-mmproxy-cascade-scores"].startswith("mixtral=")
        stages.append(0 if stage == "mixtral" else 1)
        charged.append(float(raw.headers["x-mmproxy-cost-usd"]))

    plan = CascadePlan.load(SHIPPED / "cascade.npz")
    embedder = LocalEmbedder()
    try:
        rows, _ = stage_rows(records, [WEAK, STRONG], QualityModel.load(SHIPPED / "router.npz"), embedder)
    finally:
        embedder.close()
    offline = walk(plan.score(0, rows[0])[:, None], plan.thresholds)
    assert stages == offline.tolist()
    price = np.array(costs(records, [WEAK, STRONG], PRICES))
    expected = [row[0] + (row[1] if stage else 0.0) for row, stage in zip(price, stages, strict=True)]
    assert charged == pytest.approx(expected, rel=1e-6)  # an escalated request pays both stages


def test_agreeing_samples_are_accepted_and_each_sample_is_billed(gw: Process):
    record = _word_problems()[0]
    raw = _ask(gw, "frugal-votes", record.prompt)
    assert raw.headers["x-mmproxy-cascade-stage"] == "mixtral"  # the replay answers the same three times
    assert raw.headers["x-mmproxy-cascade-scores"] == "mixtral=1.0"
    weak = costs([record], [WEAK], PRICES)[0][0]
    assert float(raw.headers["x-mmproxy-cost-usd"]) == pytest.approx(3 * weak, rel=1e-6)


def test_a_judge_sees_only_the_question_and_the_answer_and_is_billed(gw: Process, judge_sim: Process):
    record = _word_problems()[1]
    raw = client(gw).chat.completions.with_raw_response.create(model="frugal-judged", messages=[
        {"role": "system", "content": "SECRET SYSTEM PROMPT of the application"},
        {"role": "user", "content": record.prompt}])
    assert raw.headers["x-mmproxy-cascade-stage"] == "mixtral"
    assert raw.headers["x-mmproxy-cascade-scores"] == "mixtral=0.9"
    seen = httpx.get(f"{judge_sim.url}/_sim/requests", params={"limit": 1}).json()["data"]
    messages = seen[-1]["body"]["messages"]
    assert messages[0] == {"role": "system", "content": JUDGE_SYSTEM}
    assert record.prompt in messages[1]["content"] and record.models[WEAK].answer in messages[1]["content"]
    assert "SECRET" not in orjson.dumps(messages).decode()
    assert float(raw.headers["x-mmproxy-cost-usd"]) > costs([record], [WEAK], PRICES)[0][0]  # the judge's call too


def test_a_rejecting_judge_escalates_to_the_next_stage(gw: Process):
    record = _word_problems()[2]
    raw = _ask(gw, "frugal-strict", record.prompt)
    assert raw.headers["x-mmproxy-cascade-stage"] == "gpt-4"
    assert raw.parse().choices[0].message.content == record.models[STRONG].answer
    rows = httpx.get(f"{gw.url}/spend/logs", params={"request_id": raw.headers["x-mmproxy-request-id"]},
                     headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()
    decision = orjson.loads(rows[0]["decision"])
    assert decision["answered_by"] == "gpt-4" == rows[0]["model_group"]
    assert decision["stages"][0] == {"model": "mixtral", "scorer": "judge", "threshold": 0.7, "score": 0.2,
                                     "accepted": False}


def test_an_answer_already_paid_for_survives_a_failing_later_stage_or_judge(gw: Process):
    record = _word_problems()[7]
    raw = _ask(gw, "frugal-broken", record.prompt)
    assert raw.headers["x-mmproxy-cascade-stage"] == "mixtral"
    assert raw.parse().choices[0].message.content == record.models[WEAK].answer
    escalated = _ask(gw, "frugal-broken-judge", record.prompt)  # no grade: the answer is escalated
    assert escalated.headers["x-mmproxy-cascade-stage"] == "gpt-4"
    assert escalated.parse().choices[0].message.content == record.models[STRONG].answer


def test_every_sub_call_is_a_ledger_row_of_its_own_inside_the_requests_cost(gw: Process):
    record = _word_problems()[8]
    raw = _ask(gw, "frugal-strict", record.prompt)  # mixtral, its judge, then gpt-4
    request_id = raw.headers["x-mmproxy-request-id"]
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    rows = httpx.get(f"{gw.url}/spend/logs", params={"limit": 100}, headers=admin).json()
    children = sorted((r for r in rows if r["parent_id"] == request_id), key=lambda r: r["request_id"])
    assert [r["request_id"] for r in children] == [f"{request_id}.{i}" for i in (1, 2, 3)]
    assert [r["model_group"] for r in children] == ["mixtral", "judge-no", "gpt-4"]
    [parent] = [r for r in rows if r["request_id"] == request_id]
    assert parent["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in children))
    assert parent["cost_usd"] == pytest.approx(float(raw.headers["x-mmproxy-cost-usd"]))
    report = httpx.get(f"{gw.url}/spend/report", params={"group_by": "model"}, headers=admin).json()
    groups = {g["group"]: g for g in report["groups"]}
    assert "judge-no" not in groups  # sub-calls are inside their request's figures, not counted twice
    everything = sum(r["cost_usd"] for r in rows if r["parent_id"] is None)
    assert sum(g["cost_usd"] for g in report["groups"]) == pytest.approx(everything)


def test_a_streaming_client_gets_the_accepted_answer_as_a_stream(gw: Process):
    record = _word_problems()[3]
    with client(gw).chat.completions.with_streaming_response.create(
            model="frugal-judged", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": record.prompt}]) as response:
        assert response.headers["x-mmproxy-cascade-stage"] == "mixtral"
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == record.models[WEAK].answer
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == count(record.models[WEAK].answer)


def test_the_anthropic_sdk_gets_the_cascades_answer_as_a_message(gw: Process):
    record = _word_problems()[5]
    raw = ask_claude(gw, "frugal-strict", record.prompt)
    assert raw.headers["x-mmproxy-cascade-stage"] == "gpt-4"
    message = raw.parse()
    assert message.content[0].text == record.models[STRONG].answer
    assert message.usage.output_tokens == count(record.models[STRONG].answer)
    with claude(gw).messages.stream(model="frugal-judged", max_tokens=1024,
                                    messages=[{"role": "user", "content": record.prompt}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == record.models[WEAK].answer and final.stop_reason == "end_turn"


def test_the_responses_api_gets_the_cascades_answer(gw: Process):
    record = _word_problems()[6]
    responses = client(gw).responses
    answer = responses.create(model="frugal-judged", input=record.prompt)
    assert answer.output_text == record.models[WEAK].answer
    with responses.stream(model="frugal-strict", input=record.prompt) as stream:
        final = stream.get_final_response()
    assert final.output_text == record.models[STRONG].answer and final.status == "completed"


def test_a_cascade_answers_chat_requests_only(gw: Process):
    with pytest.raises(openai.BadRequestError, match="cascade"):
        client(gw).embeddings.create(model="frugal", input="hello")
    assert "frugal" in {m.id for m in client(gw).models.list()}
