"""Review by personas as a virtual model, end to end: reviewers on the simulator (one structured, one in prose,
one failing) → one merged report, as text and as JSON, through both SDKs."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from mmproxy.pipeline.reviewing import PROMPTS
from tests.conftest import MASTER_KEY, Process, priced_deployment, start_gateway
from tests.smart.conftest import claude, client, scripted_simulator

FINDINGS = {"findings": [
    {"severity": "low", "title": "verbose error", "detail": "The error names the table.", "location": "login()"},
    {"severity": "critical", "title": "SQL injection", "detail": "The query concatenates user input.",
     "location": "line 3"}]}
CODE = "def login(user):\n    return db.execute(\"SELECT * FROM users WHERE name = '\" + user + \"'\")"


@pytest.fixture(scope="module")
def sim() -> Iterator[Process]:
    knobs = {"sec-model": {"content": "Here you go:\n```json\n" + orjson.dumps(FINDINGS).decode() + "\n```"},
             "perf-model": {"content": "Looks fine to me, nothing slow."}, "arch-model": {"fault": "500"}}
    process = scripted_simulator(knobs)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def gw(sim: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    base = f"{sim.url}/v1"
    config = {
        "model_list": [
            *(priced_deployment(m, m, base, 1e-06, 2e-06) for m in ("sec-model", "perf-model", "arch-model")),
            {"model_name": "reviewed", "review": {"personas": [
                {"name": "security", "model": "sec-model"},
                {"name": "performance", "model": "perf-model"},
                {"name": "architecture", "model": "arch-model"}]}},
        ],
        "general_settings": {"master_key": MASTER_KEY},
    }
    process = start_gateway(tmp_path_factory.mktemp("review"), config)
    yield process
    process.stop()


def test_the_personas_findings_are_merged_highest_severity_first(gw: Process, sim: Process):
    response = httpx.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                          json={"model": "reviewed", "messages": [
                              {"role": "system", "content": "APP SECRET"},
                              {"role": "user", "content": f"Review this:\n{CODE}"}]})
    assert response.status_code == 200, response.text
    body = response.json()
    report = body["x_mmproxy_review"]
    assert [f["severity"] for f in report["findings"]] == ["critical", "low", "info"]
    first = report["findings"][0]
    assert (first["persona"], first["model"], first["location"]) == ("security", "sec-model", "line 3")
    assert report["findings"][2]["detail"] == "Looks fine to me, nothing slow."  # prose kept as one finding
    assert report["missing"] == ["architecture"]
    text = body["choices"][0]["message"]["content"]
    assert text.splitlines()[1].startswith("- [critical] security (sec-model): SQL injection (line 3)")
    assert "No review from: architecture." in text
    assert response.headers["x-mmproxy-review-findings"] == "critical=1,low=1,info=1"
    assert response.headers["x-mmproxy-review-missing"] == "architecture"
    assert float(response.headers["x-mmproxy-cost-usd"]) > 0
    seen = [r for r in httpx.get(f"{sim.url}/_sim/requests", params={"limit": 20}).json()["data"]
            if r["body"].get("model") == "sec-model"][-1]["body"]["messages"]
    assert seen[0]["role"] == "system" and seen[0]["content"].startswith(PROMPTS["security"])
    assert "APP SECRET" not in orjson.dumps(seen).decode() and CODE in seen[1]["content"]


def test_every_api_gets_the_same_report_whole_and_streamed(gw: Process):
    messages = claude(gw).messages
    message = messages.create(model="reviewed", max_tokens=500, messages=[{"role": "user", "content": CODE}])
    assert message.content[0].text.startswith("Review by security, performance, architecture: 3 findings.")
    with messages.stream(model="reviewed", max_tokens=500, messages=[{"role": "user", "content": CODE}]) as stream:
        assert "".join(stream.text_stream) == message.content[0].text
    chat = client(gw).chat.completions.create(model="reviewed", messages=[{"role": "user", "content": CODE}])
    assert chat.choices[0].message.content == message.content[0].text
    assert client(gw).responses.create(model="reviewed", input=CODE).output_text == message.content[0].text
