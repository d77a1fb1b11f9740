"""A bounded fuzz run of every operation in ``GET /openapi.json`` against a real gateway and simulator.

Schemathesis generates requests from the document the gateway serves: valid ones (which reach the simulator)
and invalid ones (wrong types, missing fields, values out of range), under the master key, a virtual key or no
key. Whatever it sends, the gateway must not answer 5xx, every 4xx must be an error in the endpoint's own shape,
and the gateway must still serve a request afterwards. Derandomized, so CI replays the same cases.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx
import orjson
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from mmproxy.server.openapi import DOCUMENT
from tests.conftest import MASTER_KEY, Process
from tests.fuzz.conftest import CHAT_MODELS

EXAMPLES = 10  # per operation and generation mode: about 600 requests, 30-45 s on a 2-core machine
ALIAS_EXAMPLES = 3


def _steered(document: dict[str, Any]) -> dict[str, Any]:
    """The served document with ``model`` narrowed to configured names, so valid requests reach the simulator
    instead of stopping at "model not found" (invalid generation still mutates it), and batches kept short."""
    steered = copy.deepcopy(document)
    schemas = steered["components"]["schemas"]
    for name in ("ChatCompletionRequest", "MessagesRequest", "CountTokensRequest", "ResponsesRequest"):
        schemas[name]["properties"]["model"] = {"enum": CHAT_MODELS}
    schemas["EmbeddingsRequest"]["properties"]["model"] = {"enum": ["embed"]}
    # Generating long lists of whole Messages requests costs seconds each; two show mixing and order as well.
    schemas["MessageBatchCreateRequest"]["properties"]["requests"]["maxItems"] = 2
    return steered


def _error_shape(path: str, method: str) -> str | None:
    """The schema the document gives the operation's 4xx answers: Error (OpenAI's), AnthropicError, or None for
    a dashboard page, whose errors are pages."""
    answers = DOCUMENT["paths"][path][method]["responses"].get("4XX")
    return None if answers is None else str(answers["content"]["application/json"]["schema"]["$ref"]).rpartition("/")[2]


def _check(case: Any, status: int, content: bytes, curl: str) -> None:
    assert status < 500, f"{status} {content[:500]!r}\n{curl}"
    shape = _error_shape(case.operation.path, case.operation.method)
    if status < 400 or shape is None:
        return
    body = orjson.loads(content)
    if shape == "AnthropicError":
        assert body["type"] == "error", curl
        assert isinstance(body["error"]["type"], str) and isinstance(body["error"]["message"], str), curl
    else:
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}, curl
        assert isinstance(error["message"], str) and isinstance(error["type"], str), curl


def test_every_operation_survives_generated_requests(fuzz_gateway: Process) -> None:
    served = httpx.get(f"{fuzz_gateway.url}/openapi.json").json()
    assert served == DOCUMENT
    admin = httpx.Client(base_url=fuzz_gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30)
    virtual = admin.post("/key/generate", json={"models": CHAT_MODELS, "max_budget": 100}).json()["key"]
    callers = [{"Authorization": f"Bearer {MASTER_KEY}"}, {"x-api-key": virtual}, {}]
    schema = schemathesis.openapi.from_dict(_steered(served))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(methods) for methods in served["paths"].values())
    session = requests.Session()
    seen: set[int] = set()
    for operation in operations:
        # An alias (/chat/completions for /v1/chat/completions) shares the operation object and the handler: a few
        # examples show it is routed alike.
        spec = DOCUMENT["paths"][operation.path][operation.method]
        examples = EXAMPLES if id(spec) not in seen else ALIAS_EXAMPLES
        seen.add(id(spec))
        # An operation without a body or query has no invalid form to generate (a path segment is always text).
        invalid = len(operation.body) or len(operation.query)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if invalid else (GenerationMode.POSITIVE,):

            @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode), who=st.sampled_from(callers))
            def run(case: Any, who: dict[str, str]) -> None:
                response = case.call(base_url=fuzz_gateway.url, session=session, headers=who, timeout=30)
                _check(case, response.status_code, response.content,
                       case.as_curl_command(headers=who, base_url=fuzz_gateway.url))

            run()
    assert admin.get("/health/readiness").json()["status"] == "healthy"
    answer = admin.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": [
        {"role": "user", "content": "still there?"}]})
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]

