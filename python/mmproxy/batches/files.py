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
        obj = _file_object(len(data), filename, purpose)
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.root / f"{obj['id']}.data", data)
        return self._describe(owner, obj)

    def upload_path(self) -> Path:
        """A fresh hidden path in the store for an upload still arriving, so it lands on disk and not in memory;
        ``keep`` then names it, or the caller deletes it."""
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / f".upload-{secrets.token_hex(8)}"

    def keep(self, owner: str, upload: Path, filename: str, purpose: str) -> dict[str, Any]:
        """Store a finished upload (from ``upload_path``) under a new file id; the OpenAI file object."""
        obj = _file_object(upload.stat().st_size, filename, purpose)
        os.replace(upload, self.root / f"{obj['id']}.data")
        return self._describe(owner, obj)

    def _describe(self, owner: str, obj: dict[str, Any]) -> dict[str, Any]:
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
        return self.content_path(file_id).read_bytes()

    def content_path(self, file_id: str) -> Path:
        """Where a stored file's bytes are, to send from disk; ``get`` has checked the id."""
        return self.root / f"{file_id}.data"


def _file_object(size: int, filename: str, purpose: str) -> dict[str, Any]:
    return {"id": f"file-{secrets.token_hex(12)}", "object": "file", "bytes": size, "created_at": int(time.time()),
            "filename": filename, "purpose": purpose, "status": "processed", "expires_at": None,
            "status_details": None}
