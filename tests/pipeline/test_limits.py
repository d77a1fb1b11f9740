"""Limits that keep a slow, stalled or oversized client from holding the gateway's memory or handlers."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests.conftest import MASTER_KEY, Process, gateway_config, start_gateway


@dataclass
class Limited:
    gw: Process
    workdir: Path


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.fixture(scope="module")
def limited(simulator: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    config = gateway_config(simulator.url)
    config["general_settings"].update(max_request_size_mb=1, max_file_size_mb=48, request_body_timeout=1,
                                      idle_timeout=1)
    workdir = tmp_path_factory.mktemp("limits")
    gw = start_gateway(workdir, config)
    yield Limited(gw, workdir)
    gw.stop()


def test_a_file_upload_streams_to_disk_past_the_json_body_limit(limited: Limited):
    client = openai.OpenAI(base_url=f"{limited.gw.url}/v1", api_key=MASTER_KEY, max_retries=0)
    line = b'{"custom_id": "r%d", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o"}}\n'
    data = b"".join(line % i for i in range(400_000))  # ~40 MB: over the 1 MB JSON limit, under the file limit
    before = _peak_rss_mb(limited.gw.proc.pid)
    uploaded = client.files.create(file=("input.jsonl", io.BytesIO(data)), purpose="batch")
    assert uploaded.bytes == len(data)
    assert client.files.content(uploaded.id).read() == data
    # Streamed to disk and back: the gateway's peak memory did not grow by the file's size.
    assert _peak_rss_mb(limited.gw.proc.pid) - before < 20


def test_a_file_over_the_file_limit_is_413_and_leaves_nothing_behind(limited: Limited):
    response = httpx.post(f"{limited.gw.url}/v1/files", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                          data={"purpose": "batch"}, files={"file": ("big.jsonl", b"x" * (49 * 1024 * 1024))},
                          timeout=60)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert not list((limited.workdir / "mmproxy-files").glob(".upload-*"))


def test_a_body_that_stops_arriving_is_408(limited: Limited):
    sock = _connect(limited.gw.url)
    body = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]})
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + MASTER_KEY.encode() + b"\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10])
    started = time.monotonic()
    reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 408")
    assert orjson.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
    assert time.monotonic() - started < 8


@pytest.mark.parametrize("sent", [b"", b"GET /v1/models HTTP/1.1\r\nHost: x\r\n"], ids=["silent", "half-headers"])
def test_a_connection_that_never_sends_a_request_is_closed(limited: Limited, sent: bytes):
    sock = _connect(limited.gw.url)
    sock.sendall(sent)
    started = time.monotonic()
    assert _read_until_closed(sock) == b""
    assert time.monotonic() - started < 8


def test_oversized_headers_are_refused_with_a_4xx(limited: Limited):
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    assert httpx.get(f"{limited.gw.url}/v1/models", headers={**headers, "X-Pad": "a" * 20_000}).status_code == 400
    many = {**headers, **{f"X-H{i}": "1" for i in range(200)}}
    assert httpx.get(f"{limited.gw.url}/v1/models", headers=many).status_code == 400
    assert httpx.get(f"{limited.gw.url}/v1/models", headers=headers).status_code == 200
