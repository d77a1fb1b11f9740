"""Storage for the spend ledger, feedback and virtual keys: SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import re
from pathlib import Path

from mmproxy.db.base import Database, KeyRecord
from mmproxy.db.sqlite import SQLiteDatabase

__all__ = ["Database", "KeyRecord", "open_database"]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def open_database(url: str | None, sqlite_path: Path) -> Database:
    """The database for ``url``: None means the SQLite file at ``sqlite_path``.

    ``sqlite:///abs/path`` or ``sqlite:///:memory:`` pick another SQLite file; ``postgresql://`` or
    ``postgres://`` URLs go to PostgreSQL. Errors never repeat the URL, which may hold a password.
    """
    if url is None:
        return SQLiteDatabase(sqlite_path)
    scheme, separator, rest = url.partition("://")
    if not separator or not _SCHEME.fullmatch(scheme):
        raise ValueError("the database URL must look like sqlite:///path or postgresql://user@host/db")
    scheme = scheme.lower()
    if scheme == "sqlite":
        path = rest.partition("?")[0]
        if path in ("", "/"):
            raise ValueError("a sqlite:// database URL needs a path: sqlite:///abs/path or sqlite:///:memory:")
        return SQLiteDatabase(":memory:" if path == "/:memory:" else Path(path))
    if scheme in ("postgresql", "postgres"):
        from mmproxy.db.postgres import PostgresDatabase  # asyncpg loads only when it is used

        return PostgresDatabase(url)
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:///path or postgresql://...")
