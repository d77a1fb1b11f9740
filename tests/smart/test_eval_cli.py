"""``mmproxy router eval`` on a slice of the routing records, with the shipped router and cascade, as a user
runs it: the table, the JSON and the cost-quality PNG."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

SLICE = Path(__file__).resolve().parents[1] / "data" / "routing_slice.jsonl"


def _eval(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmproxy", "router", "eval", str(SLICE), *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    plot = tmp_path_factory.mktemp("eval") / "curves.png"
    done = _eval("--json", "--plot", str(plot))
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout), plot


def test_every_task_is_scored_with_its_baselines(report):
    tasks, _ = report
    assert {t["task"] for t in tasks} == {"gsm8k", "mmlu", "mt-bench", "all"}
    for task in tasks:
        rows = {row["policy"]: row for row in task["policies"]}
        singles = [row for name, row in rows.items() if name.startswith("only ")]
        assert len(singles) == 2
        assert rows["oracle"]["quality"] >= max(s["quality"] for s in singles)
        assert rows["oracle"]["cost"] <= max(s["cost"] for s in singles)
        assert rows["random (50% strongest)"]["apgr"] == pytest.approx(0.5)
        router = rows["learned router (operating point)"]
        assert 0.0 <= router["strong_share"] <= 1.0
        assert router["cost_per_success"] == pytest.approx(router["cost"] / router["quality"])
        assert set(rows["learned router (sweep)"]["saving"]) == {"50%", "80%", "95%"}
    gsm8k = next(t for t in tasks if t["task"] == "gsm8k")
    assert any(row["policy"].startswith("cascade") for row in gsm8k["policies"])  # its records hold answers
    mmlu = next(t for t in tasks if t["task"] == "mmlu")
    assert not any(row["policy"].startswith("cascade") for row in mmlu["policies"])  # correctness only


def test_the_plot_is_a_png(report):
    _, plot = report
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_table_and_a_bad_records_file(tmp_path: Path):
    done = _eval("--part", "check", "--cost-weight", "0.2")
    assert done.returncode == 0, done.stderr
    assert "learned router (operating point)" in done.stdout and "APGR" in done.stdout
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "x"}\n')
    failed = subprocess.run([sys.executable, "-m", "mmproxy", "router", "eval", str(broken)],
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and "line 1" in failed.stderr
