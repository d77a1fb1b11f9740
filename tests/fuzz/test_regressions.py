"""Hostile requests that once made the gateway answer 500, each as a plain example: now a 4xx naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

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
