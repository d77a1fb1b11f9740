"""What the learned-routing tests share: the records slice, its two models and their prices, a replay of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest

from mmproxy.smart.records import Price
from tests.conftest import MASTER_KEY, Process, priced_deployment, start_process, start_replay

SLICE = Path(__file__).resolve().parents[1] / "data" / "routing_slice.jsonl"
SHIPPED = Path(__file__).resolve().parents[2] / "python" / "mmproxy" / "data" / "smart"
WEAK, STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
PRICES = {WEAK: Price(2.4e-07, 2.4e-07), STRONG: Price(1e-05, 3e-05)}  # models.json's


@pytest.fixture(scope="module")
def replay_sim() -> Iterator[Process]:
    process = start_replay(SLICE)
    yield process
    process.stop()


def scripted_simulator(knobs: dict[str, dict]) -> Process:
    """A simulator whose models answer as ``knobs`` script them (fixed content, faults, latency) and at once
    otherwise: the judges, verifiers and reviewers of these tests."""
    return start_process(["mmproxy.simulator", "--host", "127.0.0.1", "--port", "0", "--latency-ms", "0",
                          "--model-knobs", orjson.dumps(knobs).decode()])


def replayed_models(replay_sim: Process) -> list[dict]:
    """``mixtral`` and ``gpt-4`` on the replay, at their prices."""
    base = f"{replay_sim.url}/v1"
    return [priced_deployment("mixtral", WEAK, base, PRICES[WEAK].input, PRICES[WEAK].output),
            priced_deployment("gpt-4", STRONG, base, PRICES[STRONG].input, PRICES[STRONG].output)]


def client(gw: Process) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)


def claude(gw: Process) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0)


def ask_claude(gw: Process, model: str, prompt: str) -> Any:
    """``prompt`` to ``model`` through the Anthropic SDK's Messages API: the raw response (headers, parse())."""
    return claude(gw).messages.with_raw_response.create(model=model, max_tokens=1024,
                                                        messages=[{"role": "user", "content": prompt}])
