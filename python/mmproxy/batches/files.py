"""The gateway's own file store: client uploads and collected batch results, on disk.

On disk rather than in memory so every worker process sees the same files and a restart loses nothing.
Each file is ``<id>.data`` plus ``<id>.json`` (its OpenAI file object and owner); writes go through a
temporary name and a rename, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

import orjson

DEFAULT_DIR = "mmproxy-files"
_ID = re.compile(r"file-[0-9a-f]{24}")


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root  # made on the first write: a gateway that never sees a batch leaves no directory

    def add(self, owner: str, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        """Store ``data``; the OpenAI file object (the owner is kept beside it, never shown)."""
        obj = {"id": f"file-{secrets.token_hex(12)}", "object": "file", "bytes": len(data),
               "created_at": int(time.time()), "filename": filename, "purpose": purpose, "status": "processed",
               "expires_at": None, "status_details": None}
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.root / f"{obj['id']}.data", data)
        write_atomic(self.root / f"{obj['id']}.json", orjson.dumps({"owner": owner, "file": obj}))
        return obj

    def get(self, file_id: str) -> tuple[str, dict[str, Any]] | None:
        """(owner, file object), or None for an unknown id; ids are checked first, so no path can escape."""
        if not _ID.fullmatch(file_id):
            return None
        try:
            meta = orjson.loads((self.root / f"{file_id}.json").read_bytes())
        except FileNotFoundError:
            return None
        return meta["owner"], meta["file"]

    def content(self, file_id: str) -> bytes:
        return (self.root / f"{file_id}.data").read_bytes()
