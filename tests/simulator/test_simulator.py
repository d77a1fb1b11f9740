"""Provider simulator: OpenAI wire format driven by the real SDK, faults, control API, raw HTTP."""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest

from mmproxy.simulator import ThreadedSimulator, run_in_thread, start_simulator

MSGS = [{"role": "user", "content": "Say something deterministic."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]},
                           "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def sim():
    s = run_in_thread()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _reset(request):
    if "sim" in request.fixturenames:
        control(request.getfixturevalue("sim"), "POST", "/_sim/reset")


@pytest.fixture
def client(sim):
    with openai.OpenAI(base_url=sim.url, api_key="sk-test", max_retries=0, timeout=5) as c:
        yield c


def control(sim, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(sim.base_url + path, data=data, method=method)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def raw_http(port: int, payload: bytes, until: bytes | None = None, timeout: float = 2.0) -> bytes:
    """Send raw bytes; read until ``until`` appears or the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        buf = b""
        while until is None or until not in buf:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            buf += chunk
        return buf


def post_json(body: dict[str, Any], path: str = "/v1/chat/completions", extra: bytes = b"") -> bytes:
    data = json.dumps(body).encode()
    return (b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
            % (path.encode(), len(data), extra, data))


# --- chat completions -----------------------------------------------------------------------------


def test_chat_completion_shape_and_determinism(client):
    r1 = client.chat.completions.create(model="gpt-x", messages=MSGS)
    r2 = client.chat.completions.create(model="gpt-x", messages=MSGS)
    other = client.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "else"}])
    assert r1.id.startswith("chatcmpl-") and r1.id != r2.id
    assert r1.object == "chat.completion" and r1.model == "gpt-x" and r1.system_fingerprint
    choice = r1.choices[0]
    assert choice.index == 0 and choice.finish_reason == "stop" and choice.logprobs is None
    assert choice.message.role == "assistant" and choice.message.refusal is None
    assert choice.message.content == r2.choices[0].message.content != other.choices[0].message.content
    assert len(choice.message.content.split()) == 20
    u = r1.usage
    assert u.completion_tokens == 20 and u.total_tokens == u.prompt_tokens + 20
    assert u.prompt_tokens_details.cached_tokens == 0 and u.completion_tokens_details.reasoning_tokens == 0
    long = client.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "x" * 400}])
    assert long.usage.prompt_tokens > u.prompt_tokens + 90  # ~1 token per 4 chars


def test_max_tokens_n_and_stop(client):
    r = client.chat.completions.create(model="m", messages=MSGS, max_tokens=3, n=2)
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.finish_reason == "length" and len(c.message.content.split()) == 3 for c in r.choices)
    assert r.choices[0].message.content != r.choices[1].message.content
    assert r.usage.completion_tokens == 6
    r = client.chat.completions.create(model="m", messages=MSGS, max_completion_tokens=4)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 4
    r = client.chat.completions.create(model="m", messages=MSGS, stop=["world"],
                                       extra_body={"sim": {"content": "hello world again"}})
    assert r.choices[0].message.content == "hello " and r.choices[0].finish_reason == "stop"
    r = client.chat.completions.create(model="m", messages=MSGS, extra_body={"sim": {"echo": True}})
    assert r.choices[0].message.content == MSGS[0]["content"]


def test_stream_with_usage_matches_non_stream(client):
    full = client.chat.completions.create(model="m", messages=MSGS).choices[0].message.content
    chunks = list(client.chat.completions.create(model="m", messages=MSGS, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.model == "m" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    first, *content, final, usage = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert len(content) == 20 and all(c.choices[0].finish_reason is None for c in content)
    assert "".join(c.choices[0].delta.content for c in content) == full
    assert final.choices[0].finish_reason == "stop" and final.choices[0].delta.content is None
    assert all(c.usage is None for c in chunks[:-1])
    assert usage.choices == [] and usage.usage.completion_tokens == 20


def test_stream_wire_format(sim):
    body = {"model": "m", "messages": MSGS, "stream": True, "sim": {"chunks": 2, "tokens": 4}}
    raw = raw_http(sim.port, post_json(body), until=b"0\r\n\r\n")
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head and b"text/event-stream" in head
    events = []
    while rest:  # one HTTP chunk per SSE event
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        events.append(rest[:n])
        rest = rest[n + 2:]
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") and e.count(b"\n\n") == 1 for e in events)
    assert len(events) == 5 and events[-1] == b"data: [DONE]\n\n"
    assert b'"usage"' not in b"".join(events)  # no include_usage -> no usage key at all


async def test_async_stream_and_chunks_knob(sim):
    async with openai.AsyncOpenAI(base_url=sim.url, api_key="k", max_retries=0) as ac:
        stream = await ac.chat.completions.create(model="m", messages=MSGS, stream=True, max_tokens=5,
                                                  extra_body={"sim": {"chunks": 0}})
        chunks = [c async for c in stream]
    assert len(chunks) == 1 + 5 + 1
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].usage is None


def test_stream_n_choices_interleaved(client):
    chunks = list(client.chat.completions.create(model="m", messages=MSGS, stream=True, n=2, max_tokens=2,
                                                 extra_body={"sim": {"chunks": 0}}))
    assert [c.choices[0].index for c in chunks] == [0, 1] * 4
    assert [c.choices[0].finish_reason for c in chunks[-2:]] == ["length", "length"]


def test_tool_calls_non_stream_and_stream(client):
    r = client.chat.completions.create(model="m", messages=MSGS, tools=[WEATHER_TOOL])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function" and call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str) and args["unit"] in ("c", "f") and isinstance(args["days"], int)

    chunks = list(client.chat.completions.create(model="m", messages=MSGS, tools=[WEATHER_TOOL], stream=True))
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content is None
    (tc,) = first.tool_calls
    assert (tc.index, tc.id, tc.type, tc.function.name, tc.function.arguments) == (
        0, call.id, "function", "get_weather", "")
    frags = [c.choices[0].delta.tool_calls[0] for c in chunks[1:-1]]
    assert len(frags) > 1 and all(f.index == 0 and f.id is None for f in frags)
    assert "".join(f.function.arguments for f in frags) == call.function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_variants(client):
    other = {"type": "function", "function": {"name": "noop"}}
    r = client.chat.completions.create(model="m", messages=MSGS, tools=[other, WEATHER_TOOL],
                                       tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert r.choices[0].message.tool_calls[0].function.name == "get_weather"
    r = client.chat.completions.create(model="m", messages=MSGS, tools=[other])
    assert r.choices[0].message.tool_calls[0].function.arguments == "{}"
    r = client.chat.completions.create(model="m", messages=MSGS, tools=[WEATHER_TOOL], tool_choice="none")
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content
    after_tool = [*MSGS, {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                                                "function": {"name": "get_weather",
                                                                             "arguments": "{}"}}]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    r = client.chat.completions.create(model="m", messages=after_tool, tools=[WEATHER_TOOL])
    assert r.choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=MSGS, tools=[WEATHER_TOOL],
                                       tool_choice={"type": "function", "function": {"name": "missing"}})


# --- embeddings and models ------------------------------------------------------------------------


def test_embeddings_float_base64_and_dimensions(client, sim):
    floats = client.embeddings.create(model="emb", input=["alpha", "beta"], encoding_format="float")
    assert floats.object == "list" and floats.model == "emb" and [d.index for d in floats.data] == [0, 1]
    vec = floats.data[0].embedding
    assert len(vec) == 256 and math.isclose(sum(v * v for v in vec), 1.0, rel_tol=1e-4)
    assert floats.data[0].embedding != floats.data[1].embedding
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == 3  # ceil(5/4) + ceil(4/4)
    decoded = client.embeddings.create(model="emb", input="alpha")  # SDK asks base64 and decodes
    assert decoded.data[0].embedding == pytest.approx(vec, abs=1e-7)
    raw = control_post(sim, "/v1/embeddings", {"model": "emb", "input": "alpha", "encoding_format": "base64"})
    b64 = raw["data"][0]["embedding"]
    assert list(struct.unpack("<256f", base64.b64decode(b64))) == pytest.approx(vec, abs=1e-7)
    small = client.embeddings.create(model="emb", input=[[1, 2, 3], [4]], dimensions=8, encoding_format="float")
    assert [len(d.embedding) for d in small.data] == [8, 8] and small.usage.prompt_tokens == 4
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="emb", input=[], encoding_format="float")


def control_post(sim, path: str, body: dict[str, Any]) -> Any:
    return control(sim, "POST", path, body)


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in ids
    m = client.models.retrieve("org/any-model")
    assert m.id == "org/any-model" and m.object == "model"


def test_errors_shape(sim, client):
    with pytest.raises(openai.NotFoundError) as exc:
        client.get("/nope", cast_to=object)
    assert exc.value.body == {"message": "Invalid URL (GET /v1/nope)", "type": "invalid_request_error",
                              "param": None, "code": None}
    raw = raw_http(sim.port, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n"
                             b"connection: close\r\n\r\n{bad}")
    assert raw.startswith(b"HTTP/1.1 400 ") and b'"invalid_request_error"' in raw
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="m", messages=[])
    assert exc.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="m", messages=MSGS, extra_body={"sim": {"ttft": 1}})
    assert exc.value.param == "sim.ttft"


# --- faults ---------------------------------------------------------------------------------------

STATUS_FAULTS = [
    ("429", openai.RateLimitError, "rate_limit_exceeded"),
    ("500", openai.InternalServerError, None),
    ("502", openai.InternalServerError, "bad_gateway"),
    ("503", openai.InternalServerError, "server_is_overloaded"),
    ("400_context", openai.BadRequestError, "context_length_exceeded"),
    ("401", openai.AuthenticationError, "invalid_api_key"),
    ("404", openai.NotFoundError, "model_not_found"),
]


@pytest.mark.parametrize(("kind", "exc_type", "code"), STATUS_FAULTS)
def test_status_faults(client, kind, exc_type, code):
    with pytest.raises(exc_type) as exc:
        client.chat.completions.create(model="m", messages=MSGS, extra_body={"sim": {"fault": kind}})
    assert exc.value.code == code
    if kind == "429":
        assert exc.value.response.headers["retry-after"] == "1"
        assert exc.value.response.headers["retry-after-ms"] == "1000"


def test_retry_after_param_and_stream_fault(client):
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="m", messages=MSGS, stream=True,
                                       extra_body={"sim": {"fault": "429:7"}})
    assert exc.value.response.headers["retry-after"] == "7"


def test_slow_and_timeout(client):
    t0 = time.monotonic()
    r = client.chat.completions.create(model="m", messages=MSGS, extra_body={"sim": {"fault": "slow:150"}})
    assert r.choices[0].message.content and time.monotonic() - t0 >= 0.15
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=MSGS, timeout=0.2,
                                       extra_body={"sim": {"fault": "timeout", "fault_ms": 3000}})


def test_hang(client, sim):
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=MSGS, timeout=0.2, extra_body={"sim": {"fault": "hang"}})
    assert client.chat.completions.create(model="m", messages=MSGS).choices  # server still fine


def test_cut_stream_raises_in_sdk(client):
    stream = client.chat.completions.create(model="m", messages=MSGS, stream=True,
                                            extra_body={"sim": {"fault": "cut:3"}})
    got = []
    with pytest.raises(openai.APIConnectionError):  # incomplete chunked read, wrapped by the SDK
        for chunk in stream:
            got.append(chunk)
    assert len(got) == 3
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=MSGS, extra_body={"sim": {"fault": "cut"}})


def test_bad_json(client):
    for stream in (False, True):
        with pytest.raises(ValueError):  # json.JSONDecodeError from the SDK's parser
            r = client.chat.completions.create(model="m", messages=MSGS, stream=stream,
                                               extra_body={"sim": {"fault": "bad_json"}})
            if stream:
                list(r)


def test_stream_timing_knobs(client):
    t0 = time.monotonic()
    stamps = []
    for _ in client.chat.completions.create(model="m", messages=MSGS, stream=True,
                                            extra_body={"sim": {"ttft_ms": 120, "chunk_delay_ms": 30,
                                                                "chunks": 4}}):
        stamps.append(time.monotonic() - t0)
    assert stamps[0] >= 0.12 and stamps[-1] >= 0.12 + 3 * 0.03
    assert stamps[-1] < 1.0
    t0 = time.monotonic()
    client.chat.completions.create(model="m", messages=MSGS, extra_body={"sim": {"latency_ms": 100}})
    assert time.monotonic() - t0 >= 0.1
    t0 = time.monotonic()  # 10 tokens in 2 chunks at 100 tokens/s: second chunk 50 ms after the first
    list(client.chat.completions.create(model="m", messages=MSGS, stream=True,
                                        extra_body={"sim": {"tokens": 10, "chunks": 2, "tokens_per_s": 100}}))
    assert 0.05 <= time.monotonic() - t0 < 0.5


def test_client_disconnect_mid_stream(sim, capfd):
    body = {"model": "m", "messages": MSGS, "stream": True, "sim": {"chunk_delay_ms": 20, "chunks": 50}}
    with socket.create_connection(("127.0.0.1", sim.port)) as sock:
        sock.sendall(post_json(body))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    time.sleep(0.15)
    stats = control(sim, "GET", "/_sim/stats")
    assert stats["open_connections"] == 1  # only the stats request itself
    assert "Traceback" not in capfd.readouterr().err


# --- control API ----------------------------------------------------------------------------------


def test_scripted_faults_with_sdk_retries(sim):
    control(sim, "POST", "/_sim/faults", {"model": "flaky", "fault": "429", "count": 2, "retry_after": 0.05})
    with openai.OpenAI(base_url=sim.url, api_key="k", max_retries=2) as c:
        t0 = time.monotonic()
        r = c.chat.completions.create(model="flaky", messages=MSGS)
        assert r.choices[0].message.content and time.monotonic() - t0 < 2
    reqs = control(sim, "GET", "/_sim/requests?limit=10")["data"]
    assert [(q["status"], q["fault"]) for q in reqs] == [(429, "429"), (429, "429"), (200, None)]
    assert control(sim, "GET", "/_sim/faults")["rules"] == []


def test_fault_rules_model_scoping_and_forever(sim, client):
    control(sim, "POST", "/_sim/faults", {"model": "*", "fault": "500", "count": -1})
    control(sim, "POST", "/_sim/faults", {"model": "a", "fault": "503", "count": 1})
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="a", messages=MSGS)
    assert exc.value.status_code == 503
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as exc:
            client.chat.completions.create(model="a", messages=MSGS)
        assert exc.value.status_code == 500
    assert control(sim, "GET", "/_sim/faults")["rules"][0]["count"] == -1
    control(sim, "DELETE", "/_sim/faults")
    assert client.chat.completions.create(model="a", messages=MSGS).choices
    # a body-level fault beats rules; an explicit null disables faults for that request
    control(sim, "POST", "/_sim/faults", {"model": "*", "fault": "500", "count": -1})
    assert client.chat.completions.create(model="a", messages=MSGS, extra_body={"sim": {"fault": None}}).choices
    with pytest.raises(urllib.error.HTTPError) as http_err:
        control(sim, "POST", "/_sim/faults", {"fault": "nope"})
    assert http_err.value.code == 400


def test_request_recording_and_stats(sim, client):
    client.chat.completions.create(model="rec", messages=MSGS, extra_headers={"X-Trace": "abc"},
                                   extra_body={"sim": {"tokens": 2}, "user": "u1"})
    client.embeddings.create(model="emb", input="hi")
    (rec,) = control(sim, "GET", "/_sim/requests?limit=1&model=rec")["data"]
    assert rec["method"] == "POST" and rec["path"] == "/v1/chat/completions" and rec["status"] == 200
    assert rec["headers"]["x-trace"] == "abc" and rec["headers"]["authorization"] == "Bearer sk-test"
    assert rec["body"]["user"] == "u1" and rec["body"]["messages"] == MSGS and rec["time"] > 0
    stats = control(sim, "GET", "/_sim/stats")
    assert stats["requests"] == 2 and stats["by_model"] == {"rec": 1, "emb": 1}
    assert stats["by_status"] == {"200": 2} and stats["by_path"]["/v1/embeddings"] == 1
    control(sim, "POST", "/_sim/reset")
    assert control(sim, "GET", "/_sim/requests")["data"] == []
    assert control(sim, "GET", "/_sim/stats")["requests"] == 0


def test_config_api_per_model(sim, client):
    control(sim, "POST", "/_sim/config", {"model": "short", "tokens": 3})
    control(sim, "POST", "/_sim/config", {"chunks": 2})
    assert client.chat.completions.create(model="short", messages=MSGS).usage.completion_tokens == 3
    assert client.chat.completions.create(model="other", messages=MSGS).usage.completion_tokens == 20
    assert len(list(client.chat.completions.create(model="other", messages=MSGS, stream=True))) == 4
    cfg = control(sim, "GET", "/_sim/config")
    assert cfg["models"] == {"short": {"tokens": 3}} and cfg["defaults"]["chunks"] == 2


# --- server-level options -------------------------------------------------------------------------


def test_api_key_fault_rate_and_model_knobs():
    with ThreadedSimulator(api_key="secret", fault="500", fault_rate=0.5, seed=3,
                           model_knobs={"fast": {"fault": None, "tokens": 1}}) as s:
        with openai.OpenAI(base_url=s.url, api_key="wrong", max_retries=0) as bad:
            with pytest.raises(openai.AuthenticationError):
                bad.models.list()
        with openai.OpenAI(base_url=s.url, api_key="secret", max_retries=0) as c:
            outcomes = []
            for _ in range(40):
                try:
                    c.chat.completions.create(model="m", messages=MSGS)
                    outcomes.append(True)
                except openai.InternalServerError:
                    outcomes.append(False)
            assert 5 < sum(outcomes) < 35
            assert all(c.chat.completions.create(model="fast", messages=MSGS).usage.completion_tokens == 1
                       for _ in range(5))
        assert control(s, "GET", "/_sim/health")["status"] == "ok"  # control API needs no key


async def test_in_process_async_api():
    sim = await start_simulator(chunks=3, instance="inproc")
    try:
        assert sim.url == f"http://127.0.0.1:{sim.port}/v1"
        async with openai.AsyncOpenAI(base_url=sim.url, api_key="k", max_retries=0) as ac:
            r = await ac.chat.completions.create(model="m", messages=MSGS)
            assert r.system_fingerprint == "fp_inproc"
            chunks = [c async for c in await ac.chat.completions.create(model="m", messages=MSGS, stream=True)]
            assert len(chunks) == 5
        assert sim.state.total == 2
    finally:
        await sim.close()


# --- raw HTTP -------------------------------------------------------------------------------------


def _split_responses(raw: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        out.append((head, rest[:length]))
        raw = rest[length:]
    return out


def test_keep_alive_pipelining_and_connection_close(sim):
    with socket.create_connection(("127.0.0.1", sim.port), timeout=2) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200") and b"connection: close" not in first
        sock.sendall(post_json({"model": "m", "messages": MSGS}))  # same connection
        second = b""
        while not second.endswith(b"}"):
            second += sock.recv(65536)
        assert b'"chat.completion"' in second
    pipelined = (post_json({"model": "p1", "messages": MSGS}) + b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n"
                 + post_json({"model": "p3", "messages": MSGS, "sim": {"latency_ms": 30}})
                 + b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
                 + b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")  # after close: never answered
    responses = _split_responses(raw_http(sim.port, pipelined))
    assert len(responses) == 4
    assert b'"p1"' in responses[0][1] and b'"list"' in responses[1][1] and b'"p3"' in responses[2][1]
    assert b"connection: close" in responses[3][0]


def test_chunked_request_body_and_expect_continue(sim):
    data = json.dumps({"model": "chunky", "messages": MSGS}).encode()
    half = len(data) // 2
    body = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, data[:half], len(data) - half, data[half:])
    raw = raw_http(sim.port, b"POST /chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
                             b"expect: 100-continue\r\nconnection: close\r\n\r\n" + body)
    assert raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
    assert b'"model":"chunky"' in raw
    assert raw_http(sim.port, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")


def test_cli_subprocess_prints_port_and_stops_on_sigterm():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "python")}
    proc = subprocess.Popen([sys.executable, "-m", "mmproxy.simulator", "--port", "0", "--chunks", "2"],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("mmproxy simulator listening on http://127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        body = {"model": "m", "messages": MSGS, "stream": True}
        raw = raw_http(port, post_json(body, extra=b"connection: close\r\n"))
        assert raw.count(b"data: ") == 1 + 2 + 1 + 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
