"""Canonical request hashing for the response cache and prefix-aware routing.

Thin typed layer over the Rust extension (`rust/src/hashing.rs`).
"""

from mmproxy import _native

__all__ = ["IGNORED_FIELDS", "prefix_hashes", "request_hash"]

IGNORED_FIELDS: frozenset[str] = frozenset(_native.IGNORED_FIELDS)
"""Top-level fields that cannot change the answer (streaming, timeouts, user ids, …), left out of the key."""


def request_hash(body: bytes, namespace: str = "") -> str:
    """Cache key (32 hex chars, xxh3-128) of a raw chat request body.

    Key order, whitespace, string escapes and number spelling (1, 1.0, 1e0) do not change the key;
    any change to a field outside IGNORED_FIELDS does. `namespace` (model group, tenant) is mixed in.
    Raises ValueError for invalid JSON, a non-object body, or nesting deeper than 128 levels.
    """
    return _native.request_hash(body, namespace)


def prefix_hashes(body: bytes) -> list[int]:
    """Rolling u64 hashes, one per message: item i covers the tool definitions and messages[0..i].

    Two requests with equal tools and equal first k messages share their first k hashes.
    Raises ValueError for invalid JSON or a `messages` field that is not an array.
    """
    return _native.prefix_hashes(body)
