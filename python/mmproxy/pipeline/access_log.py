"""One line per API request on standard output: what an operator greps for when something went wrong.

Why not the logging module: a log record per request costs about 10 µs of formatting and handler locks; the
line here is built once from the request's record (the same one the ledger keeps) and written with one call.
Lines shorter than the pipe buffer from several ``--workers`` never interleave. Off by default
(``mmproxy serve --access-log [text|json]``). Never a key: a virtual key shows as its alias, else the first
12 hex digits of its hash.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

import orjson

from mmproxy.spend.record import RequestRecord

FORMATS = ("text", "json")


class AccessLog:
    def __init__(self, fmt: str = "text", stream: TextIO | None = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"access log format must be one of {', '.join(FORMATS)}")
        self._json = fmt == "json"
        self._stream = stream or sys.stdout

    def write(self, record: RequestRecord) -> None:
        line = orjson.dumps(_fields(record)).decode() if self._json else _text_line(record)
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a closed or full stdout must never fail a request


def _quoted(value: str | None) -> str:
    """A free-form value for ``key=value``: ``-`` for none, JSON-quoted when it holds a space, quote, ``=`` or
    any character that is not printable (a caller's CR, NUL or escape sequence must not forge or garble a line)."""
    if value is None:
        return "-"
    if not value.isprintable():
        return json.dumps(value)  # ASCII only: every control, separator and format character escaped
    if not value or " " in value or '"' in value or "=" in value:
        return orjson.dumps(value).decode()
    return value


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _key(record: RequestRecord) -> str | None:
    """A virtual key as the log may show it: its alias, else the start of its hash; never the key."""
    return record.key_alias or (record.key_hash[:12] if record.key_hash else None)


def _text_line(r: RequestRecord) -> str:
    key = _key(r)
    return (f"time={_stamp(r.started)} request_id={r.request_id} endpoint={r.endpoint} status={r.status} "
            f"model={_quoted(r.requested_model or None)} group={_quoted(r.model_group)} "
            f"deployment={_quoted(r.deployment)} ms={r.latency_ms:.3f} ttft_ms={_ms(r.ttft_ms)} "
            f"overhead_ms={_ms(r.overhead_ms)} tokens_in={r.prompt_tokens} tokens_out={r.completion_tokens} "
            f"cost_usd={r.cost_usd:.9f} cache={r.cache or '-'} retries={r.retries} fallbacks={r.fallbacks} "
            f"rule={_quoted(r.rule)} key={_quoted(key)} team={_quoted(r.team_id)} error={_quoted(r.error_code)}")


def _stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


def _fields(record: RequestRecord) -> dict[str, Any]:
    key = _key(record)
    return {
        "time": _stamp(record.started),
        "request_id": record.request_id,
        "endpoint": record.endpoint,
        "status": record.status,
        "model": record.requested_model or None,
        "group": record.model_group,
        "deployment": record.deployment,
        "ms": round(record.latency_ms, 3),
        "ttft_ms": None if record.ttft_ms is None else round(record.ttft_ms, 3),
        "overhead_ms": None if record.overhead_ms is None else round(record.overhead_ms, 3),
        "tokens_in": record.prompt_tokens,
        "tokens_out": record.completion_tokens,
        "cost_usd": round(record.cost_usd, 9),
        "cache": record.cache,
        "retries": record.retries,
        "fallbacks": record.fallbacks,
        "rule": record.rule,
        "key": key,
        "team": record.team_id,
        "error": record.error_code,
    }
