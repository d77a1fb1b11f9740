"""``GET /openapi.json``: a valid OpenAPI 3.1 document that lists exactly the routes the gateway serves.

The route table is read from ``build_server``'s source (its ``("METHOD", "/path")`` keys and the prefixes its
dispatcher matches), so a route added without a document entry, or an entry without a route, fails here; the live
gateway then confirms that every documented operation is routed and every other method on those paths is not.
"""

from __future__ import annotations

import ast
import inspect
import re

import httpx
from openapi_spec_validator import validate

from mmproxy.server import app
from mmproxy.server.openapi import DOCUMENT
from tests.conftest import MASTER_KEY, Process

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# A path parameter that names something that exists, where an unknown one answers as an unrouted path would.
_EXISTING = {"/v1/models/": "gpt-4o", "/models/": "gpt-4o", "/ui/static/": "app.js"}


def _routes() -> tuple[set[tuple[str, str]], set[str]]:
    """``build_server``'s fixed (method, path) keys and the path prefixes its dispatcher routes by."""
    tree = ast.parse(inspect.getsource(app.build_server))
    fixed: set[tuple[str, str]] = set()
    prefixes: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple) and len(node.elts) == 2 and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            method, path = (e.value for e in node.elts)  # type: ignore[attr-defined]
            if method in _METHODS and path.startswith("/"):
                fixed.add((method, path))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "startswith":
            prefixes |= {c.value for c in ast.walk(node.args[0]) if isinstance(c, ast.Constant)}
    return fixed, prefixes


def _documented() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, methods in DOCUMENT["paths"].items() for method in methods}


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["openapi"].startswith("3.1")


def test_every_route_is_documented_and_every_documented_path_routed() -> None:
    fixed, prefixes = _routes()
    documented = _documented()
    assert fixed == {op for op in documented if "{" not in op[1]}
    templated = {path for _, path in documented if "{" in path}
    assert templated  # /v1/files/{file_id}, /v1/batches/{batch_id}, ...
    for path in templated:
        assert path.startswith(tuple(prefixes)), path
    for prefix in prefixes:  # each prefix the dispatcher routes by leads to a documented operation
        assert any(path.startswith(prefix) for path in templated), prefix


def test_the_live_gateway_serves_what_the_document_says(fuzz_gateway: Process) -> None:
    client = httpx.Client(base_url=fuzz_gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30)
    served = client.get("/openapi.json")
    assert served.status_code == 200 and served.headers["content-type"].startswith("application/json")
    assert served.json() == DOCUMENT
    for path, methods in DOCUMENT["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", _EXISTING.get(path.partition("{")[0], "x"), path)
        for method in _METHODS:
            answer = client.request(method, concrete, json={})
            unrouted = answer.status_code == 405 or (
                answer.status_code == 404 and answer.json()["error"]["message"].startswith("no route for"))
            assert unrouted is (method.lower() not in methods), (method, path, answer.status_code, answer.text)
