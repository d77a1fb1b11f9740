"""What the security tests share: a Redis that needs a password, a TCP relay that can cut a connection to a
real server (the database "going down" mid-run), and the check that no secret appears in a text."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Iterator

import pytest

from tests.test_redis_client import Server, free_port

__all__ = ["Server", "free_port"]  # the security tests take them from here

REDIS_PASSWORD = "redis-pw-Secret-5c1e"
DB_PASSWORD = "pg-pw-Secret-77aa"


@pytest.fixture
def password_redis() -> Iterator[Server]:
    """A real redis-server that needs ``REDIS_PASSWORD``; ``stop`` takes it down mid-test."""
    server = Server("--requirepass", REDIS_PASSWORD)
    server.start()
    yield server
    server.stop()


def redis_url(server: Server) -> str:
    return f"redis://default:{REDIS_PASSWORD}@127.0.0.1:{server.port}/0"


class Listener:
    """A local TCP port that counts the connections it accepts and hands each to ``handle`` (which closes it);
    ``close`` stops it, refusing new ones."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        conn.close()

    def close(self) -> None:
        self._socket.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(), which close() alone would not
        self._socket.close()


class Relay(Listener):
    """Forwards each connection to ``target_port``; ``cut`` closes every connection and refuses new ones, which is
    what a client sees when its server goes away."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        try:
            server = socket.create_connection(("127.0.0.1", self._target))
        except OSError:
            conn.close()
            return
        with self._lock:
            self._open += [conn, server]
        for a, b in ((conn, server), (server, conn)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def cut(self) -> None:
        self.close()
        with self._lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def assert_no_secret(text: str, secrets: Iterable[str], where: str) -> None:
    """Fails naming the secret and where it was seen, with the text around it (the secret itself masked)."""
    for secret in secrets:
        at = text.find(secret)
        if at >= 0:
            context = text[max(0, at - 200):at + len(secret) + 200].replace(secret, "<SECRET>")
            pytest.fail(f"a secret ({secret[:6]}...) appears in {where}: ...{context}...")


def raw_request(url: str, method: str, target: bytes, headers: bytes = b"", body: bytes = b"") -> tuple[int, bytes]:
    """One request sent byte for byte (no client normalising its path or refusing its headers): status and reply."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(method.encode() + b" " + target + b" HTTP/1.1\r\nHost: gw\r\n" + headers
                     + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1]), reply
