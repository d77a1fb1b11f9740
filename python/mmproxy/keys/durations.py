"""LiteLLM's duration strings ("30s", "10m", "1h", "7d", "30d") for budget windows and key expiry."""

from __future__ import annotations

import re
import time

_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*(mo|s|m|h|d|w)\s*$")


def seconds(text: str) -> int:
    """Seconds in ``text``; ValueError with the accepted forms when it is not a duration."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration; use a positive number with s, m, h, d, w or mo (e.g. '30d')")
    total = int(match.group(1)) * _UNIT_S[match.group(2)]
    if total > _MAX_S:  # a time that far ahead is past what floats and calendars hold
        raise ValueError(f"{text!r} is longer than 100 years")
    return total


_MAX_S = 100 * 365 * 86400


def next_reset(start: float, duration: str, now: float) -> float:
    """The first window boundary after ``now`` for windows of ``duration`` starting at ``start``."""
    step = seconds(duration)
    if now < start:
        return start
    return start + ((now - start) // step + 1) * step


def iso(epoch: float | None) -> str | None:
    """UTC ISO 8601, as LiteLLM's key endpoints show times."""
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
