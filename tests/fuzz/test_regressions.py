"""Hostile requests that once made the gateway answer 500, each as a plain example: now a 4xx naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mmproxy.config import parse_config
from mmproxy.errors import ProxyError
from mmproxy.providers import adapter
from mmproxy.providers.base import Provider
from mmproxy.validation import validate_chat
from tests.conftest import MASTER_KEY, Process, gateway_config, start_gateway

ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(scope="module")
def gw(simulator: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    config = gateway_config(simulator.url, general_settings={"master_key": MASTER_KEY, "max_request_size_mb": 1})
    process = start_gateway(tmp_path_factory.mktemp("regressions"), config)
    with httpx.Client(base_url=process.url, headers=ADMIN, timeout=30) as client:
        yield client
    process.stop()


def _refused(response: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    return error


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = {"k": value}
    return value


def test_deeply_nested_metadata_on_responses_is_a_400(gw: httpx.Client) -> None:
    body = {"model": "gpt-4o", "input": "hi", "metadata": _nested(260)}
    error = _refused(gw.post("/v1/responses", json=body), 400, None)
    assert "nested" in error["message"]


def test_oversize_body_on_admin_endpoints_is_a_413(gw: httpx.Client) -> None:
    big = {"key_alias": "x" * (2 * 1024 * 1024)}
    for path in ("/key/generate", "/key/update", "/key/delete", "/v1/feedback", "/v1/batches"):
        error = _refused(gw.post(path, json=big), 413, None)
        assert error["code"] == "request_too_large"


@pytest.mark.parametrize(("path", "params", "param"), [
    ("/key/list", {"page": "9" * 30}, "page"),  # an offset past SQLite's 64-bit integers
    ("/key/list", {"page": "9" * 18}, "page"),
    ("/spend/logs", {"limit": "9" * 30}, "limit"),
    ("/v1/batches", {"limit": "²"}, "limit"),  # a digit to str.isdigit, not to int()
    ("/v1/messages/batches", {"limit": "²"}, None),
    ("/spend/logs", {"start": "9" * 400}, "start"),  # float() reads it as inf
    ("/spend/report", {"end": "nan"}, "end"),
])
def test_out_of_range_query_values_are_a_400(gw: httpx.Client, path: str, params: dict[str, str],
                                             param: str | None) -> None:
    response = gw.get(path, params=params)
    if param is None:  # Anthropic's error shape
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"
    else:
        _refused(response, 400, param)


def test_in_range_query_values_still_work(gw: httpx.Client) -> None:
    assert gw.get("/key/list", params={"page": "3", "size": "5000"}).json()["size"] == 1000
    assert gw.get("/v1/batches", params={"limit": "100"}).status_code == 200
    assert gw.get("/spend/logs", params={"start": "0", "end": "2026-12-01T00:00:00Z"}).status_code == 200


@pytest.mark.parametrize(("body", "param"), [
    ({"rpm_limit": 2**63}, "rpm_limit"),  # past the database's 64-bit integers
    ({"tpm_limit": 2**64 - 1}, "tpm_limit"),
    ({"duration": "9" * 400 + "d"}, "duration"),  # an expiry no float holds
    ({"budget_duration": "9" * 400 + "d"}, "budget_duration"),
    ({"duration": "99999999999999d"}, "duration"),  # a year past the calendar's
])
def test_out_of_range_key_fields_are_a_400(gw: httpx.Client, body: dict[str, Any], param: str) -> None:
    _refused(gw.post("/key/generate", json=body), 400, param)
    made = gw.post("/key/generate", json={"rpm_limit": 2**63 - 1, "duration": "36500d"})
    assert made.status_code == 200 and made.json()["rpm_limit"] == 2**63 - 1
    _refused(gw.post("/key/update", json={"key": made.json()["key"], **body}), 400, param)


def test_multipart_part_with_a_malformed_header_is_a_400(gw: httpx.Client) -> None:
    boundary = "b0undary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="\x08"\r\n\r\nnull\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--{boundary}--\r\n')
    response = gw.post("/v1/files", content=body.encode(),
                       headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    _refused(response, 400, None)


@pytest.mark.parametrize(("message", "param"), [
    ({"role": "assistant", "content": None, "tool_calls": 5}, "messages[1].tool_calls"),
    ({"role": "assistant", "content": None, "tool_calls": [5]}, "messages[1].tool_calls[0].function"),
    ({"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": 5}]},
     "messages[1].tool_calls[0].function"),
    ({"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {}}}]},
     "messages[1].tool_calls[0].function.arguments"),
    ({"role": "user", "content": [{"type": "file", "file": 5}]}, "messages[1].content[0].file"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]},
     "messages[1].content[0].image_url"),
])
def test_malformed_tool_calls_and_parts_are_a_400_for_every_provider(gw: httpx.Client, message: dict[str, Any],
                                                                     param: str) -> None:
    # claude: the Anthropic adapter read these fields without checking them (500 before)
    for model in ("claude", "gpt-4o"):
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}, message]}
        _refused(gw.post("/v1/chat/completions", json=body), 400, param)


def test_custom_tool_calls_still_pass_validation() -> None:
    validate_chat({"model": "m", "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "custom", "custom": {"name": "grep", "input": "todo"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "3 matches"}]})


def test_responses_function_call_arguments_must_be_text(gw: httpx.Client) -> None:
    body = {"model": "claude", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": 5},
                                         {"type": "function_call_output", "call_id": "c", "output": "4"}]}
    _refused(gw.post("/v1/responses", json=body), 400, "input[0].arguments")


def _adapter(model: str) -> Provider:
    config = parse_config({"model_list": [{"model_name": "m", "litellm_params": {
        "model": model, "api_base": "http://127.0.0.1:9", "api_key": "k"}}]})
    return adapter(config.deployments[0])


@pytest.mark.parametrize(("model", "read", "body"), [
    ("anthropic/claude-sonnet-4-5", "chat_response", b'{"type":"message","content":[null]}'),
    ("anthropic/claude-sonnet-4-5", "chat_response", b'{"type":"message","content":[{"type":"text","text":null}]}'),
    ("anthropic/claude-sonnet-4-5", "messages_response", b'{"type":"message","usage":5}'),
    ("anthropic/claude-sonnet-4-5", "messages_response", b'{"type":"message","usage":{"input_tokens":"3"}}'),
    ("gemini/gemini-2.0-flash", "chat_response", b'{"candidates":[{"content":{"parts":[null]}}]}'),
    ("gemini/gemini-2.0-flash", "chat_response", b'{"candidates":[{"index":"1"},{"index":0}]}'),
])
def test_an_upstream_answer_with_fields_of_another_type_is_a_502(model: str, read: str, body: bytes) -> None:
    with pytest.raises(ProxyError) as caught:
        getattr(_adapter(model), read)(body)
    assert caught.value.status == 502 and caught.value.code == "upstream_bad_response"


def test_a_gemini_stream_event_that_is_no_answer_ends_the_stream() -> None:
    translator = _adapter("gemini/gemini-2.0-flash").chat_stream({"stream": True})
    assert translator is not None
    first = translator.feed(b'data: {"candidates":[{"content":{"parts":[{"text":"hi"}]}}]}\r\n\r\n')
    assert b'"content":"hi"' in first
    assert translator.feed(b'data: {"candidates":[null]}\r\n\r\n'
                           b'data: {"candidates":[{"content":{"parts":[{"text":"lost"}]}}]}\r\n\r\n') == b""
    assert not translator.complete  # no [DONE]: the relay tells the client the stream broke


def test_dashboard_login_with_a_malformed_form_is_a_400(gw: httpx.Client) -> None:
    boundary = "b0undary"
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="\x08"\r\n\r\nnull\r\n--{boundary}--\r\n'
    response = gw.post("/ui/login", content=body.encode(),
                       headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 400 and "key" in response.text
    assert gw.get("/ui/api/report", params={"period": "²"}).status_code == 400  # str.isdigit took it: 500
