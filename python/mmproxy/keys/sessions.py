"""Signed browser sessions for the dashboard: a cookie that says which key logged in, and until when.

The cookie carries no key, only the key's hash (or ``admin``) and an expiry, signed with a secret derived from the
master key. Every worker and every restart can check it without shared state; a key revoked or blocked after
login stops working at once, because the key itself is looked up on every request; changing the master key
ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
import time

COOKIE = "mmproxy_ui"
ADMIN = "admin"
LIFETIME_S = 12 * 3600


class Sessions:
    def __init__(self, master_key: bytes) -> None:
        self._secret = hmac.new(master_key, b"mmproxy dashboard session", hashlib.sha256).digest()

    def issue(self, subject: str, now: float | None = None) -> str:
        """A cookie value for ``subject`` (a key hash, or ``ADMIN``)."""
        expires = int((time.time() if now is None else now) + LIFETIME_S)
        payload = f"{subject}.{expires}"
        return f"{payload}.{self._sign(payload)}"

    def subject(self, token: str | None, now: float | None = None) -> str | None:
        """Who a cookie value names, or None when it is missing, forged or expired."""
        if not token or token.count(".") != 2:
            return None
        subject, expires, signature = token.split(".")
        if not hmac.compare_digest(signature, self._sign(f"{subject}.{expires}")):
            return None
        if not expires.isdigit() or int(expires) <= (time.time() if now is None else now):
            return None
        return subject

    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()
