"""HTTP/1.1 request framing for upstream calls, as pure functions over a deployment's URL and bytes.

Adapters build their request heads once, at start-up, and the connection pool connects to the same origin:
both read it from ``origin`` so the Host header names exactly the server the bytes are sent to.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit


class Origin(NamedTuple):
    host: str
    port: int
    tls: bool

    @property
    def host_header(self) -> str:
        """The Host header's value: the port only when it is not the scheme's default."""
        return self.host if self.port == (443 if self.tls else 80) else f"{self.host}:{self.port}"


def origin(base_url: str) -> Origin:
    """Host, port and TLS of an ``http(s)://`` URL; ValueError for anything else."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {base_url}")
    tls = parts.scheme == "https"
    return Origin(parts.hostname, parts.port or (443 if tls else 80), tls)


def request_head(method: str, target: str, host: str, headers: list[str]) -> bytes:
    """The request line and headers up to ``Content-Length: `` (the length and body follow: ``http_request``)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "User-Agent: mmproxy", *headers]
    return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")


def http_request(head: bytes, body: bytes) -> bytes:
    """Complete request bytes from a ``request_head`` and a body."""
    return b"%s%d\r\n\r\n%s" % (head, len(body), body)
