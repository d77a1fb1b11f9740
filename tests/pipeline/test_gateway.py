"""The gateway end to end: real proxy process, real simulator, the real openai SDK."""

from __future__ import annotations

import asyncio

import anthropic
import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, SimControl

HELLO = [{"role": "user", "content": "Say hello to the gateway."}]


@pytest.fixture
def client(gateway: Process) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=MASTER_KEY, max_retries=0)


@pytest.fixture
def direct(simulator: Process) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{simulator.url}/v1", api_key=UPSTREAM_KEY, max_retries=0)


@pytest.fixture
def raw(gateway: Process) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10)


# -- answers -----------------------------------------------------------------------
def test_chat_answer_is_the_upstream_answer(client, direct, sim: SimControl):
    via = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO, temperature=0.2)
    completion = via.parse()
    upstream = direct.chat.completions.create(model="sim-frontier", messages=HELLO, temperature=0.2)
    assert completion.choices[0].message.content == upstream.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == upstream.usage.prompt_tokens

    headers = via.headers
    assert headers["x-mmproxy-deployment"] == "frontier-1"
    assert headers["x-mmproxy-request-id"]
    expected = completion.usage.prompt_tokens * 2.5e-06 + completion.usage.completion_tokens * 1e-05
    assert float(headers["x-mmproxy-cost-usd"]) == pytest.approx(expected, rel=1e-9)
    assert "e" not in headers["x-mmproxy-cost-usd"]
    assert float(headers["x-mmproxy-overhead-ms"]) >= 0


def test_request_is_forwarded_with_only_the_model_rewritten(client, sim: SimControl):
    client.chat.completions.create(
        model="gpt-4o", messages=HELLO, max_tokens=7, seed=3, extra_body={"vendor_knob": {"a": [1, 2]}}
    )
    received = sim.last()
    body = received["body"]
    assert body["model"] == "sim-frontier"
    assert body["messages"] == HELLO
    assert body["max_tokens"] == 7 and body["seed"] == 3
    assert body["vendor_knob"] == {"a": [1, 2]}
    # The upstream gets the deployment's key, never the client's master key.
    assert received["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert MASTER_KEY not in str(received["headers"])


def test_api_key_from_environment_variable(client, sim: SimControl):
    client.chat.completions.create(model="small", messages=HELLO)
    assert sim.last()["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"


async def test_async_client_concurrent_requests(gateway: Process, sim: SimControl):
    aclient = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=MASTER_KEY, max_retries=0)
    prompts = [[{"role": "user", "content": f"question number {i}"}] for i in range(40)]
    results = await asyncio.gather(*(aclient.chat.completions.create(model="gpt-4o", messages=p)
                                     for p in prompts))
    assert all(r.choices[0].message.content for r in results)
    # Different prompts get different deterministic answers: nothing was crossed between connections.
    assert len({r.choices[0].message.content for r in results}) == len(prompts)
    await aclient.close()


def test_streaming_matches_non_streaming(client):
    full = client.chat.completions.create(model="gpt-4o", messages=HELLO)
    stream = client.chat.completions.create(
        model="gpt-4o", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_tools_pass_through_non_stream_and_stream(client, sim: SimControl):
    messages = [{"role": "user", "content": "Weather in Rome?"}]
    reply = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER], tool_choice="required")
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert sim.last()["body"]["tools"] == [WEATHER]
    streamed = list(client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER],
                                                   tool_choice="required", stream=True))
    deltas = [c.choices[0].delta.tool_calls for c in streamed if c.choices and c.choices[0].delta.tool_calls]
    assert deltas[0][0].function.name == "get_weather"
    assert "".join(d[0].function.arguments or "" for d in deltas) == call.function.arguments
    # The tool result goes back to the upstream as the client wrote it.
    follow = [*messages, reply.choices[0].message.model_dump(exclude_none=True),
              {"role": "tool", "tool_call_id": call.id, "content": "21C"}]
    client.chat.completions.create(model="gpt-4o", messages=follow, tools=[WEATHER])
    assert sim.last()["body"]["messages"][2] == {"role": "tool", "tool_call_id": call.id, "content": "21C"}


def test_image_parts_pass_through(client, sim: SimControl):
    content = [{"type": "text", "text": "What is this?"},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}]
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": content}])
    assert sim.last()["body"]["messages"][0]["content"] == content


def test_stream_wire_format_ends_with_done(raw: httpx.Client):
    body = {"model": "gpt-4o", "messages": HELLO, "stream": True}
    with raw.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-mmproxy-deployment"] == "frontier-1"
        text = "".join(response.iter_text())
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert text.count("[DONE]") == 1


def test_stream_events_arrive_as_they_are_produced(raw: httpx.Client):
    """With 150 ms between upstream events, the first event must reach the client long before the last."""
    import time

    body = {"model": "gpt-4o", "messages": HELLO, "stream": True, "sim": {"chunks": 4, "chunk_delay_ms": 150}}
    arrivals = []
    start = time.monotonic()
    with raw.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic() - start)
    assert len(arrivals) >= 6
    assert arrivals[-1] - arrivals[0] > 0.4  # spread out, not delivered in one burst at the end


def test_a_streams_overhead_header_leaves_out_the_upstreams_time_to_first_event(raw: httpx.Client):
    """The upstream sends its headers at once and its first event 300 ms later: that wait is the upstream's."""
    body = {"model": "gpt-4o", "messages": HELLO, "stream": True, "sim": {"ttft_ms": 300, "chunks": 2}}
    with raw.stream("POST", "/v1/chat/completions", json=body) as response:
        overhead = float(response.headers["x-mmproxy-overhead-ms"])
        response.read()
    assert overhead < 100


def test_cut_stream_is_not_passed_on_as_complete(client, raw: httpx.Client, sim: SimControl):
    sim.fault("sim-flaky", "cut", count=2, cut_after=3)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="flaky", messages=HELLO, stream=True):
            pass
    body = {"model": "flaky", "messages": HELLO, "stream": True}
    with raw.stream("POST", "/v1/chat/completions", json=body) as response:
        text = "".join(response.iter_text())
    assert "[DONE]" not in text
    last = [e for e in text.split("\n\n") if e][-1]
    assert last.startswith("data: {\"error\"") and "stream_cut" in last


def test_weights_split_traffic_within_a_group(raw: httpx.Client):
    picks = {"mini-a": 0, "mini-b": 0}
    for _ in range(400):
        response = raw.post("/v1/chat/completions", json={"model": "mini", "messages": HELLO})
        picks[response.headers["x-mmproxy-deployment"]] += 1
    # weight 3 : 1 → 300 expected for mini-a; the bounds are over 5 standard deviations wide.
    assert 255 <= picks["mini-a"] <= 345, picks


def test_embeddings(client, direct):
    result = client.embeddings.create(model="embed", input=["first text", "second text"])
    upstream = direct.embeddings.create(model="sim-embed", input=["first text", "second text"])
    assert len(result.data) == 2
    assert result.data[0].embedding == upstream.data[0].embedding
    floats = client.embeddings.create(model="embed", input="x", encoding_format="float")
    assert len(floats.data[0].embedding) == len(result.data[0].embedding)


def test_models_lists_every_model_name(client, gateway: Process):
    ids = sorted(m.id for m in client.models.list())
    assert ids == ["claude", "embed", "flaky", "gpt-4o", "mini", "small"]
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.body["code"] == "model_not_found"
    # The anthropic SDK reads the same list.
    claude = anthropic.Anthropic(base_url=gateway.url, api_key=MASTER_KEY, max_retries=0)
    listed = claude.models.list()
    assert sorted(m.id for m in listed.data) == ids and all(m.type == "model" for m in listed.data)
    assert claude.models.retrieve("claude").display_name == "claude"


def test_health_needs_no_key(gateway: Process):
    assert httpx.get(f"{gateway.url}/health/liveliness").status_code == 200
    ready = httpx.get(f"{gateway.url}/health/readiness")
    assert ready.status_code == 200 and ready.json()["status"] == "healthy"


# -- auth ----------------------------------------------------------------------------
def test_auth_required(gateway: Process):
    url = f"{gateway.url}/v1/chat/completions"
    body = {"model": "gpt-4o", "messages": HELLO}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"x-api-key": "wrong"}, {"Authorization": "Basic x"}):
        response = httpx.post(url, json=body, headers=headers)
        assert response.status_code == 401, headers
        error = response.json()["error"]
        assert error["type"] == "authentication_error" and error["message"]
        assert MASTER_KEY not in response.text
    ok = httpx.post(url, json=body, headers={"x-api-key": MASTER_KEY})
    assert ok.status_code == 200
    wrong_sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong_sdk.models.list()


# -- bad input -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "gpt-4o", "messages": [', None),
        (b"[1, 2]", None),
        (b"", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "gpt-4o"}', "messages"),
        (b'{"model": "gpt-4o", "messages": []}', "messages"),
        (b'{"model": "gpt-4o", "messages": ["hi"]}', "messages[0]"),
        (b'{"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]}', "messages[0].role"),
        (b'{"model": "gpt-4o", "messages": [{"role": {"a": 1}, "content": "x"}]}', "messages[0].role"),
        (b'{"model": "gpt-4o", "messages": [{"role": ["user"], "content": "x"}]}', "messages[0].role"),
        (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": 7}]}', "messages[0].content"),
        (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": [1, 2, 3]}]}', "messages[0].content[0]"),
        (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": [{"text": "x"}]}]}', "messages[0].content[0]"),
        (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}',
         "messages[0].content[0].text"),
        (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "metadata": '
         + b'{"a": ' * 300 + b"1" + b"}" * 301, None),  # orjson reads it but could not write it back
        (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}',
         "temperature"),
        (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
        (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', "max_tokens"),
        (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "n": true}', "n"),
        (b'{"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}', "model"),
    ],
)
def test_bad_input_is_a_400_naming_the_problem(raw: httpx.Client, sim: SimControl, body: bytes, param):
    response = raw.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param
    assert sim.stats().get("requests", 0) == 0  # rejected before any upstream call


def test_unknown_model_sdk_error(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-9", messages=HELLO)
    assert "gpt-9" in str(info.value) and info.value.code == "model_not_found"


def test_oversized_body_is_413(simulator: Process, tmp_path):
    from tests.conftest import gateway_config, start_gateway

    config = gateway_config(simulator.url)
    config["general_settings"]["max_request_size_mb"] = 0.01
    gw = start_gateway(tmp_path, config)
    try:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 20_000}]}
        admin = {"Authorization": f"Bearer {MASTER_KEY}"}
        response = httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=admin)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
        for path in ("/key/generate", "/v1/batches", "/v1/messages/batches"):  # every endpoint with a JSON body
            response = httpx.post(f"{gw.url}{path}", json={"metadata": {"pad": "x" * 20_000}}, headers=admin)
            assert response.status_code == 413, path
            error = response.json()["error"]  # Anthropic's shape names the kind in "type", OpenAI's in "code"
            assert "request_too_large" in (error.get("code"), error.get("type")), path
    finally:
        gw.stop()


def test_unknown_route_and_method(raw: httpx.Client):
    missing = raw.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = raw.get("/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_embedding_model_rejected_on_chat(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="embed", messages=HELLO)


def test_context_window_checked_before_the_call(client, sim: SimControl):
    long = [{"role": "user", "content": "word " * 200}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="small", messages=long)
    assert info.value.code == "context_length_exceeded"
    assert sim.stats().get("requests", 0) == 0
    assert client.chat.completions.create(model="small", messages=HELLO).choices[0].message.content


# -- upstream failures ------------------------------------------------------------------
def test_upstream_500_is_502_with_its_status_and_message(client, sim: SimControl):
    sim.fault("sim-flaky", "500")
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="flaky", messages=HELLO)
    assert info.value.status_code == 502
    message = info.value.message
    assert "HTTP 500" in message and "flaky-1" in message
    assert UPSTREAM_KEY not in message


def test_upstream_429_keeps_status_and_retry_after(raw: httpx.Client, sim: SimControl):
    sim.fault("sim-flaky", "429", retry_after=7)
    response = raw.post("/v1/chat/completions", json={"model": "flaky", "messages": HELLO})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_upstream_400_passes_its_verdict(raw: httpx.Client, sim: SimControl):
    sim.fault("sim-flaky", "400_context")
    response = raw.post("/v1/chat/completions", json={"model": "flaky", "messages": HELLO})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_upstream_timeout_is_504(raw: httpx.Client, sim: SimControl):
    sim.fault("sim-flaky", "hang")
    response = raw.post("/v1/chat/completions", json={"model": "flaky", "messages": HELLO})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    # The pool recovers: the next request on the same deployment works.
    assert raw.post("/v1/chat/completions", json={"model": "flaky", "messages": HELLO}).status_code == 200


def test_stream_timeout_before_first_event_is_504(raw: httpx.Client, sim: SimControl):
    body = {"model": "flaky", "messages": HELLO, "stream": True, "sim": {"ttft_ms": 3000}}
    response = raw.post("/v1/chat/completions", json=body)
    assert response.status_code == 504


def test_upstream_bad_json_is_502(raw: httpx.Client, sim: SimControl):
    sim.fault("sim-flaky", "bad_json")
    response = raw.post("/v1/chat/completions", json={"model": "flaky", "messages": HELLO})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_bad_response"


def test_upstream_error_on_stream_before_first_byte_is_a_plain_error(raw: httpx.Client, sim: SimControl):
    sim.fault("sim-flaky", "503")
    body = {"model": "flaky", "messages": HELLO, "stream": True}
    response = raw.post("/v1/chat/completions", json=body)
    assert response.status_code == 503  # overloaded stays distinguishable from a broken upstream
    error = response.json()["error"]
    assert "HTTP 503" in error["message"] and error["code"] == "server_is_overloaded"


def test_unreachable_upstream_is_502(simulator: Process, tmp_path):
    from tests.conftest import start_gateway

    config = {
        "model_list": [{"model_name": "down", "litellm_params": {
            "model": "openai/x", "api_base": "http://127.0.0.1:9/v1", "api_key": UPSTREAM_KEY}}],
    }
    gw = start_gateway(tmp_path, config)
    try:
        response = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "down", "messages": HELLO})
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_unreachable"
        assert UPSTREAM_KEY not in response.text
    finally:
        gw.stop()


def test_client_disconnect_cancels_the_upstream_stream(raw: httpx.Client, sim: SimControl):
    import time

    body = {"model": "gpt-4o", "messages": HELLO, "stream": True, "sim": {"chunks": 50, "chunk_delay_ms": 100}}
    with raw.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if '"content"' in line:
                break
    # The simulator sees its client (the gateway) go away long before the 5 s stream would end.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if sim.stats().get("disconnects", 0) >= 1:
            break
        time.sleep(0.05)
    assert sim.stats().get("disconnects", 0) >= 1


# -- process model and demo ------------------------------------------------------------------
def test_workers_share_the_port(simulator: Process, tmp_path):
    from tests.conftest import gateway_config, start_gateway

    gw = start_gateway(tmp_path, gateway_config(simulator.url), "--workers", "2")
    try:
        prefixes = set()
        for _ in range(30):
            # A new connection each time, so the kernel spreads them over the workers.
            response = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO},
                                  headers={"Authorization": f"Bearer {MASTER_KEY}"})
            assert response.status_code == 200
            prefixes.add(response.headers["x-mmproxy-request-id"].rsplit("-", 1)[0])
        assert len(prefixes) == 2
    finally:
        assert gw.stop() == 0


def test_a_killed_worker_is_replaced(simulator: Process, tmp_path):
    import os
    import signal
    import time
    from pathlib import Path

    from tests.conftest import gateway_config, start_gateway

    def workers(gw: Process) -> set[int]:
        children = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()
        return {int(pid) for pid in children}

    def prefixes(gw: Process) -> set[str]:
        seen = set()
        for _ in range(30):  # a new connection each time, so the kernel spreads them over the workers
            response = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO},
                                  headers={"Authorization": f"Bearer {MASTER_KEY}"})
            assert response.status_code == 200
            seen.add(response.headers["x-mmproxy-request-id"].rsplit("-", 1)[0])
        return seen

    gw = start_gateway(tmp_path, gateway_config(simulator.url), "--workers", "2")
    try:
        before = workers(gw)
        assert len(before) == 2 and len(prefixes(gw)) == 2
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (victim in workers(gw) or len(workers(gw)) < 2):
            time.sleep(0.1)
        assert victim not in workers(gw) and len(workers(gw)) == 2
        for _ in range(100):  # the new worker has bound the port once it answers
            if len(prefixes(gw)) == 2:
                break
            time.sleep(0.1)
        assert len(prefixes(gw)) == 2
        assert any("stopped with signal 9; starting another" in line for line in gw.output)
    finally:
        assert gw.stop() == 0


def test_a_busy_port_is_one_clear_error_for_any_worker_count(simulator: Process, tmp_path):
    import os
    import subprocess
    import sys

    import yaml

    from tests.conftest import gateway_config, start_gateway

    config = gateway_config(simulator.url)
    gw = start_gateway(tmp_path, config, "--workers", "2")
    try:
        # The start-up line names the parent: the one PID to signal.
        assert any(f"pid {gw.proc.pid})" in line for line in gw.output if "listening on" in line)
        port = gw.url.rsplit(":", 1)[1]
        path = tmp_path / "second.yaml"
        path.write_text(yaml.safe_dump(config))
        for workers in ("1", "2"):
            second = subprocess.run(
                [sys.executable, "-m", "mmproxy", "serve", "--config", str(path), "--host", "127.0.0.1",
                 "--port", port, "--workers", workers], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                env={**os.environ, "MMPROXY_TEST_UPSTREAM_KEY": UPSTREAM_KEY})
            assert second.returncode == 1
            errors = [line for line in second.stderr.splitlines() if "error" in line]
            assert errors == [f"mmproxy: error: cannot listen on 127.0.0.1:{port}: the port is already in use"]
            assert "Traceback" not in second.stderr
        # The first instance kept the port to itself and still serves.
        response = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO},
                              headers={"Authorization": f"Bearer {MASTER_KEY}"})
        assert response.status_code == 200
    finally:
        assert gw.stop() == 0


def test_demo_command_serves_the_bundled_config(tmp_path):
    import socket

    from tests.conftest import start_process

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    demo = start_process(["mmproxy", "demo", "--host", "127.0.0.1", "--port", str(ports[0]),
                          "--sim-port", str(ports[1])], cwd=tmp_path)
    try:
        client = openai.OpenAI(base_url=f"{demo.url}/v1", api_key="sk-mmproxy-demo", max_retries=0)
        assert {m.id for m in client.models.list()} == {"gpt-4o", "gpt-4o-mini", "llama-3.1-8b", "claude-sonnet",
                                                         "gemini-flash", "llama-local", "text-embedding-3-small",
                                                         "auto", "smart"}
        routed = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "Explain: def f(x): return x"}])
        assert routed.headers["x-mmproxy-route-rule"] == "code-to-frontier"
        # The frontier tier: gpt-4o by its model_info, Claude Sonnet 4.5 by the shipped registry.
        assert routed.headers["x-mmproxy-route-target"] == "tier:frontier"
        assert routed.headers["x-mmproxy-deployment"] in ("demo-gpt-4o", "demo-claude-sonnet")
        for model in ("claude-sonnet", "gemini-flash", "llama-local"):
            streamed = client.chat.completions.create(model=model, messages=HELLO, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices), model
        reply = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
        assert reply.headers["x-mmproxy-deployment"] in ("demo-gpt-4o-mini-a", "demo-gpt-4o-mini-b")
        assert reply.parse().choices[0].message.content
        again = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
        assert again.headers["x-mmproxy-cache"] == "hit"
        assert again.parse().choices[0].message.content == reply.parse().choices[0].message.content
        smart = client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
        choice = smart.headers["x-mmproxy-router-choice"]
        assert choice in ("llama-3.1-8b", "gpt-4o")
        assert smart.headers["x-mmproxy-deployment"] == f"demo-{choice}"
        assert "Master key: sk-mmproxy-demo" in "".join(demo.output)
    finally:
        assert demo.stop() == 0
