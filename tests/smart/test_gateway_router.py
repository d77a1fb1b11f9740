"""A learned router as a virtual model, end to end: the openai SDK → the gateway → the replay upstream, with the
shipped router model. What the gateway decides must be what ``mmproxy router eval`` evaluates offline."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import orjson
import pytest

from mmproxy.cache.embedder import LocalEmbedder
from mmproxy.smart.features import prompt_matrix
from mmproxy.smart.model import QualityModel
from mmproxy.smart.records import costs, load_records
from mmproxy.smart.router import LearnedRouter
from mmproxy.tokens import count
from tests.conftest import MASTER_KEY, Process, start_gateway
from tests.smart.conftest import PRICES, SHIPPED, SLICE, STRONG, WEAK, ask_claude, client, replayed_models

COST_WEIGHT = 0.1


@pytest.fixture(scope="module")
def gw(replay_sim: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    config = {
        "model_list": [
            *replayed_models(replay_sim),
            {"model_name": "smart", "router": {"candidates": ["mixtral", "gpt-4"], "cost_weight": COST_WEIGHT}},
            {"model_name": "smart-share", "router": {"candidates": ["gpt-4", "mixtral"], "strong_share": 0.2}},
            # for router eval --gateway only: its calibration starts where the offline evaluation's does
            {"model_name": "smart-eval", "router": {"candidates": ["mixtral", "gpt-4"], "strong_share": 0.4}},
        ],
        "general_settings": {"master_key": MASTER_KEY},
    }
    process = start_gateway(tmp_path_factory.mktemp("smart"), config)
    yield process
    process.stop()


def test_the_gateway_decides_what_the_offline_evaluation_decides(gw: Process):
    records = load_records(SLICE)
    openai_client = client(gw)
    chosen, charged = [], []
    for record in records:
        raw = openai_client.chat.completions.with_raw_response.create(
            model="smart", messages=[{"role": "user", "content": record.prompt}])
        group = raw.headers["x-mmproxy-router-choice"]
        model = WEAK if group == "mixtral" else STRONG
        assert raw.parse().choices[0].message.content == (record.models[model].answer or "")
        assert raw.headers["x-mmproxy-router-scores"].startswith("mixtral=")
        chosen.append(0 if group == "mixtral" else 1)
        charged.append(float(raw.headers["x-mmproxy-cost-usd"]) if "x-mmproxy-cost-usd" in raw.headers else 0.0)

    embedder = LocalEmbedder()
    try:
        vectors, cheap = prompt_matrix(embedder, [r.prompt for r in records])
    finally:
        embedder.close()
    model = QualityModel.load(SHIPPED / "router.npz")
    router = LearnedRouter(model, [model.candidates.index(WEAK), model.candidates.index(STRONG)],
                           np.array([2.4e-07, 1e-05]), np.array([2.4e-07, 3e-05]), cost_weight=COST_WEIGHT)
    offline = [router.route(vectors[i], cheap[i], count(r.prompt)).decision.index for i, r in enumerate(records)]
    assert chosen == offline
    assert 0 < sum(chosen) < len(chosen)  # both models are used on this slice
    expected = costs(records, [WEAK, STRONG], PRICES)
    assert sum(charged) == pytest.approx(sum(row[i] for row, i in zip(expected, chosen, strict=True)), rel=1e-6)


def test_the_decision_reaches_the_ledger(gw: Process):
    record = load_records(SLICE)[0]
    raw = client(gw).chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": record.prompt}])
    request_id = raw.headers["x-mmproxy-request-id"]
    rows = httpx.get(f"{gw.url}/spend/logs", params={"request_id": request_id},
                     headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()
    decision = orjson.loads(rows[0]["decision"])
    assert decision["router"] == "smart"
    assert decision["choice"] == raw.headers["x-mmproxy-router-choice"] == rows[0]["model_group"]
    assert set(decision["scores"]) == {"mixtral", "gpt-4"}
    assert decision["cost_weight"] == COST_WEIGHT


def test_strong_share_keeps_the_strongest_models_share_near_the_target(gw: Process):
    openai_client = client(gw)
    picks = []
    for record in load_records(SLICE):
        raw = openai_client.chat.completions.with_raw_response.create(
            model="smart-share", messages=[{"role": "user", "content": record.prompt}])
        picks.append(raw.headers["x-mmproxy-router-choice"])
    share = picks.count("gpt-4") / len(picks)
    assert 0.05 <= share <= 0.4  # 0.2 asked; calibrated on the training prompts, then on these 100


def test_learned_routers_are_listed_and_route_chat_only(gw: Process):
    openai_client = client(gw)
    assert {"smart", "smart-share", "mixtral", "gpt-4"} <= {m.id for m in openai_client.models.list()}
    with pytest.raises(openai.BadRequestError):
        openai_client.embeddings.create(model="smart", input="hello")


def test_a_stream_through_a_learned_router_carries_the_decision(gw: Process):
    record = load_records(SLICE)[0]
    with client(gw).chat.completions.with_streaming_response.create(
            model="smart", stream=True, messages=[{"role": "user", "content": record.prompt}]) as response:
        assert response.headers["x-mmproxy-router-choice"] in ("mixtral", "gpt-4")
        text = "".join(chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices)
    model = WEAK if response.headers["x-mmproxy-router-choice"] == "mixtral" else STRONG
    assert text == record.models[model].answer



def test_router_eval_through_the_gateway_reproduces_the_offline_figures(gw: Process):
    """With strong_share, the calibration moves request by request: the gateway follows it exactly."""
    done = subprocess.run([sys.executable, "-m", "mmproxy", "router", "eval", str(SLICE), "--json", "--cascade",
                           "none", "--strong-share", "0.4", "--gateway", gw.url, "--gateway-model", "smart-eval",
                           "--api-key", MASTER_KEY], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for task in orjson.loads(done.stdout):
        rows = {row["policy"]: row for row in task["policies"]}
        offline, online = rows["learned router (operating point)"], rows["smart-eval through the gateway"]
        assert online["quality"] == pytest.approx(offline["quality"])
        assert online["cost"] == pytest.approx(offline["cost"], rel=1e-6)
        assert online["strong_share"] == pytest.approx(offline["strong_share"])


def test_the_anthropic_sdk_and_the_responses_api_are_routed_too(gw: Process):
    record = load_records(SLICE)[1]
    raw = ask_claude(gw, "smart", record.prompt)
    model = WEAK if raw.headers["x-mmproxy-router-choice"] == "mixtral" else STRONG
    assert raw.parse().content[0].text == record.models[model].answer
    answer = client(gw).responses.with_raw_response.create(model="smart", input=record.prompt)
    assert answer.headers["x-mmproxy-router-choice"] == raw.headers["x-mmproxy-router-choice"]
    assert answer.parse().output_text == record.models[model].answer
