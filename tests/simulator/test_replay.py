"""The simulator's replay upstream: recorded answers of the requested model, through the real gateway and SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from mmproxy import tokens
from mmproxy.simulator.replay import Replay, ReplayError
from tests.conftest import MASTER_KEY, Process, priced_deployment, start_gateway, start_replay

RECORDS = Path(__file__).resolve().parents[1] / "data" / "routing_records.jsonl"
STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"


def _records() -> list[dict]:
    return [orjson.loads(line) for line in RECORDS.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def replay_sim() -> Iterator[Process]:
    process = start_replay(RECORDS)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def gw(replay_sim: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    base = f"{replay_sim.url}/v1"
    config = {
        "model_list": [priced_deployment("strong", STRONG, base, 1e-05, 3e-05),
                       priced_deployment("weak", WEAK, base, 6e-07, 6e-07)],
        "general_settings": {"master_key": MASTER_KEY},
    }
    process = start_gateway(tmp_path_factory.mktemp("replay"), config)
    yield process
    process.stop()


@pytest.mark.parametrize(("model", "recorded"), [("strong", STRONG), ("weak", WEAK)])
def test_each_model_answers_what_it_answered_with_usage_from_the_texts(gw: Process, model: str, recorded: str):
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)
    for record in _records():
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": record["prompt"]}])
        completion = raw.parse()
        answer = record["models"][recorded]["answer"]
        assert completion.choices[0].message.content == answer
        assert completion.usage.prompt_tokens == tokens.count(record["prompt"].strip())
        assert completion.usage.completion_tokens == tokens.count(answer)
        assert float(raw.headers["x-mmproxy-cost-usd"]) > 0


def test_a_stream_replays_the_same_answer(gw: Process):
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)
    record = _records()[0]
    stream = client.chat.completions.create(model="weak", stream=True,
                                            messages=[{"role": "user", "content": record["prompt"]}])
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == record["models"][WEAK]["answer"]


def test_a_prompt_without_a_recorded_answer_is_an_error_naming_the_model(gw: Process):
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="strong", messages=[{"role": "user", "content": "never recorded"}])
    assert STRONG in str(caught.value)
    health = orjson.loads(httpx.get(f"{gw.url}/health", headers={"Authorization": f"Bearer {MASTER_KEY}"}).content)
    assert health["unhealthy_count"] == 0  # the request's fault: no cooldown


def test_a_malformed_records_file_names_the_line(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "q", "models": {"m": {"answer": "a"}}}\n{"prompt": "no models"}\n')
    with pytest.raises(ReplayError, match="line 2"):
        Replay.load(path)
    assert Replay.load(RECORDS).answer(WEAK, "  " + _records()[1]["prompt"] + "\n") == \
        _records()[1]["models"][WEAK]["answer"]
