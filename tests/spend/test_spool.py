"""Ledger rows on disk until the database has them: the spool's segments, and a gateway killed with SIGKILL under
load that loses no row."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest

from mmproxy.db import open_database
from mmproxy.spend import spool as spool_module
from mmproxy.spend.ledger import INTERRUPTED, Ledger
from mmproxy.spend.spool import Spool
from tests.conftest import MASTER_KEY, Process, gateway_config, start_gateway
from tests.db.test_db import record


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_rows_of_a_dead_process_are_recovered_once_committed_gone(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 60)  # two rows per segment
    first = Spool(tmp_path, "ledger-0")
    assert first.recover() == []
    segments = [first.append((f"req-{i}", 1.5, None, True)) for i in range(10)]
    assert len(set(segments)) > 2  # rotated
    first.committed(segments[:3])  # the first rows reached the database
    # The process dies here (no close): a half-written line is all the kernel got of the next row.
    with open(tmp_path / f"ledger-0.{segments[-1]}.spool", "ab") as f:
        f.write(b'["req-cut", 1.')
    second = Spool(tmp_path, "ledger-0")
    recovered = second.recover()
    ids = [row[0] for _, row in recovered]
    assert ids[-7:] == [f"req-{i}" for i in range(3, 10)]  # every row not known to be committed, in order
    assert set(ids) <= {f"req-{i}" for i in range(10)}  # rows of a segment only partly committed may come again
    assert recovered[-1][1] == ("req-9", 1.5, None, True)
    second.committed([segment for segment, _ in recovered])
    second.close()
    assert _files(tmp_path) == []  # everything committed: no segment left


def test_other_workers_segments_are_not_touched(tmp_path: Path):
    mine, other = Spool(tmp_path, "ledger-0"), Spool(tmp_path, "ledger-1")
    mine.recover()
    other.recover()
    other.append(("theirs",))
    mine.close()
    assert Spool(tmp_path, "ledger-0").recover() == []
    assert [row for _, row in Spool(tmp_path, "ledger-1").recover()] == [("theirs",)]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_gateway_killed_under_load_loses_no_ledger_row(simulator: Process, tmp_path: Path, workers: str):
    config = gateway_config(simulator.url)
    gw = start_gateway(tmp_path, config, "--workers", workers)

    async def load() -> list[str]:
        client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)
        ids: list[str] = []

        async def one() -> None:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hello"}])
            ids.append(raw.headers["x-mmproxy-request-id"])

        await asyncio.gather(*(one() for _ in range(400)))
        return ids

    answered = asyncio.run(load())
    pid = gw.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    gw.proc.kill()  # the supervisor first, or it would start new workers in place of the killed ones
    for child in children:
        os.kill(int(child), signal.SIGKILL)
    gw.proc.wait()
    again = start_gateway(tmp_path, config, "--workers", workers)
    try:
        admin = {"Authorization": f"Bearer {MASTER_KEY}"}
        deadline = time.monotonic() + 20
        stored: set[str] = set()
        while time.monotonic() < deadline:
            rows = httpx.get(f"{again.url}/spend/logs", params={"limit": 1000}, headers=admin).json()
            stored = {r["request_id"] for r in rows}
            if set(answered) <= stored:
                break
            time.sleep(0.2)
        assert set(answered) <= stored
    finally:
        again.stop()


async def test_a_stream_cut_by_a_dead_process_keeps_a_row_and_one_that_ended_keeps_its_own(tmp_path: Path):
    db = open_database(f"sqlite://{tmp_path / 'mmproxy.db'}", tmp_path / "unused.db")
    await db.start()
    first = Ledger(db, Spool(tmp_path / "spool", "ledger-0"), flush_interval=60)
    await first.start()
    ended, cut = record("ended", stream=True), record("cut", stream=True)
    first.begin(ended)  # both streams' headers leave
    first.begin(cut)
    ended.completion_tokens, ended.cost_usd = 20, 0.002
    first.record(ended)  # one ends; the process dies before the other does, and before any batch went out
    await asyncio.sleep(0)  # the end of the event loop's turn: the spool's write
    second = Ledger(db, Spool(tmp_path / "spool", "ledger-0"))
    await second.start()
    await second.close()
    rows = {row["request_id"]: row for row in await db.spend_logs()}
    assert set(rows) == {"ended", "cut"}
    assert (rows["ended"]["error_code"], rows["ended"]["cost_usd"]) == (None, 0.002)  # its final row, not the first
    assert (rows["cut"]["status"], rows["cut"]["error_code"]) == (200, INTERRUPTED)
    assert _files(tmp_path / "spool") == []  # every row committed: no segment left
    await first.close(timeout=0)
    await db.close()
