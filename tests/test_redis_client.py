"""mmproxy.redis_client against real redis-server processes, on both the asyncio and the uvloop event loop.

Each behaviour the gateway relies on: every reply type, pipelines with and without MULTI/EXEC, AUTH and
SELECT from the URL, a Unix socket, large values, many concurrent callers on one connection, a restart,
a stopped server and a stalled one (a timeout, then fast failures, then recovery).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import uvloop

from mmproxy.redis_client import RedisClient, RedisReplyError, RedisUnavailable, array, bulk, integer
from tests.conftest import redis_server_path
from tests.router import test_shared_redis

redis_url = test_shared_redis.redis_url  # the module fixture: one throwaway redis-server, started the same way


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    """Runs a scenario on a fresh event loop of each kind: the gateway runs on uvloop, most tools on asyncio."""
    return uvloop.run if request.param == "uvloop" else asyncio.run


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A redis-server that a test can stop, restart (same port) and freeze."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([redis_server_path(), "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", *self.args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test froze it
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def server() -> Iterator[Server]:
    own = Server()
    own.start()
    yield own
    own.stop()


def test_every_reply_type(run, redis_url: str):
    async def scenario() -> None:
        client = RedisClient(redis_url)
        try:
            assert await client.execute("PING") == "PONG"  # simple string
            assert await client.execute("SET", "t:bulk", b"a\r\nb\x00\xff") == "OK"
            assert await client.execute("GET", "t:bulk") == b"a\r\nb\x00\xff"  # bulk, binary-safe
            await client.execute("SET", "t:empty", b"")
            assert await client.execute("GET", "t:empty") == b""
            assert await client.execute("GET", "t:missing") is None  # nil bulk
            await client.execute("DEL", "t:n")
            assert await client.execute("DECRBY", "t:n", 5) == -5  # integer
            await client.execute("DEL", "t:list")
            assert await client.execute("RPUSH", "t:list", "x", 2, 1.5) == 3
            assert await client.execute("LRANGE", "t:list", 0, -1) == [b"x", b"2", b"1.5"]  # array
            assert await client.execute("LRANGE", "t:missing", 0, -1) == []
            assert await client.execute("BLPOP", "t:missing", 0.01) is None  # nil array
            cursor, keys = await client.execute("SCAN", 0, "MATCH", "t:bulk", "COUNT", 1000)  # nested array
            assert isinstance(cursor, bytes) and keys == [b"t:bulk"]
            with pytest.raises(RedisReplyError, match="WRONGTYPE"):
                await client.execute("INCR", "t:list")
            with pytest.raises(RedisReplyError, match="unknown command"):
                await client.execute("NO-SUCH-COMMAND")
            assert await client.execute("GET", "t:bulk") == b"a\r\nb\x00\xff"  # still in step after errors
        finally:
            await client.close()

    run(scenario())


def test_reply_helpers_pass_the_expected_type_and_refuse_others():
    assert array([b"a", 1, None]) == [b"a", 1, None]
    assert bulk(b"") == b""
    assert integer(-5) == -5
    for helper, wrong in ((array, b"x"), (array, None), (bulk, "OK"), (bulk, None), (integer, b"1"), (integer, [1])):
        with pytest.raises(TypeError, match=r"^expected an? "):
            helper(wrong)


def test_pipeline_without_multi(run, redis_url: str):
    async def scenario() -> None:
        client = RedisClient(redis_url)
        try:
            await client.execute("DEL", "t:p")
            replies = await client.pipeline([("INCR", "t:p"), ("INCRBY", "t:p", 10), ("EXPIRE", "t:p", 60),
                                             ("GET", "t:p"), ("HGETALL", "t:nohash")])
            assert replies == [1, 11, 1, b"11", []]
            with pytest.raises(RedisReplyError, match="WRONGTYPE"):
                await client.pipeline([("RPUSH", "t:p", "x"), ("INCR", "t:p")])
            assert await client.execute("INCR", "t:p") == 13  # the command after the failed one still ran
            assert await client.pipeline([]) == []
        finally:
            await client.close()

    run(scenario())


def test_pipeline_with_multi(run, redis_url: str):
    async def scenario() -> None:
        client = RedisClient(redis_url)
        admin = redis.Redis.from_url(redis_url)
        try:
            await client.execute("DEL", "t:tx", "t:h")
            replies = await client.pipeline([("INCR", "t:tx"), ("INCR", "t:tx"), ("HSET", "t:h", "f", 1),
                                             ("HGETALL", "t:h"), ("PTTL", "t:tx")], transaction=True)
            assert replies == [1, 2, 1, [b"f", b"1"], -1]  # EXEC's array, with an array nested in it
            # A command Redis refuses while queueing aborts the whole transaction: nothing ran.
            with pytest.raises(RedisReplyError, match="wrong number of arguments"):
                await client.pipeline([("INCR", "t:tx"), ("INCR",)], transaction=True)
            assert admin.get("t:tx") == b"2"
            # A command failing while EXEC runs fails the call, but the others ran (Redis has no rollback).
            with pytest.raises(RedisReplyError, match="WRONGTYPE"):
                await client.pipeline([("INCR", "t:tx"), ("INCR", "t:h")], transaction=True)
            assert admin.get("t:tx") == b"3"
            assert await client.pipeline([("GET", "t:tx")], transaction=True) == [b"3"]
        finally:
            admin.close()
            await client.close()

    run(scenario())


def test_large_values(run, redis_url: str):
    async def scenario() -> None:
        client = RedisClient(redis_url)
        try:
            values = [os.urandom(1 << 20) for _ in range(3)]
            assert await client.execute("SET", "t:big", values[0], "PX", 60_000) == "OK"
            assert await client.execute("GET", "t:big") == values[0]
            await client.pipeline([("SET", f"t:big{i}", v) for i, v in enumerate(values)])
            assert await client.pipeline([("GET", f"t:big{i}") for i in range(3)]) == values
            assert redis.Redis.from_url(redis_url).get("t:big2") == values[2]
        finally:
            await client.close()

    run(scenario())


def test_concurrent_callers_get_their_own_answers(run, redis_url: str):
    async def scenario() -> None:
        client = RedisClient(redis_url)
        try:
            await client.pipeline([("SET", f"t:c{i}", f"value-{i}" * (i % 50 + 1)) for i in range(200)])
            calls = [client.execute("GET", f"t:c{i}") for i in range(200)]
            calls.insert(100, client.pipeline([("GET", "t:c7"), ("GET", "t:c8")], transaction=True))
            replies = await asyncio.gather(*calls)
            expected = [f"value-{i}".encode() * (i % 50 + 1) for i in range(200)]
            assert replies.pop(100) == [expected[7], expected[8]]
            assert replies == expected
        finally:
            await client.close()

    run(scenario())


def test_a_cancelled_caller_does_not_shift_the_replies(run, redis_url: str):
    async def scenario() -> None:
        client = RedisClient(redis_url)
        try:
            await client.execute("SET", "t:x", "x")
            await client.execute("SET", "t:y", "y")
            first = asyncio.ensure_future(client.execute("BLPOP", "t:nothing", 0.05))
            await asyncio.sleep(0.01)
            first.cancel()
            assert await client.execute("GET", "t:x") == b"x"  # its reply, not BLPOP's late nil
            assert await client.execute("GET", "t:y") == b"y"
        finally:
            await client.close()

    run(scenario())


def test_auth_and_select_from_the_url(run):
    async def scenario() -> None:
        own = Server("--requirepass", "s3cret pass")
        own.start()
        try:
            for url in (f"redis://:s3cret%20pass@127.0.0.1:{own.port}/3",
                        f"redis://default:s3cret%20pass@127.0.0.1:{own.port}/3",  # ACL form: AUTH user password
                        f"redis://127.0.0.1:{own.port}?db=3&password=s3cret+pass"):  # as redis-py reads it
                client = RedisClient(url)
                try:
                    assert await client.execute("SET", "t:auth", url[:12]) == "OK"
                finally:
                    await client.close()
                admin = redis.Redis(port=own.port, password="s3cret pass", db=3)
                assert admin.get("t:auth") == url[:12].encode()
                assert redis.Redis(port=own.port, password="s3cret pass", db=0).get("t:auth") is None
                admin.close()
            wrong = RedisClient(f"redis://:not-it-hunter2@127.0.0.1:{own.port}/0")
            with pytest.raises(RedisUnavailable) as refused:
                await wrong.execute("PING")
            assert "hunter2" not in str(refused.value)
            await wrong.close()
            unauthenticated = RedisClient(f"redis://127.0.0.1:{own.port}/0")
            with pytest.raises(RedisReplyError, match="NOAUTH"):
                await unauthenticated.execute("GET", "t:auth")
            await unauthenticated.close()
        finally:
            own.stop()

    run(scenario())


def test_unix_socket(run, tmp_path: Path):
    async def scenario() -> None:
        path = tmp_path / "redis.sock"
        own = Server("--unixsocket", str(path))
        own.start()
        try:
            client = RedisClient(f"unix://{path}?db=2")
            try:
                assert await client.execute("SET", "t:unix", "via socket") == "OK"
            finally:
                await client.close()
            assert redis.Redis(port=own.port, db=2).get("t:unix") == b"via socket"
        finally:
            own.stop()

    run(scenario())


def test_a_restarted_server_is_reconnected(run, server: Server):
    async def scenario() -> None:
        client = RedisClient(f"redis://127.0.0.1:{server.port}/0", retry_s=0.05)
        try:
            assert await client.execute("SET", "t:before", 1) == "OK"
            server.stop()
            with pytest.raises(RedisUnavailable):
                await client.execute("GET", "t:before")
            server.start()
            deadline = time.monotonic() + 5
            while True:  # the first call may still meet the old connection or the back-off
                try:
                    assert await client.execute("SET", "t:after", 2) == "OK"
                    break
                except RedisUnavailable:
                    assert time.monotonic() < deadline, "never reconnected"
                    await asyncio.sleep(0.02)
            assert await client.execute("GET", "t:before") is None  # a new, empty server
            assert await client.pipeline([("GET", "t:after"), ("INCR", "t:after")], transaction=True) == [b"2", 3]
        finally:
            await client.close()

    run(scenario())


def test_a_stopped_server_fails_fast_and_without_the_password(run):
    async def scenario() -> None:
        client = RedisClient(f"redis://:hunter2@127.0.0.1:{free_port()}/0", retry_s=60)
        try:
            started = time.monotonic()
            with pytest.raises(RedisUnavailable) as first:
                await client.execute("GET", "k")
            for _ in range(100):  # backing off: no connection attempt per call
                with pytest.raises(RedisUnavailable):
                    await client.pipeline([("INCR", "k")], transaction=True)
            assert time.monotonic() - started < 0.5
            assert "hunter2" not in str(first.value) and "hunter2" not in repr(client.__dict__)
        finally:
            await client.close()

    run(scenario())


def test_a_stalled_server_times_out_then_fails_fast_then_recovers(run, server: Server):
    async def scenario() -> None:
        client = RedisClient(f"redis://127.0.0.1:{server.port}/0", timeout=0.25, retry_s=0.5)
        try:
            await client.execute("SET", "t:stall", "ok")
            server.proc.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            waiting = [client.execute("GET", "t:stall") for _ in range(20)]
            results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
            assert all(isinstance(r, RedisUnavailable) for r in results)
            assert 0.2 < time.monotonic() - started < 1.0  # one timeout for all of them, not one each
            started = time.monotonic()
            for _ in range(100):
                with pytest.raises(RedisUnavailable):
                    await client.execute("GET", "t:stall")
            assert time.monotonic() - started < 0.25  # backing off: not one timeout more
            server.proc.send_signal(signal.SIGCONT)
            await asyncio.sleep(0.55)
            assert await client.execute("GET", "t:stall") == b"ok"  # in step: no stale reply from before
        finally:
            await client.close()

    run(scenario())


def test_a_server_that_accepts_but_never_answers_times_out(run):
    async def scenario() -> None:
        with socket.socket() as silent:  # the kernel completes the handshake from the backlog; nobody reads
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            client = RedisClient(f"redis://:pw@127.0.0.1:{silent.getsockname()[1]}/0", timeout=0.1)
            started = time.monotonic()
            with pytest.raises(RedisUnavailable):
                await client.execute("PING")  # stuck in AUTH
            assert time.monotonic() - started < 0.5
            await client.close()

    run(scenario())


def test_a_closed_client_refuses_calls(run, redis_url: str):
    async def scenario() -> None:
        client = RedisClient(redis_url)
        await client.execute("PING")
        await client.close()
        with pytest.raises(RedisUnavailable):
            await client.execute("PING")

    run(scenario())


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "redis://:hunter2@127.0.0.1:port/0",
                                 "redis://:hunter2@127.0.0.1:6379/zero", "redis://:hunter2@127.0.0.1:99999/0",
                                 "unix://:hunter2@"])
def test_a_bad_url_is_a_value_error_without_the_password(url: str):
    with pytest.raises(ValueError) as bad:
        RedisClient(url)
    assert "hunter2" not in str(bad.value)


def test_arguments_that_redis_cannot_take_are_refused(run, redis_url: str):
    async def scenario() -> None:
        client = RedisClient(redis_url)
        try:
            await client.execute("SET", "t:none", None)  # type: ignore[arg-type]
        finally:
            await client.close()

    with pytest.raises(TypeError):
        run(scenario())
