"""The fields LiteLLM's ``/key/*``, ``/team/*`` and ``/user/*`` endpoints accept, checked into record values, and
the views the endpoints return.

Keys, teams and users share their budget and limit fields; ``Spec`` names what each has besides. Fields LiteLLM
knows but mmproxy does not enforce (tags, permissions, soft budgets, ...) are not silently dropped: the response
lists them under ``ignored_fields``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mmproxy.db.base import KeyRecord, TeamRecord, UserRecord
from mmproxy.errors import bad_request
from mmproxy.keys import durations

_LIMITS = ("rpm_limit", "tpm_limit")
_SHARED = frozenset({*_LIMITS, "max_budget", "budget_duration", "metadata", "blocked"})
_TIMES = ("budget_reset_at", "created_at")
_MAX_LIMIT = 2**63 - 1  # what the database's 64-bit integer columns hold


@dataclass(frozen=True, slots=True)
class Spec:
    """What one kind of record has besides the shared budget and limit fields."""

    text: tuple[str, ...]  # optional strings
    lists: dict[str, str]  # lists of strings, with what their items are
    expiry: bool  # ``duration``: the record expires this long after now
    request: tuple[str, ...]  # request fields that are not record fields but are not ignored either

    @property
    def editable(self) -> frozenset[str]:
        return frozenset({*_SHARED, *self.text, *self.lists, *(("duration",) if self.expiry else ())})


KEY = Spec(("key_alias", "team_id", "user_id"), {"models": "model names"}, True, ("key", "keys"))
TEAM = Spec(("team_alias",), {"models": "model names"}, False, ("team_id",))
USER = Spec(("user_email", "user_alias"), {"models": "model names", "teams": "team ids"}, False, ("user_id",))


def parse_fields(body: dict[str, Any], now: float, spec: Spec = KEY) -> tuple[dict[str, Any], list[str]]:
    """Record field values set by ``body`` and the names of fields that were ignored."""
    changes: dict[str, Any] = {}
    for name in spec.text:
        if name in body:
            value = body[name]
            if value is not None and not isinstance(value, str):
                raise bad_request(f"{name} must be a string", param=name)
            changes[name] = value
    for name, items in spec.lists.items():
        if name in body:
            values = body[name]
            if values is None:
                values = []
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise bad_request(f"{name} must be a list of {items}", param=name)
            changes[name] = values
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
    if spec.expiry and "duration" in body:  # LiteLLM: the key expires this long after now
        lifetime = body["duration"]
        changes["expires"] = None if lifetime is None else now + _duration(lifetime, "duration")
    if "blocked" in body:
        if not isinstance(body["blocked"], bool):
            raise bad_request("blocked must be true or false", param="blocked")
        changes["blocked"] = body["blocked"]
    editable = spec.editable
    ignored = sorted(name for name in body if name not in editable and name not in spec.request)
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


def owner_view(record: TeamRecord | UserRecord) -> dict[str, Any]:
    """A team or user as the API shows it: LiteLLM's field names, times in ISO 8601."""
    out = dataclasses.asdict(record)
    for name in _TIMES:
        out[name] = durations.iso(out[name])
    return out
