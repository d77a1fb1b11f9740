"""Secrets are compared in constant time: the master key with ``hmac.compare_digest``, virtual keys by a lookup of
their sha256 hash, the simulator's provider keys with ``compare_digest`` too. The gateway and the simulator refuse
every near miss of a key; and no ``==`` or ``!=`` on a secret-named value is left in the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import httpx
import pytest

import mmproxy
from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process

SECRET_NAME = re.compile(r"(^|_)(master|bearer|password|passwd|secret|api_key|credential|supplied|token(?!s))($|_)",
                         re.IGNORECASE)


def _near_misses(key: str) -> list[str]:
    return [key[:-1], key + "0", key[:-1] + chr(ord(key[-1]) ^ 1), key.upper(), key[1:], key * 2, key[:8],
            key + "\u00e9", "sk-"]


def test_the_gateway_refuses_every_near_miss_of_a_key(gateway: Process):
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    virtual = httpx.post(f"{gateway.url}/key/generate", json={}, headers=admin).json()["key"]
    for key in (MASTER_KEY, virtual):
        assert httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        for miss in _near_misses(key):
            for headers in ({"Authorization": f"Bearer {miss}"}, {"x-api-key": miss}):
                reply = httpx.get(f"{gateway.url}/v1/models", headers={
                    k: v.encode("utf-8") for k, v in headers.items()})  # type: ignore[misc]
                assert reply.status_code == 401, (repr(miss), reply.text)
                assert reply.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("path,header,prefix", [
    ("/v1/models", "Authorization", "Bearer "), ("/v1/messages/count_tokens", "x-api-key", ""),
    ("/v1beta/models", "x-goog-api-key", "")])
def test_the_simulator_refuses_every_near_miss_of_its_key(simulator: Process, path: str, header: str, prefix: str):
    for miss in _near_misses(UPSTREAM_KEY):
        reply = httpx.request("POST" if "count_tokens" in path else "GET", f"{simulator.url}{path}",
                              headers={header: (prefix + miss).encode("utf-8")},
                              json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code in (400, 401, 403), (path, repr(miss), reply.status_code)
        assert "API key" in reply.text or "api-key" in reply.text or "x-api-key" in reply.text or \
            "unregistered callers" in reply.text


def _name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Subscript, ast.Call)):
        node = node.value if isinstance(node, ast.Subscript) else node.func
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def test_no_secret_is_compared_with_equals():
    """``==`` returns as soon as a byte differs, so how long a refusal takes tells how much of a key was right."""
    found = []
    for path in sorted(Path(mmproxy.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                names = [_name(operand) for operand in (node.left, *node.comparators)]
                if any(name and SECRET_NAME.search(name) for name in names):
                    found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert found == []
    assert SECRET_NAME.search("app.bearer".split(".")[-1]) and not SECRET_NAME.search("tokens")  # the net works
