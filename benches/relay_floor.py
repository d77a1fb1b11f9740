"""The floor of any user-space relay: bytes copied blindly between paired sockets, no HTTP at all.

Why: the per-event relay figure (``run.py``'s relay scenario) includes the kernel's cost of
waking up, reading and writing once per event on loopback. Running the same scenario through this
"proxy" — one upstream connection per client connection, every byte forwarded as it arrives, no
parsing, no auth, no routing — shows how much of that figure no gateway written on asyncio can
avoid. It is a measuring stick, not a product.

    taskset -c 0 python benches/relay_floor.py --listen 14002 --upstream 127.0.0.1:8800
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop


class _Half(asyncio.Protocol):
    """One side of a pair: whatever arrives is written to the peer."""

    def __init__(self) -> None:
        self.peer: _Half | None = None
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port")
    args = parser.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    pairing: set[asyncio.Task[None]] = set()

    def accept() -> _Half:
        client = _Half()

        async def pair() -> None:
            _, upstream = await loop.create_connection(_Half, host, int(port))
            upstream.peer, client.peer = client, upstream
            for data in client.pending:
                upstream.transport.write(data)  # type: ignore[union-attr]
            client.pending.clear()

        task = loop.create_task(pair())
        pairing.add(task)
        task.add_done_callback(pairing.discard)
        return client

    server = await loop.create_server(accept, "127.0.0.1", args.listen)
    print(f"relay floor listening on http://127.0.0.1:{args.listen}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main())
