"""The storage layer on a real SQLite file and a real PostgreSQL server: ledger, reports, feedback and keys."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mmproxy.db import Database, KeyRecord, open_database
from mmproxy.db.base import TeamRecord, UserRecord
from mmproxy.db.postgres import PostgresDatabase
from mmproxy.db.queries import GROUPS
from mmproxy.db.schema import KEYS, LATEST, LOGS, POSTGRES, SQLITE, VERSIONS, pending, version_table
from mmproxy.db.sqlite import SQLiteDatabase
from mmproxy.spend.record import COLUMNS, RequestRecord

BACKENDS = ["sqlite", "postgres"]
T0 = 1_700_000_000.0
KEY_A = "a" * 64
KEY_B = "b" * 64


@contextlib.asynccontextmanager
async def fresh_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database of ``backend``: a new file, or a new database on the session's server."""
    if backend == "sqlite":
        yield f"sqlite://{tmp_path / 'mmproxy.db'}"
        return
    server: str = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield f"{server.rsplit('/', 1)[0]}/{name}"
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@pytest.fixture(params=BACKENDS, name="url")
async def url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_url(request.param, request, tmp_path) as database_url:
        yield database_url


@pytest.fixture(name="db")
async def db_fixture(url: str, tmp_path: Path) -> AsyncIterator[Database]:
    database = open_database(url, tmp_path / "unused.db")
    await database.start()
    yield database
    await database.close()


async def scalar(url: str, sql: str) -> Any:
    """One value read behind the layer's back, through the plain driver."""
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite://"))) as conn:
            return conn.execute(sql).fetchone()[0]
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def record(request_id: str, started: float = T0, **fields: Any) -> RequestRecord:
    rec = RequestRecord(request_id, "chat")
    rec.started = started
    rec.requested_model = "gpt-4o"
    for name, value in fields.items():
        setattr(rec, name, value)
    return rec


def key(key_hash: str = KEY_A, **fields: Any) -> KeyRecord:
    values: dict[str, Any] = {
        "key_hash": key_hash, "key_name": f"sk-...{key_hash[-4:]}", "key_alias": None, "team_id": None,
        "user_id": None, "models": [], "max_budget": None, "budget_duration": None, "budget_reset_at": None,
        "spend": 0.0, "rpm_limit": None, "tpm_limit": None, "metadata": {}, "expires": None, "created_at": T0,
    }
    values.update(fields)
    return KeyRecord(**values)


async def write(db: Database, *records: RequestRecord) -> None:
    spend: dict[str, float] = {}
    for rec in records:
        if rec.key_hash is not None:
            spend[rec.key_hash] = spend.get(rec.key_hash, 0.0) + rec.cost_usd
    await db.write_requests([rec.row() for rec in records], spend)


# -- schema ----------------------------------------------------------------------------------------
def test_schema_columns_follow_the_record() -> None:
    """The table as created, then each later migration's added columns, in the record's column order."""
    migrations = pending(SQLITE, 0)
    statement = migrations[0][1][0]
    lines = [line.strip() for line in statement.splitlines()[1:]]
    declared = [line.split()[0] for line in lines if line and not line.startswith(")")]
    for _, statements in migrations[1:]:
        declared += [s.split("ADD COLUMN ")[1].split()[0] for s in statements if f"{LOGS} ADD COLUMN" in s]
    assert tuple(declared) == COLUMNS


async def test_schema_is_created_once_however_many_start(url: str, tmp_path: Path) -> None:
    first, second = open_database(url, tmp_path / "x"), open_database(url, tmp_path / "x")
    await asyncio.gather(first.start(), second.start())  # two instances starting together
    await first.insert_key(key())
    await first.close()
    await second.close()
    again = open_database(url, tmp_path / "x")
    await again.start()
    try:
        assert await again.get_key(KEY_A) == key()
    finally:
        await again.close()
    assert await scalar(url, f"SELECT COUNT(*) FROM {VERSIONS}") == LATEST
    assert await scalar(url, f"SELECT MAX(version) FROM {VERSIONS}") == LATEST


async def test_a_database_of_an_earlier_version_is_migrated_and_keeps_its_rows(url: str, tmp_path: Path) -> None:
    """A ledger written by the first schema version gains the later columns on start; its rows stay."""
    first = pending(POSTGRES if url.startswith("postgres") else SQLITE, 0)[0]
    dialect = POSTGRES if url.startswith("postgres") else SQLITE
    ts, no_items, false = ("to_timestamp(1)", "'{}'", "false") if dialect is POSTGRES else ("1", "'[]'", "0")
    statements = [version_table(dialect), *first[1],
                  f"INSERT INTO {LOGS} (request_id, started, endpoint, cost_usd) VALUES ('old-1', {ts}, 'chat', 0.5)",
                  *(f"INSERT INTO {KEYS} (key_hash, key_name, team_id, user_id, models, spend, metadata, created_at, "
                    f"blocked) VALUES ('{key_hash}', 'sk-...', {team}, {user}, {no_items}, {spend}, '{{}}', {ts}, "
                    f"{false})" for key_hash, team, user, spend in (
                        (KEY_A, "'old-team'", "'old-user'", 0.25), (KEY_B, "'old-team'", "NULL", 0.5))),
                  f"INSERT INTO {VERSIONS} (version, applied_at) VALUES (1, "
                  f"{'now()' if dialect is POSTGRES else '1'})"]
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite://"))) as conn:
            for statement in statements:
                conn.execute(statement)
            conn.commit()
    else:
        conn = await asyncpg.connect(url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()
    db = open_database(url, tmp_path / "unused.db")
    await db.start()
    try:
        newer = record("new-1", decision='{"router": "smart"}')
        await db.write_requests([newer.row()], {})
        rows = {row["request_id"]: row for row in await db.spend_logs(limit=10)}
        team, user = await db.get_record(TeamRecord, "old-team"), await db.get_record(UserRecord, "old-user")
    finally:
        await db.close()
    # The teams and users the keys named were made, with what their keys had spent and no limits.
    assert team == TeamRecord("old-team", None, [], None, None, None, 0.75, None, None, {}, 1.0)
    assert user == UserRecord("old-user", None, None, [], [], None, None, None, 0.25, None, None, {}, 1.0)
    assert rows["old-1"]["cost_usd"] == 0.5 and rows["old-1"]["decision"] is None
    assert rows["new-1"]["decision"] == '{"router": "smart"}'
    assert await scalar(url, f"SELECT MAX(version) FROM {VERSIONS}") == LATEST


# -- ledger rows -----------------------------------------------------------------------------------
def full_record() -> RequestRecord:
    return record(
        "req-full", started=T0 + 0.123456, endpoint="messages", key_hash=KEY_A, key_alias="équipe 团队 key",
        team_id="team-a", requested_model="claude", model_group="claude-group", deployment="claude-1",
        provider="anthropic", tier="frontier", rule="long-context", stream=True, prompt_tokens=1200,
        completion_tokens=340, cached_tokens=1000, cache_write_tokens=150, cost_usd=0.012345, saved_usd=0.0027,
        cache="miss", latency_ms=812.5, ttft_ms=95.25, overhead_ms=0.8125, status=200, error_code=None,
        retries=1, fallbacks=2,
    )


def sparse_record() -> RequestRecord:
    return record("req-sparse", started=T0 + 1, status=502, error_code="stream_cut", latency_ms=3.0)


async def test_rows_read_back_with_every_type_intact(url: str, db: Database) -> None:
    written = [full_record(), sparse_record()]
    await write(db, *written)
    # Seen by plain SQL too: PostgreSQL holds a real timestamp, SQLite the epoch seconds.
    started = "started" if url.startswith("sqlite") else "EXTRACT(EPOCH FROM started)::float8"
    assert await scalar(url, f"SELECT {started} FROM {LOGS} WHERE request_id = 'req-full'") == pytest.approx(
        T0 + 0.123456, abs=1e-6)
    for rec in written:
        [row] = await db.spend_logs(request_id=rec.request_id)
        assert list(row)[: len(COLUMNS)] == list(COLUMNS)
        for name, expected in zip(COLUMNS, rec.row(), strict=True):
            if name == "started":
                assert row[name] == pytest.approx(expected, abs=1e-6)
            else:
                assert row[name] == expected, name
            assert type(row[name]) is type(expected), name
        assert (row["feedback_score"], row["feedback_label"], row["feedback_comment"]) == (None, None, None)


async def test_key_spend_is_added_with_the_rows(db: Database) -> None:
    await db.insert_key(key(KEY_A, spend=1.0))
    await db.insert_key(key(KEY_B))
    await write(db, record("r1", key_hash=KEY_A, cost_usd=0.25), record("r2", key_hash=KEY_A, cost_usd=0.5),
                record("r3", key_hash="f" * 64, cost_usd=9.0))  # a key deleted meanwhile: rows still land
    assert (await db.get_key(KEY_A)).spend == pytest.approx(1.75)
    assert (await db.get_key(KEY_B)).spend == 0.0
    assert len(await db.spend_logs()) == 3


async def test_rows_and_key_spend_commit_together(db: Database) -> None:
    await db.insert_key(key(KEY_A))
    with pytest.raises(Exception):  # noqa: B017 -- the driver's own error for an amount it cannot send
        await db.write_requests([record("r1", key_hash=KEY_A, cost_usd=0.5).row()], {KEY_A: object()})  # type: ignore[dict-item]
    assert await db.spend_logs() == []
    assert (await db.get_key(KEY_A)).spend == 0.0


async def test_a_retried_batch_counts_once(db: Database) -> None:
    await db.insert_key(key(KEY_A))
    first = [record("r1", key_hash=KEY_A, cost_usd=0.25), record("r2", key_hash=KEY_A, cost_usd=0.5)]
    await write(db, *first)
    await write(db, *first, record("r3", key_hash=KEY_A, cost_usd=2.0))  # committed before, then retried
    assert sorted(row["request_id"] for row in await db.spend_logs()) == ["r1", "r2", "r3"]
    assert (await db.get_key(KEY_A)).spend == pytest.approx(2.75)


async def test_a_batch_of_many_inserts_commits_whole(url: str, db: Database) -> None:
    """SQLite inserts a batch a few rows at a time: a late duplicate must not leave the earlier rows counted twice."""
    await db.insert_key(key(KEY_A))
    await write(db, record("r45", key_hash=KEY_A, cost_usd=1.0))
    batch = [record(f"r{i}", started=T0 + i, key_hash=KEY_A, cost_usd=0.5) for i in range(50)]
    await write(db, *batch)  # r45, already stored, comes after dozens of new rows
    assert await scalar(url, f"SELECT COUNT(*) FROM {LOGS}") == 50
    assert (await db.get_key(KEY_A)).spend == pytest.approx(1.0 + 49 * 0.5)
    with pytest.raises(Exception):  # noqa: B017 -- the driver's own error for an amount it cannot send
        await db.write_requests([record(f"s{i}", key_hash=KEY_A).row() for i in range(50)],
                                {KEY_A: object()})  # type: ignore[dict-item]
    assert await scalar(url, f"SELECT COUNT(*) FROM {LOGS}") == 50  # none of the rows before the failure stayed


@pytest.mark.parametrize("value", [{"not": "a number"}, "many"])
async def test_a_bad_row_is_dropped_and_the_rest_written(db: Database, caplog: pytest.LogCaptureFixture,
                                                         value: object) -> None:
    await db.insert_key(key(KEY_A))
    bad = record("bad", key_hash=KEY_A, cost_usd=4.0, prompt_tokens=value)
    await write(db, record("ok1", key_hash=KEY_A, cost_usd=0.5), bad, record("ok2", key_hash=KEY_A, cost_usd=0.25))
    assert sorted(row["request_id"] for row in await db.spend_logs()) == ["ok1", "ok2"]
    assert (await db.get_key(KEY_A)).spend == pytest.approx(0.75)
    assert "request 'bad'" in caplog.text


async def test_spend_logs_filters_newest_first(db: Database) -> None:
    await write(
        db,
        record("r1", started=T0 + 1, key_hash=KEY_A, team_id="t1"),
        record("r2", started=T0 + 2, key_hash=KEY_B, team_id="t1", requested_model="mini"),
        record("r3", started=T0 + 3, key_hash=KEY_A, team_id="t2"),
    )

    async def ids(**filters: Any) -> list[str]:
        return [row["request_id"] for row in await db.spend_logs(**filters)]

    assert await ids() == ["r3", "r2", "r1"]
    assert await ids(limit=2) == ["r3", "r2"]
    assert await ids(limit=0) == []
    assert await ids(key_hash=KEY_A) == ["r3", "r1"]
    assert await ids(team_id="t1") == ["r2", "r1"]
    assert await ids(model="mini") == ["r2"]
    assert await ids(key_hash=KEY_A, team_id="t1") == ["r1"]
    assert await ids(request_id="nope") == []
    assert await ids(start=T0 + 2) == ["r3", "r2"]
    assert await ids(end=T0 + 2) == ["r1"]  # the end is exclusive
    assert await ids(start=T0 + 1.5, end=T0 + 2.5) == ["r2"]
    with pytest.raises(ValueError, match="limit"):
        await db.spend_logs(limit=-1)


# -- reports ---------------------------------------------------------------------------------------
async def report_data(db: Database) -> None:
    await write(
        db,
        record("ok", key_hash=KEY_A, key_alias="alpha", team_id="t1", tier="frontier", provider="openai",
               cost_usd=0.01, saved_usd=0.001, cache="miss", prompt_tokens=100, completion_tokens=50,
               cached_tokens=40, cache_write_tokens=10, latency_ms=100.0, retries=1),
        record("failed", key_hash=KEY_A, key_alias="alpha", team_id="t1", tier="frontier", provider="openai",
               cost_usd=0.02, status=500, error_code="upstream_error", latency_ms=300.0, fallbacks=1),
        record("rated-bad", key_hash=KEY_B, key_alias="beta", team_id="t2", tier="frontier", provider="openai",
               cost_usd=0.03, latency_ms=200.0, ttft_ms=50.0, stream=True),
        record("exact-hit", key_hash=KEY_B, key_alias="beta", team_id="t2", cost_usd=0.0, saved_usd=0.015,
               cache="hit", latency_ms=4.0),
        record("semantic-hit", requested_model="mini", key_hash=KEY_A, key_alias="alpha", team_id="t1",
               cost_usd=0.0, saved_usd=0.004, cache="semantic-hit", latency_ms=6.0),
        record("cut", requested_model="mini", cost_usd=0.001, error_code="stream_cut", latency_ms=10.0,
               provider="anthropic"),
        record("down", requested_model="broken", cost_usd=0.005, status=503, error_code="no_deployment",
               latency_ms=1.0),
    )
    assert await db.add_feedback("rated-bad", 0.2, "wrong", None)
    assert await db.add_feedback("exact-hit", 0.9, None, None)


async def test_report_by_model_counts_cost_per_success(db: Database) -> None:
    await report_data(db)
    by_model = await db.spend_report("model")
    assert [row["group"] for row in by_model] == ["gpt-4o", "broken", "mini"]  # most expensive first
    gpt, broken, mini = by_model
    # ok and exact-hit succeeded; failed is an error; rated-bad got an answer its user rated 0.2.
    assert (gpt["requests"], gpt["successes"], gpt["failures"]) == (4, 2, 2)
    assert gpt["cost_usd"] == pytest.approx(0.06)
    assert gpt["cost_per_success_usd"] == pytest.approx(0.03)
    assert (gpt["prompt_tokens"], gpt["completion_tokens"], gpt["cached_tokens"], gpt["cache_write_tokens"]) == (
        100, 50, 40, 10)
    assert (gpt["cache_hits"], gpt["semantic_hits"]) == (1, 0)
    assert gpt["saved_usd"] == pytest.approx({"exact": 0.015, "semantic": 0.0, "prompt": 0.001})
    assert gpt["avg_latency_ms"] == pytest.approx(151.0)
    assert gpt["avg_ttft_ms"] == pytest.approx(50.0)
    assert (gpt["retries"], gpt["fallbacks"]) == (1, 1)
    assert gpt["feedback_count"] == 2
    assert gpt["avg_feedback_score"] == pytest.approx(0.55)

    assert (mini["requests"], mini["successes"], mini["failures"]) == (2, 1, 1)  # the cut stream failed
    assert mini["cost_per_success_usd"] == pytest.approx(0.001)
    assert (mini["cache_hits"], mini["semantic_hits"]) == (0, 1)
    assert mini["saved_usd"] == pytest.approx({"exact": 0.0, "semantic": 0.004, "prompt": 0.0})
    assert (mini["avg_ttft_ms"], mini["feedback_count"], mini["avg_feedback_score"]) == (None, 0, None)

    assert (broken["successes"], broken["failures"], broken["cost_per_success_usd"]) == (0, 1, None)
    for row in by_model:
        assert type(row["requests"]) is int and type(row["cost_usd"]) is float
        assert type(row["prompt_tokens"]) is int and type(row["saved_usd"]["semantic"]) is float


async def test_report_by_key_carries_the_alias(db: Database) -> None:
    await report_data(db)
    by_key = {row["group"]: row for row in await db.spend_report("key")}
    assert set(by_key) == {KEY_A, KEY_B, None}
    assert (by_key[KEY_A]["key_alias"], by_key[KEY_A]["requests"]) == ("alpha", 3)
    assert (by_key[KEY_B]["key_alias"], by_key[KEY_B]["successes"]) == ("beta", 1)
    assert by_key[None]["requests"] == 2


async def test_report_groups_by_every_dimension(db: Database) -> None:
    await report_data(db)
    rows = await db.spend_logs()
    for group_by, column in GROUPS.items():
        report = await db.spend_report(group_by)
        assert {row["group"] for row in report} == {row[column] for row in rows}, group_by
        assert sum(row["requests"] for row in report) == len(rows)
    with pytest.raises(ValueError, match="group_by"):
        await db.spend_report("colour")


async def test_report_time_window(db: Database) -> None:
    await write(db, *(record(f"r{i}", started=T0 + i * 100, cost_usd=1.0) for i in range(5)))
    [inside] = await db.spend_report("model", start=T0 + 100, end=T0 + 300)
    assert (inside["requests"], inside["cost_usd"]) == (2, 2.0)
    assert await db.spend_report("model", start=T0 + 1000) == []


# -- feedback --------------------------------------------------------------------------------------
async def test_feedback_latest_wins(db: Database) -> None:
    await write(db, record("r1", cost_usd=0.1))
    assert await db.add_feedback("unknown", 1.0, "good", None) is False
    assert await db.add_feedback("r1", 0.9, "good", "nice")
    assert await db.add_feedback("r1", 0.1, "bad", None)
    [row] = await db.spend_logs(request_id="r1")
    assert (row["feedback_score"], row["feedback_label"], row["feedback_comment"]) == (0.1, "bad", None)
    [report] = await db.spend_report("model")
    assert (report["successes"], report["feedback_count"], report["cost_per_success_usd"]) == (0, 1, None)
    assert await db.add_feedback("r1", None, "unsure", "no score")
    [report] = await db.spend_report("model")
    assert (report["successes"], report["avg_feedback_score"]) == (1, None)


# -- keys ------------------------------------------------------------------------------------------
async def test_key_crud(db: Database) -> None:
    metadata = {"owner": "ana", "nested": {"list": [1, 2.5, None, True, "é"]}}
    first = key(KEY_A, key_alias="alpha", team_id="t1", user_id="u1", models=["gpt-4o", "mini"], max_budget=10.0,
                budget_duration="30d", budget_reset_at=T0 + 86_400, spend=1.5, rpm_limit=60, tpm_limit=10_000_000_000,
                metadata=metadata, expires=T0 + 3600.5, created_at=T0)
    second = key(KEY_B, team_id="t2", created_at=T0 + 1, blocked=True)
    await db.insert_key(first)
    await db.insert_key(second)
    with pytest.raises(ValueError, match="already stored"):
        await db.insert_key(first)

    assert await db.get_key(KEY_A) == first
    assert await db.get_key(KEY_B) == second
    assert await db.get_key("c" * 64) is None
    assert await db.all_keys() in ([first, second], [second, first])
    assert await db.list_keys() == [first, second]
    assert await db.list_keys(team_id="t2") == [second]
    assert await db.list_keys(limit=1, offset=1) == [second]

    changed = await db.update_key(KEY_A, {"models": [], "metadata": {"owner": "bo"}, "blocked": True, "spend": 0.0,
                                          "budget_reset_at": T0 + 2 * 86_400, "key_alias": None})
    assert changed is not None
    assert (changed.models, changed.metadata, changed.blocked, changed.spend) == ([], {"owner": "bo"}, True, 0.0)
    assert (changed.budget_reset_at, changed.key_alias, changed.max_budget) == (T0 + 2 * 86_400, None, 10.0)
    assert await db.get_key(KEY_A) == changed
    assert await db.update_key(KEY_A, {}) == changed
    assert await db.update_key("c" * 64, {"spend": 1.0}) is None
    with pytest.raises(ValueError, match="colour"):
        await db.update_key(KEY_A, {"colour": "red"})

    assert await db.delete_keys([KEY_A, "c" * 64]) == 1
    assert await db.delete_keys([]) == 0
    assert await db.all_keys() == [second]


async def test_teams_and_users_are_stored_and_get_their_keys_spend(db: Database) -> None:
    team = TeamRecord("t1", "alpha", ["gpt-4o"], 10.0, "30d", T0 + 86_400, 0.0, 5, 100, {"a": [1]}, T0, False)
    user = UserRecord("u1", "ana@example.com", None, ["t1"], [], None, None, None, 0.0, None, None, {}, T0)
    await db.insert_record(team)
    await db.insert_record(user)
    with pytest.raises(ValueError, match="already stored"):
        await db.insert_record(team)
    assert await db.get_record(TeamRecord, "t1") == team and await db.get_record(UserRecord, "u1") == user
    await db.insert_key(key(KEY_A, team_id="t1", user_id="u1"))
    await db.insert_key(key(KEY_B, team_id="t1", created_at=T0 + 1))
    await write(db, record("r1", key_hash=KEY_A, cost_usd=0.5), record("r2", key_hash=KEY_B, cost_usd=0.25),
                record("r3", key_hash=KEY_A, cost_usd=0.125))
    assert (await db.get_record(TeamRecord, "t1")).spend == pytest.approx(0.875)  # both keys'
    assert (await db.get_record(UserRecord, "u1")).spend == pytest.approx(0.625)  # the user's key only
    assert [k.key_hash for k in await db.list_records(KeyRecord, user_id="u1")] == [KEY_A]
    assert [k.key_hash for k in await db.list_records(KeyRecord, team_id="t1")] == [KEY_A, KEY_B]
    changed = await db.update_record(UserRecord, "u1", {"teams": [], "max_budget": 2.0})
    assert changed is not None and (changed.teams, changed.max_budget) == ([], 2.0)
    with pytest.raises(ValueError, match="teams"):
        await db.update_record(TeamRecord, "t1", {"teams": []})
    assert await db.list_records(TeamRecord) == [await db.get_record(TeamRecord, "t1")]
    assert await db.delete_records(TeamRecord, ["t1", "t9"]) == 1
    assert await db.all_records(TeamRecord) == []


async def test_sqlite_waits_off_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    db = SQLiteDatabase(path, busy_timeout=0.5)
    await db.start()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process writing: our write waits for the lock
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        await db.write_requests([record("r1").row()], {})
    ticker.cancel()
    assert ticks >= 10  # the loop kept running for the half second the write waited
    blocker.close()
    await db.close()


# -- opening ---------------------------------------------------------------------------------------
async def test_open_database_by_url(tmp_path: Path) -> None:
    assert isinstance(open_database(None, tmp_path / "a.db"), SQLiteDatabase)
    memory = open_database("sqlite:///:memory:", tmp_path / "unused.db")
    await memory.start()
    await memory.insert_key(key())
    assert await memory.all_keys() == [key()]
    await memory.close()
    nested = open_database(f"sqlite://{tmp_path}/new/dir/m.db", tmp_path / "unused.db")
    await nested.start()
    await nested.close()
    assert (tmp_path / "new" / "dir" / "m.db").is_file()
    assert not (tmp_path / "unused.db").exists()
    assert isinstance(open_database("postgres://u@h/db", tmp_path), PostgresDatabase)
    assert isinstance(open_database("postgresql://u@h/db", tmp_path), PostgresDatabase)


@pytest.mark.parametrize("url", ["mysql://root:hunter2secret@db/x", "hunter2secret", "root:hunter2secret@db:5432/x",
                                 "sqlite://"])
def test_bad_urls_are_refused_without_their_secret(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError) as caught:
        open_database(url, tmp_path / "a.db")
    assert "hunter2secret" not in str(caught.value)
    if url.startswith("mysql"):
        assert "'mysql'" in str(caught.value)


async def test_postgres_errors_hide_the_password() -> None:
    db = PostgresDatabase("postgresql://app:p%40ss-hunter2@127.0.0.1:1/x", connect_timeout=2)
    with pytest.raises(OSError) as caught:
        await db.start()  # nothing listens on port 1
    text = db.describe_error(caught.value)
    assert "hunter2" not in text and "p@ss" not in text
    assert db.describe_error(RuntimeError("auth for p@ss-hunter2 failed")) == "RuntimeError: auth for *** failed"


async def test_sqlite_file_works_across_connections(tmp_path: Path) -> None:
    """What a second worker process sees: its own connection to the same file, in WAL mode."""
    path = tmp_path / "shared.db"
    one, two = SQLiteDatabase(path), SQLiteDatabase(path)
    await one.start()
    await two.start()
    await write(one, record("r1"))
    assert [row["request_id"] for row in await two.spend_logs()] == ["r1"]
    await one.close()
    await two.close()
    assert await scalar(f"sqlite://{path}", "PRAGMA journal_mode") == "wal"
    assert await scalar(f"sqlite://{path}", f"SELECT COUNT(*) FROM {LOGS}") == 1
    assert await scalar(f"sqlite://{path}", f"SELECT COUNT(*) FROM {KEYS}") == 0


async def test_rated_decisions_are_the_rated_requests_of_a_model_with_a_decision(db: Database) -> None:
    await write(db,
                record("old", T0, requested_model="smart", decision='{"router": "smart"}', completion_tokens=7),
                record("new", T0 + 5, requested_model="smart", decision='{"router": "smart", "n": 2}'),
                record("unrated", T0 + 6, requested_model="smart", decision='{"router": "smart"}'),
                record("plain", T0 + 7, requested_model="smart"),  # no decision
                record("other", T0 + 8, requested_model="gpt-4o", decision='{"router": "x"}'))
    for request_id, score in (("old", 0.25), ("new", 1.0), ("plain", 1.0), ("other", 1.0)):
        assert await db.add_feedback(request_id, score, None, None)
    assert await db.add_feedback("unrated", None, "label only", None)
    rows = await db.rated_decisions("smart", 10)
    assert [r["request_id"] for r in rows] == ["new", "old"]
    assert rows[1]["feedback_score"] == 0.25 and rows[1]["completion_tokens"] == 7
    assert rows[1]["started"] == pytest.approx(T0) and rows[0]["decision"] == '{"router": "smart", "n": 2}'
    assert len(await db.rated_decisions("smart", 1)) == 1
