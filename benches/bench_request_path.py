"""The gateway's own CPU per request, in one process: the aiohttp handler of ``/v1/chat/completions`` called
directly (no client socket, no HTTP parsing or response writing, no load generator), its upstream the provider
simulator in another process on another core.

What it isolates is exactly the code between the request object and the response object — auth, validation,
routing, the attempt, pricing — so two builds can be compared to a few percent on a machine whose end-to-end
figures (``run.py``) swing by ±20 % from round to round. It drives only ``Gateway``, ``Gateway.start`` and
``server.app.build_server``, so it runs unchanged against an older checkout: put that checkout's ``python/``
first on ``PYTHONPATH`` to measure it.

    python benches/bench_request_path.py --requests 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
import uvloop
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Service, free_port, python_env

from mmproxy.config import parse_config
from mmproxy.server.app import build_server

MASTER_KEY = "sk-bench-master"
BODY = orjson.dumps({"model": "sim-fast", "messages": [{"role": "user", "content": "Say hello in five words."}],
                     "max_tokens": 16})
STREAM_BODY = orjson.dumps({**orjson.loads(BODY), "stream": True})


def _request(body: bytes, loop: asyncio.AbstractEventLoop) -> web.BaseRequest:
    """A request object as aiohttp's parser would hand it over, on a stand-in connection that drops writes
    (the same for both builds: the client side is not what is measured)."""
    headers = CIMultiDict({"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json",
                           "Content-Length": str(len(body)), "Host": "127.0.0.1"})
    protocol = _Protocol()
    reader = StreamReader(protocol, 2**16, loop=loop)  # type: ignore[arg-type]
    reader.feed_data(body)
    reader.feed_eof()
    return make_mocked_request("POST", "/v1/chat/completions", headers=headers, payload=reader,
                               protocol=protocol, transport=protocol.transport, loop=loop,
                               client_max_size=4 * 1024 * 1024)


class _Transport(asyncio.Transport):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


class _Protocol:
    ssl_context = None
    peername = sockname = ("127.0.0.1", 1)
    writing_paused = False

    def __init__(self) -> None:
        self.transport = _Transport()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


async def measure(sim_port: int, requests: int, rounds: int, stream: bool, concurrency: int) -> list[float]:
    config = parse_config({
        "model_list": [{"model_name": "sim-fast", "litellm_params": {
            "model": "openai/sim-fast", "api_base": f"http://127.0.0.1:{sim_port}/v1", "api_key": "sk-upstream"}}],
        "general_settings": {"master_key": MASTER_KEY, "disable_spend_logs": True, "disable_metrics": True},
    })
    from mmproxy.server.app import Gateway  # both layouts export it there

    gateway = Gateway(config)
    await gateway.start()
    server = build_server(gateway)
    handler = server.request_handler
    loop = asyncio.get_running_loop()
    body = STREAM_BODY if stream else BODY
    per_request: list[float] = []
    try:
        for _ in range(10):  # warm-up: connections, caches
            await asyncio.gather(*(handler(_request(body, loop)) for _ in range(concurrency)))
        for _ in range(rounds):
            waves = [[_request(body, loop) for _ in range(concurrency)] for _ in range(requests // concurrency)]
            gc.collect()
            start = time.process_time()
            for wave in waves:
                for response in await asyncio.gather(*(handler(request) for request in wave)):
                    assert response.status == 200, response.status
            per_request.append((time.process_time() - start) / (len(waves) * concurrency) * 1e6)
    finally:
        await gateway.stop()
    return per_request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64, help="requests handled at once, in waves")
    parser.add_argument("--stream", action="store_true", help="a 20-chunk stream instead of a whole answer")
    args = parser.parse_args()
    sim_port = free_port()
    logdir = Path(tempfile.mkdtemp(prefix="mmproxy-request-path-"))
    sim = Service("simulator", [sys.executable, "-m", "mmproxy.simulator", "--port", str(sim_port), "--record", "0"],
                  port=sim_port, core=1, env=python_env(), logdir=logdir)
    try:
        sim.wait_ready(f"http://127.0.0.1:{sim_port}/v1/models", 30)
        os.sched_setaffinity(0, {0})
        figures = uvloop.run(measure(sim_port, args.requests, args.rounds, args.stream, args.concurrency))
    finally:
        sim.stop()
    import mmproxy

    print(f"code: {Path(mmproxy.__file__).parent}")
    print("gateway CPU per request, µs: " + ", ".join(f"{f:.1f}" for f in figures)
          + f"; median {statistics.median(figures):.1f}")


if __name__ == "__main__":
    main()
