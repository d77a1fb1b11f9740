"""Storage escape: file and batch ids in ``/v1/files/{id}``, ``/v1/batches/{id}`` and ``/v1/messages/batches/{id}``
(``../``, URL-encoded dots and slashes, absolute paths, NUL, very long ids) reach nothing outside the gateway's
file store (a 400 or 404), and an uploaded file's name never decides where it is written."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, start_gateway
from tests.security.conftest import raw_request

PLANTED = "PLANTED-OUTSIDE-THE-STORE"
IDS = [b"..%2foutside", b"%2e%2e%2foutside", b"%2E%2E%2Foutside", b"..%2f..%2f..%2f..%2fetc%2fpasswd",
       b"%2fetc%2fpasswd", b"%2Fetc%2Fpasswd", b"..%5coutside", b"outside", b"batches%2f..%2f..%2foutside",
       b"file-000000000000000000000000%00", b"batch_000000000000000000000000%00", b"outside%00.json", b"..",
       b"%2e%2e", b"file-" + b"a" * 4000, b"batch_" + b"0" * 4000, b"msgbatch_" + b"%2e" * 1000]
ROUTES = [("GET", b"/v1/files/%s"), ("GET", b"/v1/files/%s/content"), ("GET", b"/v1/batches/%s"),
          ("POST", b"/v1/batches/%s/cancel"), ("GET", b"/v1/messages/batches/%s"),
          ("GET", b"/v1/messages/batches/%s/results"), ("POST", b"/v1/messages/batches/%s/cancel")]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("storage")


@pytest.fixture(scope="module")
def gw(simulator: Process, workdir: Path) -> Iterator[Process]:
    config = {"model_list": [{"model_name": "batchy", "model_info": {"id": "batchy-1"}, "litellm_params": {
        "model": "openai/gpt-4o-mini", "api_base": f"{simulator.url}/v1", "api_key": UPSTREAM_KEY}}],
        "general_settings": {"master_key": MASTER_KEY}}
    # What a path escaping the store would find: a file object and data beside the store, and in its parent.
    for where in (workdir, workdir.parent):
        (where / "outside.json").write_bytes(orjson.dumps({"owner": "master", "file": {"id": PLANTED}}))
        (where / "outside.data").write_text(PLANTED)
    process = start_gateway(workdir, config)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(gw: Process) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)


@pytest.mark.parametrize("ident", IDS, ids=lambda i: i[:40].decode())
def test_an_id_cannot_reach_outside_the_store(gw: Process, client: openai.OpenAI, workdir: Path, ident: bytes):
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "batchy", "messages": [{"role": "user", "content": "hi"}]}}
    client.files.create(file=("in.jsonl", io.BytesIO(orjson.dumps(line))), purpose="batch")  # the store exists
    auth = b"Authorization: Bearer " + MASTER_KEY.encode() + b"\r\nContent-Type: application/json\r\n"
    for method, route in ROUTES:
        status, reply = raw_request(gw.url, method, route % ident, auth, b"{}" if method == "POST" else b"")
        assert status in (400, 404), (method, route % ident[:60], reply[:300])
        assert PLANTED.encode() not in reply and b"root:" not in reply
    with pytest.raises(openai.NotFoundError) as caught:
        client.batches.create(input_file_id=ident.decode(), endpoint="/v1/chat/completions", completion_window="24h")
    assert caught.value.body["param"] == "input_file_id"  # type: ignore[index]


def test_an_uploaded_files_name_does_not_choose_where_it_is_written(gw: Process, client: openai.OpenAI,
                                                                     workdir: Path):
    def tree() -> set[Path]:  # the gateway's directory, and beside it
        return set(workdir.rglob("*")) | set(workdir.parent.iterdir())

    before = tree()
    for name in ("../../escaped.jsonl", "/tmp/escaped.jsonl", "..\\escaped.jsonl", "a\x00b.jsonl"):
        uploaded = client.files.create(file=(name, io.BytesIO(b'{"x": 1}\n')), purpose="batch")
        assert uploaded.id.startswith("file-")
        assert client.files.content(uploaded.id).content == b'{"x": 1}\n'
    added = tree() - before
    store = workdir / "mmproxy-files"
    assert added and all(path.parent == store for path in added), sorted(map(str, added))
    assert not any("escaped" in path.name for path in tree())
    assert not Path("/tmp/escaped.jsonl").exists()
