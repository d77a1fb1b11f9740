"""Header injection: CR, LF, NUL and other control characters in what a caller sends (model names, metadata, user
ids, ``extra_headers``, which are refused, request headers) or in what a model answers (a verifier's reasons) never
split a response header, never reach an upstream request's headers, never split an access-log line, and are never
a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, SimControl, gateway_config, start_gateway
from tests.security.conftest import raw_request

EVIL = ["\r\nX-Injected: yes", "\nX-Injected: yes", "\rX-Injected: yes", "\x00X-Injected: yes", "\x1b[2J\x7f\x85",
        "\u2028X-Injected: yes"]
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(scope="module")
def gw(simulator: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    config = gateway_config(simulator.url)
    config["model_list"] += [
        {"model_name": "verifier", "litellm_params": {"model": "openai/sim-verifier", "api_base": f"{simulator.url}/v1",
                                                      "api_key": UPSTREAM_KEY}},
        {"model_name": "checked", "verify": {"generator": "mini", "verifier": "verifier"}},
    ]
    process = start_gateway(tmp_path_factory.mktemp("headers"), config, "--access-log", "text")
    yield process
    process.stop()


def _clean(headers: httpx.Headers | dict[str, str]) -> None:
    """No injected header, and no header value with a control character."""
    assert "x-injected" not in {name.lower() for name in headers}
    for name, value in headers.items():
        assert value.isprintable(), f"{name}: {value!r}"


@pytest.mark.parametrize("evil", EVIL)
def test_caller_fields_never_split_a_header(gw: Process, sim: SimControl, evil: str):
    # A model name that is not configured: a 400/404 in the API's shape, its headers whole.
    for body in ({"model": f"gpt-4o{evil}", "messages": [{"role": "user", "content": "hi"}]},
                 {"model": f"gpt-4o{evil}", "messages": [{"role": "user", "content": "hi"}], "stream": True}):
        refused = httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=AUTH, timeout=30)
        assert refused.status_code in (400, 404) and refused.json()["error"]["param"] == "model", refused.text
        _clean(refused.headers)
    with pytest.raises(anthropic.APIStatusError) as caught:
        anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0).messages.create(
            model=f"claude{evil}", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code in (400, 404)
    _clean(caught.value.response.headers)

    # Headers for the upstream in the body: refused (the gateway sends only its own), the refusal's headers whole.
    refused = httpx.post(f"{gw.url}/v1/chat/completions", headers=AUTH, timeout=30, json={
        "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
        "extra_headers": {"X-Injected": evil, f"X-Name{evil}": "v"}})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "extra_headers"
    _clean(refused.headers)

    # Free text in fields the gateway passes on or keeps: answered, nothing of it in any header.
    fields: dict[str, Any] = {"user": f"user{evil}", "metadata": {"tag": f"t{evil}"}}
    for stream in (False, True):
        answered = httpx.post(f"{gw.url}/v1/chat/completions", headers=AUTH, timeout=30, json={
            "model": "gpt-4o", "messages": [{"role": "user", "content": f"say{evil}"}], "stream": stream, **fields})
        assert answered.status_code == 200, answered.text
        _clean(answered.headers)
        upstream = sim.last()
        assert upstream["model"] == "sim-frontier"
        _clean(upstream["headers"])  # what the gateway sent upstream: its own headers only


@pytest.mark.parametrize("value", [b"sk-a\x00b", b"sk-a\x01b", b"sk-\xff\xfe", b"Bearer sk\x7f", b"sk a\tb"])
def test_control_characters_in_request_headers_are_refused_not_a_500(gw: Process, value: bytes):
    body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'
    master = b"authorization: Bearer " + MASTER_KEY.encode() + b"\r\n"
    for name in (b"x-api-key", b"authorization", b"x-anything"):
        headers = b"Content-Type: application/json\r\n" + name + b": " + value + b"\r\n"
        status, reply = raw_request(gw.url, "POST", b"/v1/chat/completions",
                                    headers if name == b"authorization" else headers + master, body)
        assert status < 500, reply[:300]
        assert b"x-injected" not in reply.partition(b"\r\n\r\n")[0].lower()


def test_a_verifiers_words_reach_a_header_only_as_one_clean_line(gw: Process, sim: SimControl):
    reasons = ["the total\r\nX-Injected: yes", "nul\x00here", "bell\x07 and del\x7f", "naïve → arrow"]
    verdict = orjson.dumps({"verdict": "reject", "reasons": reasons, "severity": "high"}).decode()
    sim.http.post("/_sim/config", json={"model": "sim-verifier", "content": verdict}).raise_for_status()
    answered = httpx.post(f"{gw.url}/v1/chat/completions", headers=AUTH, timeout=30,
                          json={"model": "checked", "messages": [{"role": "user", "content": "2+2?"}]})
    assert answered.status_code == 200, answered.text
    _clean(answered.headers)
    assert answered.headers["x-mmproxy-verdict"] == "reject"
    assert answered.headers["x-mmproxy-verdict-reasons"] == \
        "the total X-Injected: yes; nul here; bell and del ; naïve ? arrow"
    assert answered.json()["x_mmproxy_verdict"]["reasons"] == reasons  # the body keeps them exactly


def test_the_text_access_log_keeps_one_line_per_request(gw: Process, tmp_path: Path):
    for evil in EVIL:
        httpx.post(f"{gw.url}/v1/chat/completions", headers=AUTH, timeout=30,
                   json={"model": f"made-up{evil}", "messages": [{"role": "user", "content": "hi"}]})
    lines = [line for line in gw.output if "made-up" in line]
    assert len(lines) >= len(EVIL)
    for line in lines:
        assert line.startswith("time=") and line.rstrip("\n").isprintable(), repr(line)
    assert not any(line.startswith("X-Injected") for line in gw.output)
