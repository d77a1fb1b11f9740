"""Recorded model answers, replayed: the simulator answers a chat request with what the requested model really
answered to that prompt, from a file of routing records (the format of the project's routing data: one JSON
object a line with ``prompt`` and ``models: {name: {answer, correct, score}}``).

So routers and cascades run end to end through the real gateway with real answers and no provider calls. A
deployment maps to a record's model name through its upstream model name (``openai/gpt-4-1106-preview``).
Usage is counted from the texts with the gateway's own tokenizer, so prices follow the answers' real lengths.
"""

from __future__ import annotations

from pathlib import Path

import orjson


class ReplayError(ValueError):
    """The records file cannot be read; the message names the line."""


class Replay:
    def __init__(self, answers: dict[str, dict[str, str]]) -> None:
        self._answers = answers  # prompt text (stripped) -> model name -> its recorded answer

    @classmethod
    def load(cls, path: str | Path) -> Replay:
        answers: dict[str, dict[str, str]] = {}
        try:
            lines = Path(path).read_bytes().splitlines()
        except OSError as exc:
            raise ReplayError(f"--replay {path}: {exc.strerror or exc}") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
                prompt, models = record["prompt"], record["models"]
                if not isinstance(prompt, str) or not isinstance(models, dict):
                    raise TypeError
                # A record without an answer (RouteLLM's MMLU keeps correctness only) replays an empty one.
                answers[prompt.strip()] = {name: str(model.get("answer") or "") for name, model in models.items()}
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                raise ReplayError(f"--replay {path}, line {number}: expected a JSON object with a prompt and "
                                  "models: {name: {answer, ...}}") from None
        return cls(answers)

    def __len__(self) -> int:
        return len(self._answers)

    def answer(self, model: str, prompt: str) -> str | None:
        """What ``model`` answered to ``prompt`` (the last user message's text), or None when not recorded."""
        recorded = self._answers.get(prompt.strip())
        return None if recorded is None else recorded.get(model)
