"""Verification and consensus as virtual models, end to end: the openai and anthropic SDKs → the gateway → the
replay upstream (models that answered the records) and the plain simulator (verifiers with fixed verdicts, a
fixed writer, a slow member). Every sub-call is billed to the one request."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from mmproxy.smart.agreement import VERIFIER_SYSTEM, short_answer
from mmproxy.smart.records import costs, load_records
from tests.conftest import MASTER_KEY, Process, priced_deployment, start_gateway
from tests.smart.conftest import PRICES, SLICE, STRONG, WEAK, ask_claude, client, replayed_models, scripted_simulator

ACCEPT = '{"verdict": "accept", "reasons": [], "severity": "none"}'
REJECT = '{"verdict": "reject", "reasons": ["the total is wrong", "it ignores the discount"], "severity": "high"}'
WRITER = "The answer is 42."
POEMS = ("The harbour lies quiet this morning, the boats resting while gulls circle over the calm water.",
         "Thunder rolls across the mountains as a storm breaks over the valley and rain floods the roads.",
         "This morning the harbour is still: the boats rest, and gulls wheel above the calm sea.")
PRICES_FILE = Path(__file__).resolve().parents[1] / "data" / "routing_prices.json"


@pytest.fixture(scope="module")
def plain_sim() -> Iterator[Process]:
    knobs = {"verifier-yes": {"content": ACCEPT}, "verifier-no": {"content": REJECT},
             "verifier-garbled": {"content": "Hard to say, really."}, "writer": {"content": WRITER},
             "slow": {"content": "#### 7", "latency_ms": 4000}, "broken": {"fault": "500"},
             "poet-a": {"content": POEMS[0]}, "poet-b": {"content": POEMS[1]}, "poet-c": {"content": POEMS[2]},
             "grouper": {"content": '{"groups": [[1, 3], [2]]}'}}
    process = scripted_simulator(knobs)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def gw(replay_sim: Process, plain_sim: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    plain = f"{plain_sim.url}/v1"
    sims = [priced_deployment(name, name, plain, 1e-06, 1e-06)
            for name in ("verifier-yes", "verifier-no", "verifier-garbled", "writer", "slow", "broken", "poet-a",
                         "poet-b", "poet-c", "grouper")]

    def verify(name: str, **block: object) -> dict:
        return {"model_name": name, "verify": {"generator": "mixtral", **block}}

    def consensus(name: str, **block: object) -> dict:
        return {"model_name": name, "consensus": {"members": ["mixtral", "gpt-4"], "min_agreement": 0.6, **block}}

    config = {
        "model_list": [
            *replayed_models(replay_sim), *sims,
            verify("checked", verifier="verifier-yes"),
            verify("checked-flag", verifier="verifier-no"),
            verify("checked-escalate", verifier="verifier-no", on_reject="escalate", escalate_to="gpt-4"),
            verify("checked-garbled", verifier="verifier-garbled"),
            verify("checked-broken", verifier="broken"),
            verify("checked-escalate-broken", verifier="verifier-no", on_reject="escalate", escalate_to="broken"),
            {"model_name": "checked-regenerate", "verify": {"generator": "writer", "verifier": "verifier-no",
                                                             "on_reject": "regenerate"}},
            consensus("agreed"),
            consensus("agreed-strict", on_disagreement="error"),
            consensus("agreed-escalate", on_disagreement="escalate", escalate_to="writer"),
            consensus("agreed-deadline", members=["mixtral", "gpt-4", "slow"], quorum=2, deadline=1),
            consensus("agreed-quorum", members=["slow", "mixtral"], quorum=2, deadline=0.5),
            consensus("poets", members=["poet-a", "poet-b", "poet-c"], judge="grouper"),
        ],
        "general_settings": {"master_key": MASTER_KEY},
    }
    process = start_gateway(tmp_path_factory.mktemp("verify"), config)
    yield process
    process.stop()


def _problems() -> tuple[list, list]:
    """Word problems both models answer alike (same final number), and ones where they differ."""
    alike, apart = [], []
    for record in load_records(SLICE):
        if record.task != "gsm8k":
            continue
        same = short_answer(record.models[WEAK].answer or "") == short_answer(record.models[STRONG].answer or "")
        (alike if same else apart).append(record)
    return alike, apart


def _ask(gw: Process, model: str, prompt: str, **extra):
    return client(gw).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], **extra)


def _requests(sim: Process, model: str) -> list[dict]:
    return [r for r in httpx.get(f"{sim.url}/_sim/requests", params={"limit": 200}).json()["data"]
            if r["body"].get("model") == model]


# -- verify ---------------------------------------------------------------------------------------
def test_an_accepted_answer_carries_its_verdict(gw: Process, plain_sim: Process):
    record = _problems()[0][0]
    raw = _client_system_prompt(gw, "checked", record.prompt)
    assert raw.headers["x-mmproxy-verdict"] == "accept" and raw.headers["x-mmproxy-verify-action"] == "none"
    body = orjson.loads(raw.content)
    assert body["choices"][0]["message"]["content"] == record.models[WEAK].answer
    assert body["x_mmproxy_verdict"]["verdict"] == "accept" and body["x_mmproxy_verdict"]["verifier"] == "verifier-yes"
    asked = _requests(plain_sim, "verifier-yes")[-1]["body"]
    assert asked["response_format"] == {"type": "json_object"}  # the provider offers JSON output
    seen = asked["messages"]
    assert seen[0] == {"role": "system", "content": VERIFIER_SYSTEM}
    assert record.prompt in seen[1]["content"] and record.models[WEAK].answer in seen[1]["content"]
    assert "APPLICATION SECRET" not in orjson.dumps(seen).decode()  # never the generator's context
    assert float(raw.headers["x-mmproxy-cost-usd"]) > costs([record], [WEAK], PRICES)[0][0]  # the verifier's too


def _client_system_prompt(gw: Process, model: str, prompt: str) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                      json={"model": model, "messages": [
                          {"role": "system", "content": "APPLICATION SECRET: be terse"},
                          {"role": "user", "content": prompt}]})


def test_a_rejected_answer_is_flagged_with_the_reasons(gw: Process):
    record = _problems()[0][1]
    raw = _ask(gw, "checked-flag", record.prompt)
    assert raw.headers["x-mmproxy-verdict"] == "reject" and raw.headers["x-mmproxy-verify-action"] == "flagged"
    assert raw.headers["x-mmproxy-verdict-reasons"] == "the total is wrong; it ignores the discount"
    assert raw.headers["x-mmproxy-verdict-severity"] == "high"
    assert raw.parse().choices[0].message.content == record.models[WEAK].answer


def test_a_rejected_answer_escalates_to_the_stronger_model(gw: Process):
    record = _problems()[0][2]
    raw = _ask(gw, "checked-escalate", record.prompt)
    assert raw.headers["x-mmproxy-verify-action"] == "escalated"
    assert raw.parse().choices[0].message.content == record.models[STRONG].answer
    spent = costs([record], [WEAK, STRONG], PRICES)[0]
    assert float(raw.headers["x-mmproxy-cost-usd"]) > spent[0] + spent[1]  # generator, verifier and escalation


def test_a_rejected_answer_is_regenerated_once_with_the_critique(gw: Process, plain_sim: Process):
    before = len(_requests(plain_sim, "writer"))
    raw = _ask(gw, "checked-regenerate", "What is six times seven?")
    assert raw.headers["x-mmproxy-verify-action"] == "regenerated"
    assert raw.headers["x-mmproxy-verdict"] == "reject"  # the second verdict, still a rejection here
    writer = _requests(plain_sim, "writer")
    assert len(writer) == before + 2
    second = writer[-1]["body"]["messages"]
    assert second[-2] == {"role": "assistant", "content": WRITER}
    assert "the total is wrong" in second[-1]["content"]


def test_a_malformed_verdict_leaves_the_answer_unverified(gw: Process):
    record = _problems()[0][3]
    raw = _ask(gw, "checked-garbled", record.prompt)
    assert raw.headers["x-mmproxy-verdict"] == "unverified" and raw.headers["x-mmproxy-verify-action"] == "none"
    assert raw.parse().choices[0].message.content == record.models[WEAK].answer


def test_an_answer_already_paid_for_survives_a_failing_verifier_or_escalation(gw: Process):
    record = _problems()[0][5]
    unverified = _ask(gw, "checked-broken", record.prompt)
    assert unverified.headers["x-mmproxy-verdict"] == "unverified"
    assert "verifier failed" in unverified.headers["x-mmproxy-verdict-reasons"]
    assert unverified.parse().choices[0].message.content == record.models[WEAK].answer
    kept = _ask(gw, "checked-escalate-broken", record.prompt)
    assert kept.headers["x-mmproxy-verify-action"] == "escalate_failed"
    assert kept.headers["x-mmproxy-verdict"] == "reject"
    assert kept.parse().choices[0].message.content == record.models[WEAK].answer


def test_the_anthropic_sdk_and_a_stream_get_the_verified_answer(gw: Process):
    record = _problems()[0][4]
    raw = ask_claude(gw, "checked", record.prompt)
    assert raw.headers["x-mmproxy-verdict"] == "accept"
    assert raw.parse().content[0].text == record.models[WEAK].answer
    assert orjson.loads(raw.http_response.content)["x_mmproxy_verdict"]["verdict"] == "accept"
    with client(gw).chat.completions.with_streaming_response.create(
            model="checked-escalate", stream=True, messages=[{"role": "user", "content": record.prompt}]) as stream:
        assert stream.headers["x-mmproxy-verify-action"] == "escalated"
        text = "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
    assert text == record.models[STRONG].answer
    answer = client(gw).responses.create(model="checked", input=record.prompt)
    assert answer.output_text == record.models[WEAK].answer


# -- consensus ------------------------------------------------------------------------------------
def test_models_that_agree_give_the_majority_answer(gw: Process):
    record = _problems()[0][0]
    raw = _ask(gw, "agreed", record.prompt)
    assert raw.headers["x-mmproxy-consensus-agreement"] == "1.000"
    assert raw.headers["x-mmproxy-consensus-answered"] == "2/2"
    body = orjson.loads(raw.content)
    votes = body["x_mmproxy_consensus"]["answers"]
    assert {v["model"] for v in votes} == {"mixtral", "gpt-4"} and all(v["agrees"] for v in votes)
    spent = costs([record], [WEAK, STRONG], PRICES)[0]
    assert float(raw.headers["x-mmproxy-cost-usd"]) == pytest.approx(spent[0] + spent[1], rel=1e-6)


def test_models_that_disagree_are_flagged_or_refused_or_escalated(gw: Process):
    record = _problems()[1][0]
    flagged = _ask(gw, "agreed", record.prompt)
    assert flagged.headers["x-mmproxy-consensus-agreement"] == "0.500"
    assert flagged.headers["x-mmproxy-consensus-action"] == "flagged"
    dissent = [v for v in orjson.loads(flagged.content)["x_mmproxy_consensus"]["answers"] if not v["agrees"]]
    assert len(dissent) == 1
    with pytest.raises(openai.APIStatusError) as refused:
        _ask(gw, "agreed-strict", record.prompt)
    assert refused.value.status_code == 409 and refused.value.code == "no_consensus"
    assert "mixtral" in str(refused.value) and "gpt-4" in str(refused.value)
    escalated = _ask(gw, "agreed-escalate", record.prompt)
    assert escalated.headers["x-mmproxy-consensus-action"] == "escalated"
    assert escalated.parse().choices[0].message.content == WRITER


def test_a_slow_member_is_left_out_once_the_quorum_has_answered(gw: Process):
    record = _problems()[0][1]
    raw = _ask(gw, "agreed-deadline", record.prompt)
    assert raw.headers["x-mmproxy-consensus-answered"] == "2/3"
    assert orjson.loads(raw.content)["x_mmproxy_consensus"]["missing"] == ["slow"]
    with pytest.raises(openai.APIStatusError) as short:
        _ask(gw, "agreed-quorum", record.prompt)
    assert short.value.status_code == 504 and short.value.code == "consensus_timeout"


def test_verify_eval_through_the_gateway_reproduces_the_offline_figures(gw: Process):
    done = subprocess.run([sys.executable, "-m", "mmproxy", "verify", "eval", str(SLICE), "--prices",
                           str(PRICES_FILE), "--members", WEAK, STRONG, "--gateway", gw.url, "--gateway-model",
                           "agreed", "--api-key", MASTER_KEY, "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    figures = orjson.loads(done.stdout)
    offline = {r["task"]: r for r in figures["offline"]}
    for row in figures["gateway"]:
        expected = offline[row["task"]]
        assert row["records"] == expected["records"]
        assert row["coverage"] == pytest.approx(expected["coverage"])
        assert row["selective_accuracy"] == pytest.approx(expected["selective_accuracy"])
        assert row["majority_accuracy"] == pytest.approx(expected["majority_accuracy"])
        assert row["cost"] == pytest.approx(expected["cost"], rel=1e-6)
    gsm8k = offline["gsm8k"]
    assert gsm8k["selective_accuracy"] > max(gsm8k["member_accuracy"].values())  # agreement is the signal


def test_a_consensus_answers_the_anthropic_sdk_and_the_responses_api(gw: Process):
    record = _problems()[0][2]
    raw = ask_claude(gw, "agreed", record.prompt)
    assert raw.headers["x-mmproxy-consensus-agreement"] == "1.000"
    majority = WEAK if raw.headers["x-mmproxy-consensus-majority"] == "mixtral" else STRONG
    assert raw.parse().content[0].text == record.models[majority].answer
    assert orjson.loads(raw.http_response.content)["x_mmproxy_consensus"]["agreement"] == 1.0
    with client(gw).responses.stream(model="agreed", input=record.prompt) as stream:
        final = stream.get_final_response()
    assert final.output_text == record.models[majority].answer and final.status == "completed"


def test_a_judge_groups_free_text_answers(gw: Process, plain_sim: Process):
    raw = _ask(gw, "poets", "Describe the weather by the sea this morning.")
    assert raw.headers["x-mmproxy-consensus-agreement"] == "0.667"
    assert raw.headers["x-mmproxy-consensus-majority"] == "poet-a"
    assert raw.parse().choices[0].message.content == POEMS[0]
    votes = orjson.loads(raw.content)["x_mmproxy_consensus"]["answers"]
    assert [v["agrees"] for v in votes] == [True, False, True]
    asked = _requests(plain_sim, "grouper")[-1]["body"]
    assert asked["response_format"] == {"type": "json_object"}
    assert all(p in asked["messages"][1]["content"] for p in POEMS)
