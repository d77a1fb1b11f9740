"""Routing records: per prompt, what each model answered and how good it was (the format of the project's routing
data, ``tests/data/routing_records.jsonl``), with prices to turn answers into cost.

Cost of a call is counted the way the gateway prices a replayed answer: the prompt's and the answer's tokens by
the gateway's own tokenizer times the model's per-token prices. A record without an answer (RouteLLM's MMLU keeps
correctness only) costs its prompt alone, offline and through the replay alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from mmproxy import tokens


class RecordsError(ValueError):
    """A records or prices file cannot be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Outcome:
    answer: str | None
    quality: float  # in [0, 1]: 1/0 for right/wrong; a 1-10 judge score divided by 10


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    task: str
    prompt: str
    models: dict[str, Outcome]


@dataclass(frozen=True, slots=True)
class Price:
    input: float  # USD per token
    output: float


def load_records(path: str | Path) -> list[Record]:
    records: list[Record] = []
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise RecordsError(f"{path}: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = orjson.loads(line)
            models = {name: Outcome(m.get("answer"), _quality(m)) for name, m in raw["models"].items()}
            records.append(Record(str(raw["id"]), str(raw.get("task") or ""), str(raw["prompt"]), models))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError):
            raise RecordsError(f"{path}, line {number}: expected a routing record with id, prompt and "
                               "models: {name: {correct or score, answer}}") from None
    return records


def _quality(outcome: dict[str, object]) -> float:
    correct = outcome.get("correct")
    if isinstance(correct, bool):
        return float(correct)
    score = outcome.get("score")
    if isinstance(score, (int, float)):
        return float(score) if score <= 1 else float(score) / 10
    raise ValueError("no correct or score")


def in_first_part(record_id: str, share: float, salt: str = "fit") -> bool:
    """A deterministic split by prompt id: the same id always lands on the same side (sha256 of ``salt:id``)."""
    digest = hashlib.sha256(f"{salt}:{record_id}".encode()).hexdigest()
    return int(digest[:8], 16) % 10_000 < share * 10_000


def split(records: Sequence[Record], share: float = 0.7, salt: str = "fit") -> tuple[list[Record], list[Record]]:
    """(fit, check): ``share`` of the prompts to fit on, the rest to check on, by ``in_first_part``."""
    fit: list[Record] = []
    check: list[Record] = []
    for record in records:
        (fit if in_first_part(record.id, share, salt) else check).append(record)
    return fit, check


def load_prices(path: str | Path) -> dict[str, Price]:
    """Prices per model from a ``models.json`` (USD per 1M input / output tokens)."""
    try:
        raw = orjson.loads(Path(path).read_bytes())
        return {name: Price(float(p["input_usd_per_1m"]) / 1e6, float(p["output_usd_per_1m"]) / 1e6)
                for name, p in raw.items() if not name.startswith("_")}
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RecordsError(f"{path}: expected {{model: {{input_usd_per_1m, output_usd_per_1m}}}} ({exc})") from None


def costs(records: Iterable[Record], models: Sequence[str], prices: dict[str, Price]) -> list[list[float]]:
    """Per record, the USD cost of asking each of ``models``."""
    out = []
    for record in records:
        prompt = tokens.count(record.prompt)
        row = []
        for name in models:
            price = prices[name]
            answer = record.models[name].answer
            row.append(prompt * price.input + tokens.count(answer or "") * price.output)
        out.append(row)
    return out
