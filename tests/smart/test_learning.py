"""A learned router learning from its own traffic: prompt features kept in the ledger (never the text), answers
rated through /v1/feedback, the model retrained in the running gateway and by `mmproxy router train --base`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from mmproxy.smart.feedback import decode_features
from mmproxy.smart.model import QualityModel
from mmproxy.smart.records import load_records
from tests.conftest import MASTER_KEY, Process, poll, start_gateway
from tests.smart.conftest import SHIPPED, SLICE, STRONG, WEAK, client, replayed_models

RATED = 30


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("learn")


@pytest.fixture(scope="module")
def gw(replay_sim: Process, workdir: Path) -> Iterator[Process]:
    config = {
        "model_list": [*replayed_models(replay_sim), {"model_name": "smart", "router": {
            "candidates": ["mixtral", "gpt-4"], "strong_share": 0.5, "learn": True, "retrain_every": 0.5,
            "retrain_min": RATED}}],
        "general_settings": {"master_key": MASTER_KEY},
    }
    process = start_gateway(workdir, config)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def rated(gw: Process) -> list[str]:
    """Thirty routed requests, each rated with the recorded outcome of the model that answered."""
    ids = []
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    for record in load_records(SLICE)[:RATED]:
        raw = client(gw).chat.completions.with_raw_response.create(
            model="smart", messages=[{"role": "user", "content": record.prompt}])
        model = WEAK if raw.headers["x-mmproxy-router-choice"] == "mixtral" else STRONG
        request_id = raw.headers["x-mmproxy-request-id"]
        stored = httpx.post(f"{gw.url}/v1/feedback", headers=admin,
                            json={"request_id": request_id, "score": record.models[model].quality})
        assert stored.status_code == 200, stored.text
        ids.append(request_id)
    return ids


def test_the_ledger_keeps_the_prompts_features_not_its_text(gw: Process, rated: list[str]):
    row = httpx.get(f"{gw.url}/spend/logs", params={"request_id": rated[0]},
                    headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()[0]
    decision = orjson.loads(row["decision"])
    vector, cheap = decode_features(decision["features"], 384)
    assert vector.shape == (384,) and cheap.shape == (14,)
    assert abs(float((vector ** 2).sum()) - 1.0) < 0.01  # the unit-length embedding
    assert decision["learned_as"] in (WEAK, STRONG)
    assert load_records(SLICE)[0].prompt[:30] not in row["decision"]


def test_the_gateway_retrains_on_rated_requests(gw: Process, rated: list[str]):
    line = poll(lambda: next((x for x in gw.output if "router smart:" in x and "retrained on" in x), None),
                lambda found: found is not None, within=60)
    assert f"retrained on {RATED} rated requests" in line
    assert ("switched to" in line) or ("kept the model in use" in line)


def test_router_train_extends_a_model_with_the_rated_requests(gw: Process, rated: list[str], workdir: Path):
    out = workdir / "extended.npz"
    done = subprocess.run([sys.executable, "-m", "mmproxy", "router", "train", "--base", str(SHIPPED / "router.npz"),
                           "--ledger", f"sqlite:///{workdir / 'mmproxy.db'}", "--router", "smart", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{RATED} rated requests" in done.stdout
    base, extended = QualityModel.load(SHIPPED / "router.npz"), QualityModel.load(out)
    assert len(extended.data) == len(base.data) + RATED
    assert extended.meta["rated_requests"] == RATED and len(extended.meta["reference"]) == len(extended.data)
    # each rated request is known for the answering model only
    assert (extended.data.known[-RATED:].sum(axis=1) == 1).all()


def test_train_without_rated_features_says_what_to_do(workdir: Path):
    done = subprocess.run([sys.executable, "-m", "mmproxy", "router", "train", "--base", str(SHIPPED / "router.npz"),
                           "--ledger", f"sqlite:///{workdir / 'empty.db'}", "--router", "smart", "--out",
                           str(workdir / "x.npz")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "learn: true" in done.stderr
