"""``mmproxy bench`` end to end: the real command against the real simulator, directly and through a gateway.

Each run is a second or less of load; the figures are checked against what the simulator itself counted
and sent, so a generator that loses, double-counts or mis-times requests fails here.
"""

from __future__ import annotations

import base64
import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mmproxy.cli import main
from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, SimControl

DIST_KEYS = {"p50", "p90", "p99", "max", "mean", "n"}


def bench(tmp_path: Path, url: str, *args: str, key: str | None = UPSTREAM_KEY, expect: int = 0
          ) -> tuple[dict[str, Any], str]:
    """Run ``mmproxy bench`` with --json; returns the document and stdout+stderr (checked free of the key)."""
    out = tmp_path / f"bench-{len(list(tmp_path.iterdir()))}.json"
    argv = [sys.executable, "-m", "mmproxy", "bench", url, "--json", str(out), "--warmup", "0", *args]
    if key is not None:
        argv += ["--api-key", key]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == expect, output
    text = out.read_text()
    for secret in (UPSTREAM_KEY, MASTER_KEY):
        assert secret not in output and secret not in text
    return json.loads(text), proc.stdout


def test_non_stream_counts_match_the_simulator(simulator: Process, sim: SimControl, tmp_path: Path) -> None:
    doc, stdout = bench(tmp_path, simulator.url, "--model", "bench-ns", "-c", "4", "-n", "120", "--simulator",
                        "--output-tokens", "30", "--input-tokens", "64")
    [run] = doc["runs"]
    assert run["load"] == {"concurrency": 4} and not run["probe"]
    assert run["requests"] == 120 and run["errors"] == 0 and run["errors_by_class"] == {}
    # Every request written reached the simulator (the drain's too), and each carried the asked length back.
    assert sim.stats()["by_model"]["bench-ns"] == run["sent_total"] >= 120
    assert run["output_tokens"] == 30 * 120
    assert run["latency_ms"].keys() == DIST_KEYS and run["latency_ms"]["n"] == 120
    lat = run["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert run["req_s"] == pytest.approx(120 / run["elapsed_s"])
    assert run["ttft_ms"] is None and run["itl_ms"] is None  # not streamed
    assert run["overhead_ms"] is None  # no gateway in between
    body = sim.last()["body"]
    assert body["max_tokens"] == 30 and body["sim"] == {"tokens": 30, "chunks": 0}
    assert doc["targets"][0]["endpoint"].endswith("/v1/chat/completions")
    assert "api_key" not in doc["settings"]
    assert re.search(r"A c=4: 120 ok .* req/s", stdout) and "latency ms" in stdout


def test_stream_through_the_gateway(gateway: Process, sim: SimControl, tmp_path: Path) -> None:
    doc, stdout = bench(tmp_path, gateway.url, "--model", "mini", "-c", "8", "-n", "160", "--stream",
                        "--simulator", "--output-tokens", "40", key=MASTER_KEY)
    [run] = doc["runs"]
    assert run["requests"] == 160 and run["errors"] == 0
    assert sim.stats()["by_model"]["sim-mini"] == run["sent_total"]
    assert run["output_tokens"] == 40 * 160
    lat, ttft, itl = run["latency_ms"], run["ttft_ms"], run["itl_ms"]
    assert 0 < ttft["p50"] < lat["p50"] and ttft["max"] <= lat["max"] and ttft["n"] == 160
    assert itl["n"] == 39 * 160 and 0 <= itl["p50"] <= itl["max"] < lat["max"]  # 40 events: 39 gaps each
    assert run["tokens_per_s"]["p50"] > 0 and run["output_tokens_per_s"] > 0
    # mmproxy's own share of each request, and the rest (the upstream's), split out from its header.
    assert run["overhead_ms"]["n"] == 160 and run["upstream_ms"]["n"] == 160
    assert 0 < run["overhead_ms"]["p50"] < lat["p50"]
    for label in ("TTFT ms", "ITL ms", "mmproxy overhead ms", "upstream ms"):
        assert label in stdout


def test_anthropic_messages_through_the_gateway(gateway: Process, sim: SimControl, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]\n')
    doc, _ = bench(tmp_path, f"{gateway.url}/v1", "--api", "anthropic", "--model", "claude", "-c", "2", "-n", "40",
                   "--stream", "--simulator", "--output-tokens", "12", "--prompts", str(prompts), key=MASTER_KEY)
    [run] = doc["runs"]
    assert doc["targets"][0]["endpoint"].endswith("/v1/messages")
    assert run["requests"] == 40 and run["errors"] == 0
    assert run["output_tokens"] == 12 * 40  # from message_delta's usage
    assert 0 < run["ttft_ms"]["p50"] < run["latency_ms"]["p50"]
    assert sim.stats()["by_path"]["/v1/messages"] == run["sent_total"]
    upstream = sim.last()["body"]  # the Messages API takes the system prompt apart from the messages
    assert "Be brief." in json.dumps(upstream["system"]) and [m["role"] for m in upstream["messages"]] == ["user"]


@pytest.mark.parametrize(("arrivals", "rate", "tolerance"), [
    ("constant", 40, 0.1),
    ("poisson", 200, 0.15),  # 400 arrivals in the window: 3 standard deviations
])
def test_rate_mode_holds_the_asked_rate(simulator: Process, sim: SimControl, tmp_path: Path, arrivals: str,
                                        rate: int, tolerance: float) -> None:
    doc, stdout = bench(tmp_path, simulator.url, "--model", "bench-rate", "--rate", str(rate), "--arrivals", arrivals,
                        "-d", "2", "--output-tokens", "5")
    [run] = doc["runs"]
    assert run["load"] == {"rate": rate, "max_in_flight": 1000}
    assert run["req_s"] == pytest.approx(rate, rel=tolerance) and run["dropped"] == 0
    assert f"A {rate} req/s" in stdout


def test_simulator_faults_are_counted_by_class(simulator: Process, sim: SimControl, tmp_path: Path) -> None:
    sim.fault("bench-faults", "500", count=5)
    sim.fault("bench-faults", "429", count=3)
    doc, stdout = bench(tmp_path, simulator.url, "--model", "bench-faults", "-c", "1", "-n", "30")
    [run] = doc["runs"]
    assert run["errors_by_class"] == {"http_429": 3, "http_500": 5} and run["requests"] == 22
    assert "errors: http_429 3, http_500 5" in stdout


def test_a_target_slower_than_the_window_is_reported(simulator: Process, sim: SimControl, tmp_path: Path) -> None:
    sim.fault("bench-hang", "hang", count=-1)
    doc, stdout = bench(tmp_path, simulator.url, "--model", "bench-hang", "-c", "2", "-d", "0.5", "--timeout", "1.5",
                        expect=1)
    [run] = doc["runs"]
    assert run["requests"] == 0 and run["errors"] == 0 and run["unfinished"] == 2
    assert "0 ok" in stdout and "2 still unanswered when the window closed" in stdout


def test_compare_prints_ratios_and_writes_an_html_report(gateway: Process, simulator: Process, sim: SimControl,
                                                         tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    doc, stdout = bench(tmp_path, simulator.url, "--model", "sim-mini", "-c", "2", "-n", "60", "--rounds", "2",
                        "--compare", gateway.url, "--compare-model", "mini", "--compare-api-key", MASTER_KEY,
                        "--report", str(report))
    assert [(r["target"], r["requests"]) for r in doc["runs"]] == [("A", 60), ("B", 60)]
    ratios = doc["compare"][0]["ratios_b_over_a"]
    a, b = doc["runs"]
    assert ratios["req/s"] == pytest.approx(b["req_s"] / a["req_s"])
    assert ratios["latency p50"] == pytest.approx(b["latency_ms"]["p50"] / a["latency_ms"]["p50"])
    assert f"Compare at c=2: B ÷ A (A: {simulator.url}, B: {gateway.url})" in stdout
    assert re.search(r"latency p99 .* \d+\.\d\dx", stdout)
    page = report.read_text()
    assert page.count("<table>") == 3 and "latency p50" in page
    image = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert image and base64.b64decode(image.group(1)).startswith(b"\x89PNG\r\n\x1a\n")


def test_rate_sweep_steps_up_to_the_probed_throughput(simulator: Process, sim: SimControl, tmp_path: Path) -> None:
    report = tmp_path / "sweep.png"
    doc, stdout = bench(tmp_path, simulator.url, "--model", "bench-sweep", "-c", "2", "-d", "0.5",
                        "--rate-sweep", "2", "--report", str(report))
    probe, *steps = doc["runs"]
    assert probe["probe"] and probe["load"] == {"concurrency": 2}
    peak = probe["req_s"]
    assert [s["load"]["rate"] for s in steps] == [round(peak / 2, 2), round(peak, 2)]
    assert "By load" in stdout
    assert report.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_prompts_file_is_sent_as_given(simulator: Process, sim: SimControl, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('[{"role": "user", "content": "first"}]\n{"messages": [{"role": "user", "content": "second"}]}'
                       '\nthird, as plain text\n\n')
    bench(tmp_path, simulator.url, "--model", "bench-prompts", "-c", "1", "-n", "6", "--prompts", str(prompts))
    sent = {r["body"]["messages"][0]["content"] for r in sim.requests(6)}
    assert sent == {"first", "second", "third, as plain text"}


@pytest.mark.parametrize(("args", "message"), [
    (["--rate", "10,x"], "--rate takes comma-separated numbers"),
    (["--rate", "0"], "--rate values must be positive numbers"),
    (["--rate", "inf"], "--rate values must be positive numbers"),
    (["-c", "0", "-n", "0"], "-c, -n must be at least 1"),
    (["-d", "0"], "-d must be a number of seconds above 0"),
    (["--report", "out.pdf"], "--report must name a .png or .html file"),
    (["--prompts", "missing.jsonl"], "cannot read --prompts missing.jsonl"),
])
def test_bad_settings_exit_2_with_the_reason(args: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "http://127.0.0.1:9", "--model", "m", "--api-key", UPSTREAM_KEY, *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and UPSTREAM_KEY not in err


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_line_on_a_terminal(simulator: Process, sim: SimControl, quiet: bool) -> None:
    """A live line on a terminal's stderr (never on stdout, which holds the tables), off with --quiet."""
    leader, follower = pty.openpty()
    argv = [sys.executable, "-m", "mmproxy", "bench", simulator.url, "--model", "bench-tty", "--api-key", UPSTREAM_KEY,
            "-c", "2", "-d", "1", "--warmup", "0", *(["--quiet"] if quiet else [])]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=follower, text=True, timeout=60)
    os.close(follower)
    seen = b""
    while select.select([leader], [], [], 0.5)[0]:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed once everything was read
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.returncode == 0 and "\r" not in proc.stdout
    lines = re.findall(rb"A c=2: ([\d,]+) done +[\d.,]+ req/s +0 errors +[\d.]+ s", seen)
    if quiet:
        assert not lines and not seen
    else:
        assert len(lines) >= 2 and int(lines[-1].replace(b",", b"")) > int(lines[0].replace(b",", b""))
    assert UPSTREAM_KEY.encode() not in seen


def test_report_without_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Checked before any load is sent: a long run must not end without its report."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an install without the eval extra sees
    with pytest.raises(SystemExit) as exc:
        main(["bench", "http://127.0.0.1:9", "--model", "m", "--report", str(tmp_path / "r.png")])
    assert exc.value.code == 2
    assert "pip install 'mmproxy[eval]'" in capsys.readouterr().err
    assert not (tmp_path / "r.png").exists()
