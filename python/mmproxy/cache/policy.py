"""Which requests the response cache may answer or keep, and under which key.

Turning the cache on states that identical requests may share an answer, and LiteLLM caches every request its
key matches, so by default so does this cache. A request that sets ``temperature > 0`` (or ``top_p < 1``), asks
for ``n > 1`` choices or offers tools may expect a fresh answer: ``cache_sampled``, ``cache_n`` and
``cache_tools`` set to false give it one.
Per request, ``Cache-Control: no-cache`` / ``no-store`` (header) and the body field
``cache: {"no-cache", "no-store", "ttl", "namespace", "s-maxage", "use-cache"}`` (LiteLLM's) refine that.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mmproxy import hashing
from mmproxy.config import CacheSettings
from mmproxy.errors import bad_request


@dataclass(slots=True)
class Lookup:
    """One request's cache plan: its key and what it may do with the cache."""

    key: bytes  # 16 bytes: the Rust canonical hash of the request under its scope
    scope: str  # model group, namespace and caller: entries never cross these
    read: bool
    store: bool
    ttl: float
    max_age: float | None  # s-maxage: the oldest entry this request accepts, seconds

    def fresh(self, created: float) -> bool:
        return self.max_age is None or time.time() - created <= self.max_age


def plan(settings: CacheSettings, headers: Mapping[str, str], payload: dict[str, Any], raw: bytes, group: str,
         caller: str, endpoint: str = "chat") -> Lookup | None:
    """The cache plan for a request to ``endpoint`` ("chat", "messages", "embeddings" or "responses"), or None when
    the cache has nothing to do with it."""
    options = payload.get("cache")
    if options is None:
        options = {}
    elif not isinstance(options, dict):
        raise bad_request("cache must be an object such as {\"no-cache\": true, \"ttl\": 60}", param="cache")
    if endpoint not in settings.endpoints or (not settings.default_on and options.get("use-cache") is not True):
        return None
    header = headers.get("Cache-Control", "").lower()
    read = "no-cache" not in header and options.get("no-cache") is not True
    store = "no-store" not in header and options.get("no-store") is not True
    if not (read or store) or not _eligible(settings, payload):
        return None
    ttl = options.get("ttl", settings.ttl)
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or ttl <= 0:
        raise bad_request("cache.ttl must be a positive number of seconds", param="cache.ttl")
    max_age = options.get("s-maxage")
    if max_age is not None and (not isinstance(max_age, (int, float)) or isinstance(max_age, bool) or max_age < 0):
        raise bad_request("cache.s-maxage must be a non-negative number of seconds", param="cache.s-maxage")
    namespace = options.get("namespace", settings.namespace)
    if not isinstance(namespace, str):
        raise bad_request("cache.namespace must be a string", param="cache.namespace")
    # A stream is replayed as the bytes its first client got, so the stream shape is part of the scope.
    stream = payload.get("stream") is True
    stream_options = payload.get("stream_options")
    usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    shape = ("stream+usage" if usage else "stream") if stream else "json"
    if endpoint != "chat":  # the same body asked of another API wants its answer in that API's shape
        shape = f"{endpoint}:{shape}"
    scope = "\0".join((group, namespace, "" if settings.shared else caller, shape))
    try:
        key = bytes.fromhex(hashing.request_hash(raw, scope))
    except ValueError:
        return None
    return Lookup(key, scope, read, store, float(ttl), None if max_age is None else float(max_age))


def _eligible(settings: CacheSettings, payload: dict[str, Any]) -> bool:
    if not settings.cache_sampled:
        temperature = payload.get("temperature")
        top_p = payload.get("top_p")
        if (isinstance(temperature, (int, float)) and temperature > 0) or (
                isinstance(top_p, (int, float)) and top_p < 1):
            return False
    n = payload.get("n")
    if not settings.cache_n and isinstance(n, int) and n > 1:
        return False
    return settings.cache_tools or not (payload.get("tools") or payload.get("functions"))
