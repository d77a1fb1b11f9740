"""The key fields LiteLLM's ``/key/*`` endpoints accept, checked into ``KeyRecord`` values, and the key's view.

Fields LiteLLM knows but mmproxy does not enforce (tags, permissions, soft budgets, ...) are not silently
dropped: the response lists them under ``ignored_fields``.
"""

from __future__ import annotations

from typing import Any

from mmproxy.db.base import KeyRecord
from mmproxy.errors import bad_request
from mmproxy.keys import durations

_LIMITS = ("rpm_limit", "tpm_limit")
_TEXT = ("key_alias", "team_id", "user_id")
_MAX_LIMIT = 2**63 - 1  # what the database's 64-bit integer columns hold
EDITABLE = frozenset({*_LIMITS, *_TEXT, "models", "max_budget", "budget_duration", "metadata", "duration", "blocked"})


def parse_fields(body: dict[str, Any], now: float) -> tuple[dict[str, Any], list[str]]:
    """KeyRecord field values set by ``body`` and the names of fields that were ignored."""
    changes: dict[str, Any] = {}
    for name in _TEXT:
        if name in body:
            value = body[name]
            if value is not None and not isinstance(value, str):
                raise bad_request(f"{name} must be a string", param=name)
            changes[name] = value
    if "models" in body:
        models = body["models"]
        if models is None:
            models = []
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise bad_request("models must be a list of model names", param="models")
        changes["models"] = models
    if "max_budget" in body:
        budget = body["max_budget"]
        if budget is not None and (not _is_number(budget) or budget < 0):
            raise bad_request("max_budget must be a non-negative number of US dollars", param="max_budget")
        changes["max_budget"] = None if budget is None else float(budget)
    if "budget_duration" in body:
        window = body["budget_duration"]
        if window is None:
            changes["budget_duration"] = changes["budget_reset_at"] = None
        else:
            _duration(window, "budget_duration")
            changes["budget_duration"] = window
            changes["budget_reset_at"] = durations.next_reset(now, window, now)
    for name in _LIMITS:
        if name in body:
            limit = body[name]
            if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                      or not 0 <= limit <= _MAX_LIMIT):
                raise bad_request(f"{name} must be an integer from 0 to {_MAX_LIMIT}", param=name)
            changes[name] = limit
    if "metadata" in body:
        metadata = body["metadata"]
        if metadata is not None and not isinstance(metadata, dict):
            raise bad_request("metadata must be an object", param="metadata")
        changes["metadata"] = metadata or {}
    if "duration" in body:  # LiteLLM: the key expires this long after now
        lifetime = body["duration"]
        changes["expires"] = None if lifetime is None else now + _duration(lifetime, "duration")
    if "blocked" in body:
        if not isinstance(body["blocked"], bool):
            raise bad_request("blocked must be true or false", param="blocked")
        changes["blocked"] = body["blocked"]
    ignored = sorted(name for name in body if name not in EDITABLE and name not in ("key", "keys"))
    return changes, ignored


def _duration(value: Any, param: str) -> int:
    try:
        return durations.seconds(value)
    except ValueError as exc:
        raise bad_request(f"{param}: {exc}", param=param) from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def view(record: KeyRecord) -> dict[str, Any]:
    """The key as the API shows it: the hash as ``token``, never the clear key."""
    return {
        "token": record.key_hash,
        "key_name": record.key_name,
        "key_alias": record.key_alias,
        "team_id": record.team_id,
        "user_id": record.user_id,
        "models": record.models,
        "max_budget": record.max_budget,
        "budget_duration": record.budget_duration,
        "budget_reset_at": durations.iso(record.budget_reset_at),
        "spend": record.spend,
        "rpm_limit": record.rpm_limit,
        "tpm_limit": record.tpm_limit,
        "metadata": record.metadata,
        "expires": durations.iso(record.expires),
        "created_at": durations.iso(record.created_at),
        "blocked": record.blocked,
    }
