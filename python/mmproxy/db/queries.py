"""SQL text both backends run, built once per dialect; the backends only execute it and convert values."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from mmproxy.db.base import KeyRecord
from mmproxy.db.schema import FEEDBACK, KEYS, LOGS, VERSIONS, Dialect
from mmproxy.spend.record import COLUMNS

KEY_FIELDS: tuple[str, ...] = tuple(field.name for field in fields(KeyRecord))
FEEDBACK_FIELDS = ("feedback_score", "feedback_label", "feedback_comment")

# What each report grouping reads from the ledger.
GROUPS = {
    "model": "requested_model",
    "cache": "cache",
    "model_group": "model_group",
    "deployment": "deployment",
    "key": "key_hash",
    "team": "team_id",
    "tier": "tier",
    "rule": "rule",
    "provider": "provider",
}

# A request succeeded when the client got a good answer and nobody rated it bad afterwards.
_SUCCESS = "l.status < 400 AND l.error_code IS NULL AND (f.score IS NULL OR f.score >= 0.5)"
_EXACT = "l.cache = 'hit'"
_SEMANTIC = "l.cache = 'semantic-hit'"
_REPORT_MEASURES = f"""
    COUNT(*) AS requests,
    COALESCE(SUM(CASE WHEN {_SUCCESS} THEN 1 ELSE 0 END), 0) AS successes,
    COALESCE(SUM(l.cost_usd), 0.0) AS cost_usd,
    COALESCE(SUM(l.prompt_tokens), 0) AS prompt_tokens,
    COALESCE(SUM(l.completion_tokens), 0) AS completion_tokens,
    COALESCE(SUM(l.cached_tokens), 0) AS cached_tokens,
    COALESCE(SUM(l.cache_write_tokens), 0) AS cache_write_tokens,
    COALESCE(SUM(CASE WHEN {_EXACT} THEN 1 ELSE 0 END), 0) AS cache_hits,
    COALESCE(SUM(CASE WHEN {_SEMANTIC} THEN 1 ELSE 0 END), 0) AS semantic_hits,
    COALESCE(SUM(CASE WHEN {_EXACT} THEN l.saved_usd ELSE 0.0 END), 0.0) AS saved_exact,
    COALESCE(SUM(CASE WHEN {_SEMANTIC} THEN l.saved_usd ELSE 0.0 END), 0.0) AS saved_semantic,
    COALESCE(SUM(CASE WHEN {_EXACT} OR {_SEMANTIC} THEN 0.0 ELSE l.saved_usd END), 0.0) AS saved_prompt,
    AVG(l.latency_ms) AS avg_latency_ms,
    AVG(l.ttft_ms) AS avg_ttft_ms,
    COALESCE(SUM(l.retries), 0) AS retries,
    COALESCE(SUM(l.fallbacks), 0) AS fallbacks,
    COUNT(f.request_id) AS feedback_count,
    AVG(f.score) AS avg_feedback_score"""


@dataclass(frozen=True, slots=True)
class Queries:
    """The fixed statements of one dialect."""

    insert_log: str  # skips a request_id already stored, so a retried batch is not written twice
    add_spend: str
    version: str
    record_version: str
    request_exists: str
    upsert_feedback: str
    insert_key: str
    get_key: str
    all_keys: str

    @classmethod
    def build(cls, d: Dialect) -> Queries:
        key_columns = ", ".join(KEY_FIELDS)
        return cls(
            insert_log=(f"INSERT INTO {LOGS} ({', '.join(COLUMNS)}) "
                        f"VALUES ({_params(d, len(COLUMNS))}) ON CONFLICT (request_id) DO NOTHING"),
            add_spend=f"UPDATE {KEYS} SET spend = spend + {d.p(2)} WHERE key_hash = {d.p(1)}",
            version=f"SELECT MAX(version) FROM {VERSIONS}",
            record_version=f"INSERT INTO {VERSIONS} (version, applied_at) VALUES ({d.p(1)}, {d.p(2)})",
            request_exists=f"SELECT 1 FROM {LOGS} WHERE request_id = {d.p(1)}",
            upsert_feedback=(f"INSERT INTO {FEEDBACK} (request_id, score, label, comment, submitted_at) "
                             f"VALUES ({_params(d, 5)}) ON CONFLICT (request_id) DO UPDATE SET "
                             "score = excluded.score, label = excluded.label, comment = excluded.comment, "
                             "submitted_at = excluded.submitted_at"),
            insert_key=f"INSERT INTO {KEYS} ({key_columns}) VALUES ({_params(d, len(KEY_FIELDS))})",
            get_key=f"SELECT {key_columns} FROM {KEYS} WHERE key_hash = {d.p(1)}",
            all_keys=f"SELECT {key_columns} FROM {KEYS}",
        )


def _params(d: Dialect, count: int) -> str:
    return ", ".join(d.p(number) for number in range(1, count + 1))


def _window(d: Dialect, args: list[Any], start: float | None, end: float | None) -> list[str]:
    """Conditions for ``start <= started < end``; appends their values to ``args``."""
    where = []
    if start is not None:
        args.append(start)
        where.append(f"l.started >= {d.p(len(args))}")
    if end is not None:
        args.append(end)
        where.append(f"l.started < {d.p(len(args))}")
    return where


def spend_logs(d: Dialect, request_id: str | None, key_hash: str | None, team_id: str | None, model: str | None,
               start: float | None, end: float | None, limit: int) -> tuple[str, list[Any]]:
    if limit < 0:
        raise ValueError("limit must not be negative")
    args: list[Any] = []
    where = []
    for column, value in (("request_id", request_id), ("key_hash", key_hash), ("team_id", team_id),
                          ("requested_model", model)):
        if value is not None:
            args.append(value)
            where.append(f"l.{column} = {d.p(len(args))}")
    where += _window(d, args, start, end)
    args.append(limit)
    columns = ", ".join(f"l.{column}" for column in COLUMNS)
    sql = (f"SELECT {columns}, f.score AS feedback_score, f.label AS feedback_label, f.comment AS feedback_comment "
           f"FROM {LOGS} l LEFT JOIN {FEEDBACK} f ON f.request_id = l.request_id "
           f"{_where(where)} ORDER BY l.started DESC, l.request_id DESC LIMIT {d.p(len(args))}")
    return sql, args


def rated_decisions(d: Dialect, model: str, limit: int) -> tuple[str, list[Any]]:
    """The requests to ``model`` that carry a decision and a feedback score, newest first: what a learned router
    learns from its own traffic."""
    sql = (f"SELECT l.request_id, l.started, l.decision, l.completion_tokens, f.score AS feedback_score "
           f"FROM {LOGS} l JOIN {FEEDBACK} f ON f.request_id = l.request_id "
           f"WHERE l.requested_model = {d.p(1)} AND l.decision IS NOT NULL AND f.score IS NOT NULL "
           f"ORDER BY l.started DESC, l.request_id DESC LIMIT {d.p(2)}")
    return sql, [model, limit]


def spend_report(d: Dialect, group_by: str, start: float | None, end: float | None, key_hash: str | None = None,
                 bucket_s: int | None = None) -> tuple[str, list[Any]]:
    """Totals per group; with ``bucket_s``, per group and per time bucket of that many seconds (a ``bucket``
    column holding the bucket's start, epoch seconds), for charts; ``key_hash`` keeps one key's rows."""
    column = GROUPS.get(group_by)
    if column is None:
        raise ValueError(f"group_by must be one of {', '.join(GROUPS)}")
    args: list[Any] = []
    # Client requests only: a virtual model's sub-calls are inside their request's cost already.
    where = ["l.parent_id IS NULL", *_window(d, args, start, end)]
    if key_hash is not None:
        args.append(key_hash)
        where.append(f"l.key_hash = {d.p(len(args))}")
    alias = ", MAX(l.key_alias) AS key_alias" if group_by == "key" else ""
    if bucket_s is None:
        return (f"SELECT l.{column} AS grp{alias},{_REPORT_MEASURES} "
                f"FROM {LOGS} l LEFT JOIN {FEEDBACK} f ON f.request_id = l.request_id "
                f"{_where(where)} GROUP BY l.{column} ORDER BY cost_usd DESC, requests DESC"), args
    if not isinstance(bucket_s, int) or bucket_s <= 0:  # written into the statement, so checked here
        raise ValueError("bucket_s must be a positive number of seconds")
    epoch = "l.started" if d.name == "sqlite" else "EXTRACT(EPOCH FROM l.started)"
    bucket = f"CAST({epoch} / {bucket_s} AS BIGINT) * {bucket_s}"
    return (f"SELECT {bucket} AS bucket, l.{column} AS grp{alias},{_REPORT_MEASURES} "
            f"FROM {LOGS} l LEFT JOIN {FEEDBACK} f ON f.request_id = l.request_id "
            f"{_where(where)} GROUP BY 1, l.{column} ORDER BY 1, cost_usd DESC"), args


def report_row(row: dict[str, Any]) -> dict[str, Any]:
    """Shape one grouped row: derived figures computed, the three savings gathered."""
    out: dict[str, Any] = {"group": row.pop("grp")}
    saved = {"exact": row.pop("saved_exact"), "semantic": row.pop("saved_semantic"),
             "prompt": row.pop("saved_prompt")}
    out.update(row)
    out["failures"] = row["requests"] - row["successes"]
    out["cost_per_success_usd"] = row["cost_usd"] / row["successes"] if row["successes"] else None
    out["saved_usd"] = saved
    return out


def list_keys(d: Dialect, team_id: str | None, limit: int, offset: int) -> tuple[str, list[Any]]:
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must not be negative")
    args: list[Any] = []
    where = []
    if team_id is not None:
        args.append(team_id)
        where.append(f"team_id = {d.p(1)}")
    args += [limit, offset]
    sql = (f"SELECT {', '.join(KEY_FIELDS)} FROM {KEYS} {_where(where)} "
           f"ORDER BY created_at, key_hash LIMIT {d.p(len(args) - 1)} OFFSET {d.p(len(args))}")
    return sql, args


def update_key(d: Dialect, names: list[str]) -> str:
    """``UPDATE`` of ``names`` (values at 2..n+1, the key's hash at 1) that returns the changed row."""
    unknown = [name for name in names if name not in KEY_FIELDS]
    if unknown:
        raise ValueError(f"unknown key field(s): {', '.join(unknown)}")
    assignments = ", ".join(f"{name} = {d.p(number)}" for number, name in enumerate(names, start=2))
    return f"UPDATE {KEYS} SET {assignments} WHERE key_hash = {d.p(1)} RETURNING {', '.join(KEY_FIELDS)}"


def _where(conditions: list[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""
