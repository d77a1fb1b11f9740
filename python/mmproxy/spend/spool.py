"""Ledger rows on disk until the database has them, so a killed process loses none.

Why: the ledger hands rows to the database in batches from an in-memory queue; a SIGKILL (the OOM killer, a
forced restart) lost the queue — 125 of 9,271 answered requests in one test under load. Each row is now also
appended to a file opened with ``O_APPEND``, which the kernel keeps through the death of the process (not
through a power cut: that would need an fsync per row, ~1,000 times dearer). The rows of one turn of the event
loop go out as one JSON line (a list of rows) in one ``write`` at its end, which under load shares the encoding
call and the system call among many requests; outside an event loop each row is written at once. An answer
about to leave cannot wait for the turn's end, though: under load a turn lasts milliseconds and serves dozens of
requests, and a SIGKILL within it lost the rows of answers already sent (3 to 20 per kill in a soak). So the
handler writes what is buffered just before its answer leaves (``Ledger.persist``, a stream before its headers):
its row and those of the requests that finished before it in the turn, in one ``write``. Files are
segments of about ``SEGMENT_BYTES``; a segment is deleted once every row in it is committed. A process that
starts finds the segments a dead one left, and its ledger writes their rows again: the database keeps one row
per request id, and adds a key's spend only for a row it did not have, so a row written twice counts once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import orjson

__all__ = ["Spool"]

log = logging.getLogger("mmproxy.spend")

SEGMENT_BYTES = 4 << 20


class Spool:
    """The segments ``<directory>/<name>.<n>.spool`` of one process (each worker has its own ``name``)."""

    def __init__(self, directory: Path, name: str) -> None:
        self._directory = directory
        self._name = name
        self._pending: dict[int, int] = {}  # segment -> rows not yet committed
        self._segment = -1
        self._fd = -1
        self._size = 0
        self._buffer: list[tuple[object, ...]] = []  # rows of this turn of the event loop, written at its end

    def _path(self, segment: int) -> Path:
        return self._directory / f"{self._name}.{segment}.spool"

    def recover(self) -> list[tuple[int, tuple[object, ...]]]:
        """The rows a dead process left, with their segments (counted as pending), oldest first; then opens a
        new segment for this process."""
        self._directory.mkdir(parents=True, exist_ok=True)
        found = []
        for path in self._directory.glob(f"{self._name}.*.spool"):
            try:
                found.append((int(path.name.removeprefix(f"{self._name}.").removesuffix(".spool")), path))
            except ValueError:
                continue
        rows: list[tuple[int, tuple[object, ...]]] = []
        for segment, path in sorted(found):
            count = 0
            for line in path.read_bytes().splitlines():
                try:
                    batch = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # the line being written when the process died
                for row in batch if isinstance(batch, list) else ():
                    if isinstance(row, list):
                        rows.append((segment, tuple(row)))
                        count += 1
            if count:
                self._pending[segment] = count
            else:
                path.unlink(missing_ok=True)
        if rows:
            log.warning("spend ledger: %d rows left by a stopped process are written again", len(rows))
        self._segment = max((s for s, _ in found), default=-1)
        self._rotate()
        return rows

    def _rotate(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            if not self._pending.get(self._segment):
                self._pending.pop(self._segment, None)
                self._path(self._segment).unlink(missing_ok=True)
        self._segment += 1
        self._fd = os.open(self._path(self._segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = 0

    def append(self, row: tuple[object, ...]) -> int:
        """Write ``row``; the segment it went to (for ``committed``)."""
        buffer = self._buffer
        buffer.append(row)
        segment = self._segment
        self._pending[segment] = self._pending.get(segment, 0) + 1
        if len(buffer) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.write)
            except RuntimeError:  # no event loop: write now
                self.write()
        return segment

    def write(self) -> None:
        """Hand the rows appended in this turn of the event loop to the kernel, as one line; a segment grown past
        ``SEGMENT_BYTES`` then makes way for the next."""
        if not self._buffer or self._fd < 0:
            return
        data = orjson.dumps(self._buffer) + b"\n"
        self._buffer.clear()
        os.write(self._fd, data)
        self._size += len(data)
        if self._size >= SEGMENT_BYTES:
            self._rotate()

    def committed(self, segments: list[int]) -> None:
        """The rows of ``segments`` (one entry per row) are in the database: delete the segments left empty."""
        for segment in segments:
            left = self._pending[segment] - 1
            if left or segment == self._segment:
                self._pending[segment] = left
                continue
            del self._pending[segment]
            self._path(segment).unlink(missing_ok=True)

    def close(self) -> None:
        """Close this process's segment; it is deleted when every row in it was committed."""
        if self._fd < 0:
            return
        self.write()
        os.close(self._fd)
        self._fd = -1
        if not self._pending.get(self._segment):
            self._pending.pop(self._segment, None)
            self._path(self._segment).unlink(missing_ok=True)
