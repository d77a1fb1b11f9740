"""The tables, written once for both backends, and the numbered migrations that create and change them.

Each migration runs once, in a transaction with the row that records it in ``mmproxy_schema_version``, so a
database created by an older mmproxy is brought forward on start and a fresh one is built the same way.
Types are placeholders filled per dialect: PostgreSQL gets real timestamps, booleans, arrays and JSONB;
SQLite stores epoch seconds as REAL and JSON as text, in STRICT tables (SQLite 3.37+) so that a value
of the wrong type is refused as PostgreSQL would refuse it, instead of being kept as whatever it was.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FEEDBACK", "KEYS", "LATEST", "LOGS", "POSTGRES", "SQLITE", "TEAMS", "USERS", "VERSIONS", "Dialect",
           "pending", "version_table"]

LOGS = "mmproxy_spend_logs"
FEEDBACK = "mmproxy_feedback"
KEYS = "mmproxy_keys"
TEAMS = "mmproxy_teams"
USERS = "mmproxy_users"
VERSIONS = "mmproxy_schema_version"


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    param: str  # prefix of numbered placeholders: SQLite's ?1, PostgreSQL's $1
    types: dict[str, str]

    def p(self, number: int) -> str:
        return f"{self.param}{number}"


SQLITE = Dialect("sqlite", "?", {
    "text": "TEXT", "int": "INTEGER", "bigint": "INTEGER", "float": "REAL", "ts": "REAL", "bool": "INTEGER",
    "json": "TEXT", "list": "TEXT", "strict": " STRICT", "no_items": "'[]'", "no_fields": "'{}'", "false": "0",
})
POSTGRES = Dialect("postgres", "$", {
    "text": "TEXT", "int": "INTEGER", "bigint": "BIGINT", "float": "DOUBLE PRECISION", "ts": "TIMESTAMPTZ",
    "bool": "BOOLEAN", "json": "JSONB", "list": "TEXT[]", "strict": "", "no_items": "'{}'", "no_fields": "'{}'",
    "false": "FALSE",
})

_VERSION_TABLE = (f"CREATE TABLE IF NOT EXISTS {VERSIONS} "
                  "(version INTEGER PRIMARY KEY, applied_at {ts} NOT NULL){strict}")

# What teams and users have in common, after their own columns (the order of TeamRecord's and UserRecord's fields).
_OWNER = ("models {list} NOT NULL, max_budget {float}, budget_duration {text}, budget_reset_at {ts}, "
          "spend {float} NOT NULL, rpm_limit {bigint}, tpm_limit {bigint}, metadata {json} NOT NULL, "
          "created_at {ts} NOT NULL, blocked {bool} NOT NULL")

# Column order here matches mmproxy.spend.record.COLUMNS; tests/test_db.py holds them together.
_MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, (
        f"""CREATE TABLE {LOGS} (
            request_id {{text}} NOT NULL PRIMARY KEY,
            started {{ts}} NOT NULL,
            endpoint {{text}},
            key_hash {{text}},
            key_alias {{text}},
            team_id {{text}},
            requested_model {{text}},
            model_group {{text}},
            deployment {{text}},
            provider {{text}},
            tier {{text}},
            rule {{text}},
            stream {{bool}},
            prompt_tokens {{int}},
            completion_tokens {{int}},
            cached_tokens {{int}},
            cache_write_tokens {{int}},
            cost_usd {{float}},
            saved_usd {{float}},
            cache {{text}},
            latency_ms {{float}},
            ttft_ms {{float}},
            overhead_ms {{float}},
            status {{int}},
            error_code {{text}},
            retries {{int}},
            fallbacks {{int}}
        ){{strict}}""",
        f"CREATE INDEX {LOGS}_started ON {LOGS} (started)",
        f"CREATE INDEX {LOGS}_key_started ON {LOGS} (key_hash, started)",
        f"""CREATE TABLE {FEEDBACK} (
            request_id {{text}} NOT NULL PRIMARY KEY,
            score {{float}},
            label {{text}},
            comment {{text}},
            submitted_at {{ts}} NOT NULL
        ){{strict}}""",
        f"""CREATE TABLE {KEYS} (
            key_hash {{text}} NOT NULL PRIMARY KEY,
            key_name {{text}} NOT NULL,
            key_alias {{text}},
            team_id {{text}},
            user_id {{text}},
            models {{list}} NOT NULL,
            max_budget {{float}},
            budget_duration {{text}},
            budget_reset_at {{ts}},
            spend {{float}} NOT NULL,
            rpm_limit {{bigint}},
            tpm_limit {{bigint}},
            metadata {{json}} NOT NULL,
            expires {{ts}},
            created_at {{ts}} NOT NULL,
            blocked {{bool}} NOT NULL
        ){{strict}}""",
        f"CREATE INDEX {KEYS}_team ON {KEYS} (team_id)",
    )),
    # What a learned router or cascade decided for the request (candidate scores, the stage that answered), as
    # JSON text.
    (2, (f"ALTER TABLE {LOGS} ADD COLUMN decision {{text}}",)),
    # A virtual model's sub-calls are rows of their own, linked to the client request whose cost includes them.
    (3, (f"ALTER TABLE {LOGS} ADD COLUMN parent_id {{text}}",
         f"CREATE INDEX {LOGS}_parent ON {LOGS} (parent_id)")),
    # Teams and users with their own models, limits and budgets. Every team or user a key already names gets a
    # row (no limits; its spend is what its keys spent), so a key's team_id and user_id always name a stored one.
    (4, (
        f"CREATE TABLE {TEAMS} (team_id {{text}} NOT NULL PRIMARY KEY, team_alias {{text}}, {_OWNER}){{strict}}",
        f"CREATE TABLE {USERS} (user_id {{text}} NOT NULL PRIMARY KEY, user_email {{text}}, user_alias {{text}}, "
        f"teams {{list}} NOT NULL, {_OWNER}){{strict}}",
        f"CREATE INDEX {KEYS}_user ON {KEYS} (user_id)",
        f"INSERT INTO {TEAMS} (team_id, models, spend, metadata, created_at, blocked) "
        f"SELECT team_id, {{no_items}}, SUM(spend), {{no_fields}}, MIN(created_at), {{false}} FROM {KEYS} "
        "WHERE team_id IS NOT NULL GROUP BY team_id",
        f"INSERT INTO {USERS} (user_id, teams, models, spend, metadata, created_at, blocked) "
        f"SELECT user_id, {{no_items}}, {{no_items}}, SUM(spend), {{no_fields}}, MIN(created_at), {{false}} "
        f"FROM {KEYS} WHERE user_id IS NOT NULL GROUP BY user_id",
    )),
    # The kinds of sensitive data a request carried and how many of each ("card:1,email:2"); never the values.
    (5, (f"ALTER TABLE {LOGS} ADD COLUMN pii {{text}}",)),
)

LATEST = _MIGRATIONS[-1][0]


def version_table(dialect: Dialect) -> str:
    return _VERSION_TABLE.format(**dialect.types)


def pending(dialect: Dialect, current: int) -> list[tuple[int, list[str]]]:
    """The migrations after ``current``, oldest first, as statements in ``dialect``."""
    return [(version, [statement.format(**dialect.types) for statement in statements])
            for version, statements in _MIGRATIONS if version > current]
