"""The upstream pool keeps at most ``max_idle`` idle connections and closes each after ``idle_timeout``: checked
against a real keep-alive server by counting the connections it still has open."""

from __future__ import annotations

import asyncio

from aiohttp import web

from mmproxy.upstream.http1 import UpstreamPool

REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


async def _server() -> tuple[web.AppRunner, int, set[object]]:
    open_connections: set[object] = set()

    async def hello(request: web.Request) -> web.Response:
        open_connections.add(request.transport)
        await asyncio.sleep(0.05)  # so concurrent requests need connections of their own
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, keepalive_timeout=3600)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port, open_connections


def _still_open(connections: set[object]) -> int:
    return sum(1 for t in connections if not t.is_closing())  # type: ignore[attr-defined]


async def _burst(pool: UpstreamPool, n: int) -> None:
    exchanges = await asyncio.gather(*(pool.fetch(REQUEST, 5.0) for _ in range(n)))
    assert all(e.status == 200 for e in exchanges)
    for exchange in exchanges:
        exchange.release()


def test_a_burst_leaves_at_most_max_idle_connections_open():
    async def run() -> None:
        runner, port, connections = await _server()
        try:
            pool = UpstreamPool(f"http://127.0.0.1:{port}", max_idle=3, idle_timeout=60)
            await _burst(pool, 10)
            await asyncio.sleep(0.1)  # the server sees the closes
            assert len(connections) == 10 and _still_open(connections) == 3
            await _burst(pool, 3)  # the idle ones are reused: no new connection
            assert len(connections) == 10
            pool.close()
        finally:
            await runner.cleanup()

    asyncio.run(run())


def test_idle_connections_are_closed_after_the_idle_timeout():
    async def run() -> None:
        runner, port, connections = await _server()
        try:
            pool = UpstreamPool(f"http://127.0.0.1:{port}", max_idle=10, idle_timeout=0.3)
            await _burst(pool, 4)
            await asyncio.sleep(0.1)
            assert _still_open(connections) == 4
            await _burst(pool, 1)
            await asyncio.sleep(0.35)
            assert _still_open(connections) == 0
            await _burst(pool, 2)  # the pool opens new ones as needed
            assert len(connections) == 6
            pool.close()
        finally:
            await runner.cleanup()

    asyncio.run(run())
