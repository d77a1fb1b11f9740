"""The file format of trained models: a NumPy ``.npz`` (no pickles) holding the arrays and a JSON header that
names the format, so a file of another kind or version is refused with a clear error."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import orjson


class ModelFileError(ValueError):
    """A model file is missing, unreadable or of another format."""


def write(path: str | Path, kind: str, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    encoded = np.frombuffer(orjson.dumps({"format": kind, **header}), dtype=np.uint8)
    np.savez_compressed(buffer, allow_pickle=False, header=encoded, **arrays)
    Path(path).write_bytes(buffer.getvalue())


def read(path: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(header, arrays) of a ``kind`` file; ModelFileError naming the file otherwise."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            header = orjson.loads(data["header"].tobytes())
            if not isinstance(header, dict) or header.get("format") != kind:
                raise ModelFileError(f"{path}: not a {kind} file")
            return header, {name: data[name] for name in data.files if name != "header"}
    except ModelFileError:
        raise
    except (OSError, KeyError, ValueError, orjson.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: cannot read the model ({exc})") from None
