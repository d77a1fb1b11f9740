"""Long streams: a graceful shutdown (SIGTERM stops new connections, lets streams in flight finish within the grace
period, ends the ones that outlast it with an error event, writes every ledger row and exits 0), and stream
timeouts that bound the gaps between events rather than the stream's length."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import MASTER_KEY, Process, gateway_config, start_gateway


def _stream(gw: Process, chunks: int, delay_ms: int) -> tuple[httpx.Client, httpx.Response]:
    client = httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30)
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "count"}],
            "sim": {"chunks": chunks, "chunk_delay_ms": delay_ms}}
    response = client.send(client.build_request("POST", "/v1/chat/completions", json=body), stream=True)
    assert response.status_code == 200
    return client, response


def _events(lines: list[str]) -> list[str]:
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


def _ledger_row(tmp_path: Path, request_id: str) -> tuple[int, str | None]:
    with sqlite3.connect(tmp_path / "mmproxy.db") as db:
        row = db.execute("SELECT status, error_code FROM mmproxy_spend_logs WHERE request_id = ?",
                         (request_id,)).fetchone()
    assert row is not None, "the stream's ledger row was not written"
    return row


def test_a_stream_in_flight_finishes_within_the_grace_period(simulator: Process, tmp_path: Path):
    gw = start_gateway(tmp_path, gateway_config(simulator.url))
    client, response = _stream(gw, chunks=12, delay_ms=100)
    lines = response.iter_lines()
    first = next(lines)
    gw.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(httpx.ConnectError):  # no new connection is accepted meanwhile
        httpx.get(f"{gw.url}/health/liveliness", timeout=2)
    rest = [first, *lines]
    assert _events(rest)[-1] == "[DONE]"
    assert gw.proc.wait(timeout=15) == 0
    status, error = _ledger_row(tmp_path, response.headers["x-mmproxy-request-id"])
    assert (status, error) == (200, None)
    client.close()


def test_a_stream_that_outlasts_the_grace_period_ends_with_an_error_event(simulator: Process, tmp_path: Path):
    gw = start_gateway(tmp_path, gateway_config(simulator.url), "--grace-period", "0.5")
    client, response = _stream(gw, chunks=100, delay_ms=100)
    lines = response.iter_lines()
    first = next(lines)
    began = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    events = _events([first, *lines])
    assert time.monotonic() - began < 5  # cut at the grace period, not after the 10 s stream
    error = orjson.loads(events[-1])["error"]
    assert error["code"] == "shutting_down" and "shutting down" in error["message"]
    assert gw.proc.wait(timeout=15) == 0
    _, code = _ledger_row(tmp_path, response.headers["x-mmproxy-request-id"])
    assert code == "shutting_down"
    client.close()


def test_stream_timeouts_bound_the_gaps_between_events_not_the_stream(simulator: Process, tmp_path: Path):
    config = gateway_config(simulator.url)
    config["model_list"][0]["litellm_params"].update({"timeout": 1, "stream_timeout": 0.5})
    gw = start_gateway(tmp_path, config)
    try:
        client, response = _stream(gw, chunks=25, delay_ms=100)  # 2.5 s in all, never 0.5 s without an event
        assert _events(list(response.iter_lines()))[-1] == "[DONE]"
        client.close()
        client, response = _stream(gw, chunks=5, delay_ms=2500)  # stalls after its first event
        began = time.monotonic()
        events = _events(list(response.iter_lines()))
        assert time.monotonic() - began < 2.4  # cut within two stream_timeouts of the last event
        assert orjson.loads(events[-1])["error"]["code"] == "upstream_timeout"
        client.close()
    finally:
        gw.stop()
