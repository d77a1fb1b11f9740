"""What the security tests share: a Redis that needs a password, a TCP relay that can cut a connection to a
real server (the database "going down" mid-run), and the check that no secret appears in a text."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator

import pytest
import redis

REDIS_PASSWORD = "redis-pw-Secret-5c1e"
DB_PASSWORD = "pg-pw-Secret-77aa"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A real redis-server with ``requirepass``; ``stop`` takes it down mid-test."""

    def __init__(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.fail("redis-server is required (apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://default:{REDIS_PASSWORD}@127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen([server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--requirepass", REDIS_PASSWORD],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, password=REDIS_PASSWORD)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def password_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


class Relay:
    """Forwards TCP connections from a local port to ``target``; ``cut`` closes every connection and refuses new
    ones, which is what a client sees when its server goes away."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self._target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def cut(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(), which close() alone would not
        self._listener.close()
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
