"""Runs the gateway benchmark in --smoke mode so the suite cannot silently rot.

A few seconds: direct + mmproxy against the simulator, every scenario but the memory soak.  It
checks the tooling works end to end and produces sane figures, not that the figures are good.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))
from run import Service, free_port, python_env  # noqa: E402

from mmproxy.bench.loadgen import LoadGen, chat_request, run_sync  # noqa: E402


def _mmproxy_cli_importable() -> bool:
    try:
        return importlib.util.find_spec("mmproxy.cli") is not None
    except ImportError:
        return False


@pytest.mark.skipif(not _mmproxy_cli_importable(), reason="mmproxy.cli not importable: mmproxy serve not built yet")
def test_bench_smoke(tmp_path):
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benches" / "run.py"), "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    report = json.loads(out.read_text())
    assert set(report["targets"]) == {"direct", "mmproxy"}, report["skipped"]

    for name, target in report["targets"].items():
        assert {s["scenario"] for s in target["scenarios"].values()} == {
            "nonstream",
            "stream20",
            "relay20",
            "relay100",
        }
        for key, scen in target["scenarios"].items():
            m = scen["median"]
            where = f"{name} {key}: {m}"
            assert m["errors"] == 0 and m["warmup_errors"] == 0, where
            assert m["requests"] > 0 and m["req_s"] > 0, where
            assert 0 < m["p50_ms"] <= m["p99_ms"], where
            assert m["loadgen_cpu_us_per_req"] > 0, where
            if scen["scenario"] != "nonstream":
                assert 0 < m["ttft_p50_ms"] <= m["p50_ms"], where
            if name == "mmproxy":
                assert m["gateway_cpu_us_per_req"] > 0, where
                assert m["peak_rss_mb"] >= m["rss_mb"] > 0, where
                assert m["added_p50_ms"] is not None, where

    assert report["targets"]["mmproxy"]["us_per_event"] is not None
    assert "### All scenarios" in proc.stdout


@pytest.fixture
def simulator(tmp_path):
    """A simulator subprocess on a free port (faults are chosen per request through ``sim``)."""
    pytest.importorskip("mmproxy.simulator")
    port = free_port()
    argv = [sys.executable, "-m", "mmproxy.simulator", "--port", str(port), "--record", "0"]
    sim = Service("sim", argv, port=port, core=None, env=python_env(), logdir=tmp_path)
    try:
        sim.wait_ready(f"http://127.0.0.1:{port}/v1/models", 20)
        yield port
    finally:
        sim.stop()


@pytest.mark.parametrize(
    ("fault", "stream", "kind"),
    [("cut", True, "cut"), ("500", False, "http_500"), ("bad_json", False, "bad_body"), (None, True, None)],
)
def test_loadgen_counts_failures(simulator, fault, stream, kind):
    """'Zero errors' in a benchmark only means something if broken replies are caught."""
    extra = {"sim": {"fault": fault}} if fault else None
    req = chat_request("m", stream=stream, extra=extra)
    res = run_sync(LoadGen("127.0.0.1", simulator, [req], concurrency=2, count=20, warmup=0)).summary()
    if kind is None:
        assert res["requests"] == 20 and res["errors"] == 0, res
        assert 0 < res["ttft_p50_ms"] <= res["p50_ms"]
    else:
        assert res["requests"] == 0 and res["error_kinds"] == {kind: 20}, res
