"""mmproxy.hashing: canonical request keys and conversation-prefix hashes."""

import json
import random
import struct
from decimal import Decimal
from typing import Any

import pytest

from mmproxy.hashing import IGNORED_FIELDS, prefix_hashes, request_hash

BASE: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
    ],
    "temperature": 0.2,
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ],
}


def key(body: Any, namespace: str = "") -> str:
    return request_hash(json.dumps(body).encode(), namespace)


# --- a reference implementation of the documented canonical form ----------------------------------


def _canonical_number(x: int | float) -> str:
    if isinstance(x, int) and -(2**63) <= x < 2**64:
        return str(x)
    f = float(x)
    if f == int(f) and -(2**63) <= f < 2**64:
        return str(int(f))
    sign, digits, exponent = Decimal(repr(f)).normalize().as_tuple()
    assert isinstance(exponent, int)
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    return ("-" if sign else "") + f"{mantissa}e{exponent + len(digits) - 1}"


def _canonical(v: Any) -> str:
    if isinstance(v, dict):
        items = sorted(v.items(), key=lambda kv: kv[0].encode())
        return "{" + ",".join(f"{_canonical(k)}:{_canonical(x)}" for k, x in items) + "}"
    if isinstance(v, list):
        return "[" + ",".join(map(_canonical, v)) + "]"
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return _canonical_number(v)


def test_matches_reference_canonical_form() -> None:
    xxhash = pytest.importorskip("xxhash")
    rng = random.Random(3)
    for _ in range(200):
        body = {**BASE, "extra": _random_value(rng, 4), "stream": True}
        for namespace in ("", "tenant-é"):
            kept = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
            ns = namespace.encode()
            data = struct.pack("<Q", len(ns)) + ns + _canonical(kept).encode()
            assert key(body, namespace) == xxhash.xxh3_128(data).hexdigest()
        msgs = body["messages"]
        h = xxhash.xxh3_64(_canonical({"tools": body["tools"]}).encode()).intdigest()
        want = []
        for m in msgs:
            h = xxhash.xxh3_64(struct.pack("<Q", h) + _canonical(m).encode()).intdigest()
            want.append(h)
        assert prefix_hashes(json.dumps(body).encode()) == want


# --- request_hash ----------------------------------------------------------------------------------


# Keys whose byte order differs from their escaped order, plus non-ASCII and empty-ish ones.
KEYS = ["a", "A", "b", "", "é", "😀", 'q"', "c\x01", "a\n", "z\\", "ab", "\u2028"]


def _random_value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(8 if depth > 0 else 6)
    if kind == 0:
        return rng.randint(-(10**12), 10**12)
    if kind == 1:
        return rng.choice([0.5, -2.25, 1e-7, 3.141592653589793, 1e300, 0.1, 2.0])
    if kind == 2:
        return "".join(rng.choice('ab é😀\n"\\\t\x01/') for _ in range(rng.randint(0, 8)))
    if kind == 3:
        return rng.choice([True, False])
    if kind == 4:
        return None
    if kind == 5:
        return "s" + str(rng.random())
    if kind == 6:
        return [_random_value(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(KEYS) + str(rng.randint(0, 3)): _random_value(rng, depth - 1) for _ in range(rng.randint(0, 5))}


def _permuted(v: Any, rng: random.Random) -> Any:
    if isinstance(v, dict):
        items = list(v.items())
        rng.shuffle(items)
        return {k: _permuted(x, rng) for k, x in items}
    if isinstance(v, list):
        return [_permuted(x, rng) for x in v]
    return v


def test_key_order_and_whitespace_do_not_matter() -> None:
    rng = random.Random(11)
    for _ in range(300):
        body = {**BASE, "extra": _random_value(rng, 5)}
        want = key(body)
        variant = _permuted(body, rng)
        text = json.dumps(variant, indent=rng.choice([None, 1, "\t"]), ensure_ascii=rng.random() < 0.5)
        assert request_hash(text.encode()) == want
        assert request_hash(b" \n" + text.encode() + b"\r\n ") == want


def test_key_is_32_hex_chars() -> None:
    k = key(BASE)
    assert len(k) == 32
    int(k, 16)


def test_string_escapes_do_not_matter() -> None:
    assert request_hash(b'{"a": "\\u00e9\\/x"}') == request_hash('{"a": "é/x"}'.encode())


@pytest.mark.parametrize(
    "spellings",
    [
        ["1", "1.0", "1e0", "10e-1", "0.1e1", "1E+0", "1.000"],
        ["0", "-0", "0.0", "-0.0", "0e5"],
        ["0.5", "5e-1", "0.50", "50E-2"],
        ["9223372036854775808", "9.223372036854775808e18"],
        ["10000000000000000000", "1e19", "10000000000000000000.0"],
        ["1e20", "100000000000000000000"],
        ["0.1", "0.1000000000000000000001"],  # the same f64: what a provider parses
    ],
)
def test_numbers_are_canonical(spellings: list[str]) -> None:
    keys = {request_hash(f'{{"temperature": {s}}}'.encode()) for s in spellings}
    assert len(keys) == 1


def test_distinct_numbers_stay_distinct() -> None:
    values = ["1", "1.0000001", str(2**60), str(2**60 + 1), "-1", '"1"', "true", "null", "0.1", "0.10000000000000002"]
    keys = {request_hash(f'{{"seed": {v}}}'.encode()) for v in values}
    assert len(keys) == len(values)


@pytest.mark.parametrize("field", sorted(IGNORED_FIELDS))
def test_ignored_fields_are_ignored(field: str) -> None:
    assert key({**BASE, field: {"x": [1, "y"]}}) == key(BASE)
    assert key({**BASE, field: True}) == key(BASE)


def test_ignored_fields_cover_the_documented_minimum() -> None:
    assert {"stream", "stream_options", "user", "metadata", "cache", "timeout", "request_timeout"} <= IGNORED_FIELDS
    assert not {"service_tier", "extra_headers", "model", "seed", "tools"} & IGNORED_FIELDS


def test_ignored_fields_only_at_top_level() -> None:
    nested = {**BASE, "response_format": {"type": "json_schema", "json_schema": {"stream": True}}}
    assert key(nested) != key({**BASE, "response_format": {"type": "json_schema", "json_schema": {}}})


def _changes() -> list[tuple[str, dict[str, Any]]]:
    def msg(content: str) -> list[dict[str, Any]]:
        return [BASE["messages"][0], {"role": "user", "content": [{"type": "text", "text": content}]}]

    return [
        ("message text", {"messages": msg("Weather in Pariz?")}),
        ("message role", {"messages": [{**BASE["messages"][0], "role": "developer"}, BASE["messages"][1]]}),
        ("message order", {"messages": BASE["messages"][::-1]}),
        ("extra message", {"messages": [*BASE["messages"], {"role": "user", "content": "and"}]}),
        ("model", {"model": "gpt-4o-mini"}),
        ("temperature", {"temperature": 0.3}),
        ("temperature as int", {"temperature": 0}),
        ("top_p", {"top_p": 0.9}),
        ("seed", {"seed": 42}),
        ("max_tokens", {"max_tokens": 100}),
        ("n", {"n": 2}),
        ("stop", {"stop": ["\n"]}),
        ("tools", {"tools": []}),
        (
            "tool param",
            {"tools": [{**BASE["tools"][0], "function": {**BASE["tools"][0]["function"], "name": "get_weathr"}}]},
        ),
        ("tool_choice", {"tool_choice": "required"}),
        ("response_format", {"response_format": {"type": "json_object"}}),
        ("logprobs", {"logprobs": True}),
        ("service_tier", {"service_tier": "flex"}),
        ("extra_headers", {"extra_headers": {"anthropic-beta": "x"}}),
        ("null vs absent", {"seed": None}),
    ]


@pytest.mark.parametrize(("what", "change"), _changes(), ids=[c[0] for c in _changes()])
def test_answer_changing_fields_change_the_key(what: str, change: dict[str, Any]) -> None:
    assert key({**BASE, **change}) != key(BASE), what


def test_namespace_is_mixed_in() -> None:
    keys = {key(BASE, ns) for ns in ["", "a", "b", "ab", "tenant/1"]}
    assert len(keys) == 5
    assert key(BASE, "team") == key(BASE, "team")


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"{'a': 1}", b'{"a": 1} x', b'{"a": 1,}', b"\xff", b'{"a": "\xff"}', b"NaN", b'{"a": NaN}'],
)
def test_invalid_json_raises_value_error(body: bytes) -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        request_hash(body)
    with pytest.raises(ValueError, match="not valid JSON"):
        prefix_hashes(body)


@pytest.mark.parametrize("body", [b"[]", b"1", b'"x"', b"null"])
def test_non_object_body_raises_value_error(body: bytes) -> None:
    with pytest.raises(ValueError, match="must be a JSON object"):
        request_hash(body)


@pytest.mark.parametrize("depth", [200, 100_000])
def test_deep_nesting_raises_instead_of_crashing(depth: int) -> None:
    body = b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(ValueError, match="recursion limit"):
        request_hash(body)
    with pytest.raises(ValueError, match="recursion limit"):
        prefix_hashes(b'{"messages": [' + body + b"]}")


def test_moderate_nesting_is_fine() -> None:
    body = b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}"
    assert len(request_hash(body)) == 32


def test_large_body_hashes_the_same_across_calls() -> None:
    body = {**BASE, "messages": [{"role": "user", "content": "x" * 100 + str(i)} for i in range(200)]}
    raw = json.dumps(body).encode()
    assert len(raw) > 8 * 1024  # GIL-released path
    assert request_hash(raw) == request_hash(json.dumps(_permuted(body, random.Random(1))).encode())


# --- prefix_hashes ---------------------------------------------------------------------------------


def _conversation(n: int, tag: str = "") -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "sys"}]
    msgs += [{"role": "user" if i % 2 else "assistant", "content": f"turn {i}{tag}"} for i in range(1, n)]
    return msgs


def test_prefix_hashes_one_per_message() -> None:
    hashes = prefix_hashes(json.dumps({"messages": _conversation(5)}).encode())
    assert len(hashes) == 5
    assert len(set(hashes)) == 5
    assert all(0 <= h < 2**64 for h in hashes)


@pytest.mark.parametrize("k", [0, 1, 3, 6])
def test_shared_prefix_shares_hashes(k: int) -> None:
    common = _conversation(k) if k else []
    tail_a = [{"role": "user", "content": "A"}, {"role": "assistant", "content": "x"}]
    a = prefix_hashes(json.dumps({"messages": [*common, *tail_a]}).encode())
    b = prefix_hashes(json.dumps({"messages": [*common, {"role": "user", "content": "B"}]}).encode())
    assert a[:k] == b[:k]
    assert a[k] != b[k]


def test_prefix_ignores_key_order_model_and_sampling() -> None:
    conv = _conversation(4)
    a = prefix_hashes(json.dumps({"model": "m1", "temperature": 0, "messages": conv, "tools": BASE["tools"]}).encode())
    permuted = _permuted(
        {"messages": conv, "tools": BASE["tools"], "response_format": {"type": "json_object"}}, random.Random(5)
    )
    b = prefix_hashes(json.dumps({**permuted, "model": "m2", "seed": 1}).encode())
    assert a == b


def test_tools_change_every_prefix_hash() -> None:
    conv = _conversation(3)
    plain = prefix_hashes(json.dumps({"messages": conv}).encode())
    tooled = prefix_hashes(json.dumps({"messages": conv, "tools": BASE["tools"]}).encode())
    legacy = prefix_hashes(json.dumps({"messages": conv, "functions": [BASE["tools"][0]["function"]]}).encode())
    assert len({*plain, *tooled, *legacy}) == 9


def test_prefix_hashes_edge_cases() -> None:
    assert prefix_hashes(b"{}") == []
    assert prefix_hashes(b'{"messages": []}') == []
    with pytest.raises(ValueError, match="must be an array"):
        prefix_hashes(b'{"messages": {"role": "user"}}')
