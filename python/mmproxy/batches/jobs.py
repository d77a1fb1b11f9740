"""Gateway batches: the id mapping to the upstream batch, and collecting its results once it completes.

A job is one JSON file per batch beside the gateway's files, so any worker can answer for any batch. The
results are collected exactly once per process (a lock per batch) and the job remembers it, so a batch's
lines reach the ledger once however often the client polls.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from mmproxy.batches.files import FileStore, write_atomic

_ID = re.compile(r"batch_[0-9a-f]{24}")


@dataclass(slots=True)
class Job:
    id: str
    owner: str  # the scope that may see it: "master" or "key:<hash>"
    key: dict[str, str | None]  # key_hash, key_alias, team_id for the ledger rows
    model: str  # the client's model name
    deployment: str  # model_info.id of the deployment running it
    upstream_id: str
    input_file_id: str
    metadata: dict[str, Any] | None
    created_at: int
    batch: dict[str, Any]  # the upstream's batch object as last seen
    output_file_id: str | None = None
    error_file_id: str | None = None
    collected: bool = False
    api: str = "openai"  # the API the client created it through: "openai" (Batch) or "anthropic" (Message Batches)
    custom_ids: list[str] | None = None  # the requests' ids in order (Gemini answers by position)

    def view(self) -> dict[str, Any]:
        """The batch object the client sees: the upstream's state under the gateway's ids."""
        return {**self.batch, "id": self.id, "input_file_id": self.input_file_id, "metadata": self.metadata,
                "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
                "created_at": self.created_at}


def new_id() -> str:
    return f"batch_{secrets.token_hex(12)}"


class JobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, job: Job) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.root / f"{job.id}.json", orjson.dumps(asdict(job)))

    def get(self, batch_id: str) -> Job | None:
        if not _ID.fullmatch(batch_id):
            return None
        try:
            return Job(**orjson.loads((self.root / f"{batch_id}.json").read_bytes()))
        except FileNotFoundError:
            return None

    def all(self) -> list[Job]:
        """Every job, newest first (listing reads each file: fine for the hundreds a gateway keeps)."""
        jobs = [Job(**orjson.loads(path.read_bytes())) for path in self.root.glob("batch_*.json")]
        return sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)


def rename_model(lines: list[dict[str, Any]], model: str) -> bytes:
    """Output lines as JSONL with each answer's ``model`` set back to the client's model name."""
    for line in lines:
        response = line.get("response")
        body = response.get("body") if isinstance(response, dict) else None
        if isinstance(body, dict) and "model" in body:
            body["model"] = model
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def store_results(job: Job, files: FileStore, output: list[dict[str, Any]], errors: list[dict[str, Any]]) -> None:
    """Keep the renamed output and error lines as the client's files and mark the job collected."""
    for name, lines in (("output_file_id", output), ("error_file_id", errors)):
        if lines:
            obj = files.add(job.owner, rename_model(lines, job.model), f"{job.id}_{name[:-8]}.jsonl", "batch_output")
            setattr(job, name, obj["id"])
    job.collected = True
