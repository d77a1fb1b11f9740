"""Text the gateway does not control (a model's words, an upstream's header) made fit for a response header.

A control character in a header value splits the header (CR, LF), ends it early for some clients (NUL) or makes
the whole response unreadable; aiohttp refuses only CR and LF, and then the request fails with a 500. Every
header value built from such text goes through ``header_text``; values the gateway makes itself (ids, numbers,
configured names) need not.
"""

from __future__ import annotations

# C0 controls, DEL and C1 controls (Latin-1 has them too): each becomes a space, and runs of spaces fold to one.
_CONTROLS = dict.fromkeys([*range(0x20), 0x7F, *range(0x80, 0xA0)], " ")


def header_text(text: str, limit: int = 512) -> str:
    """``text`` as one header line: no control character, Latin-1 only (others become ``?``), at most ``limit``
    characters."""
    flat = " ".join(text.translate(_CONTROLS).split())
    return flat.encode("latin-1", "replace").decode("latin-1")[:limit]
