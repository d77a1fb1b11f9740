"""Closed-loop HTTP/1.1 load generator for LLM gateways.

Why not aiohttp/httpx/wrk: the generator shares a core with the upstream simulator, so every
microsecond it spends per request caps the throughput it can drive and blurs the gateway's
figures.  This one is a callback state machine on raw asyncio protocols with httptools: one
keep-alive connection per concurrency slot, the next request written straight from the parser's
"message complete" callback (no coroutine or future per request), request bytes encoded once.

It records, per successful request, latency (request written -> response complete), for streams
the time to the first SSE event carrying non-empty ``content``, and mmproxy's
``x-mmproxy-overhead-ms`` header when present.  Errors are non-2xx statuses, unparsable HTTP,
streams cut before ``data: [DONE]``, JSON replies that are not a whole ``{...}`` (an envelope check,
not a parse: decoding every reply would cost more than some gateways do), dropped connections and
timeouts.

Usable as a library (``LoadGen``; ``run.py`` uses it with hooks that snapshot the gateway's CPU at
the edges of the measured window) and as a CLI::

    python benches/loadgen.py http://127.0.0.1:4000/v1/chat/completions -c 64 -d 10 --stream
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httptools
import orjson

_OVERHEAD_HEADER = b"x-mmproxy-overhead-ms"
_REQUEST_ID_HEADER = b"x-mmproxy-request-id"
_DONE_MARKER = b"[DONE]"
_CONTENT_KEY = b'"content"'
_QUOTE = 0x22

WARMUP, MEASURE, DRAIN = 0, 1, 2


@dataclass(frozen=True)
class Request:
    """One request template; ``stream`` says whether to expect (and check) an SSE response."""

    body: bytes
    stream: bool = False
    path: str = "/v1/chat/completions"
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    end_marker: bytes = _DONE_MARKER  # a stream is whole once this went by (Anthropic: message_stop, ...)

    def encode(self, host: str) -> bytes:
        """Serialise once up front so the hot loop only calls ``transport.write``."""
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        if self.body or self.method == "POST":
            lines += ["Content-Type: application/json", f"Content-Length: {len(self.body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def chat_request(
    model: str, *, stream: bool, api_key: str | None = None, extra: dict[str, Any] | None = None
) -> Request:
    """A small OpenAI chat-completions request, identical for every target so they stay comparable."""
    payload: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 256,
        "stream": stream,
    }
    payload.update(extra or {})
    headers = (("Authorization", f"Bearer {api_key}"),) if api_key else ()
    return Request(body=orjson.dumps(payload), stream=stream, headers=headers)


def has_content(chunk: bytes) -> bool:
    """True if an SSE chunk holds a ``"content"`` key with a non-empty string value.

    A byte scan rather than JSON decoding: it runs on every body chunk until the first hit.
    """
    i = chunk.find(_CONTENT_KEY)
    n = len(chunk)
    while i >= 0:
        j = i + len(_CONTENT_KEY)
        while j < n and chunk[j] in b" :":
            j += 1
        if j + 1 < n and chunk[j] == _QUOTE and chunk[j + 1] != _QUOTE:
            return True
        i = chunk.find(_CONTENT_KEY, j)
    return False


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (NaN when empty)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


@dataclass
class Result:
    """Raw outcome of the measured window; ``summary()`` turns it into report figures."""

    concurrency: int
    elapsed_s: float = 0.0
    ok: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    overheads_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    warmup_errors: int = 0
    error_sample: str = ""
    loadgen_cpu_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Throughput, latency percentiles (ms) and the generator's own CPU cost."""
        lat = sorted(self.latencies)
        ttft = sorted(self.ttfts)
        ovh = sorted(self.overheads_ms)
        n_errors = sum(self.errors.values())
        done = self.ok + n_errors
        out: dict[str, Any] = {
            "concurrency": self.concurrency,
            "requests": self.ok,
            "errors": n_errors,
            "error_kinds": dict(self.errors),
            "warmup_errors": self.warmup_errors,
            "elapsed_s": self.elapsed_s,
            "req_s": self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0,
            "p50_ms": percentile(lat, 50) * 1e3,
            "p90_ms": percentile(lat, 90) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3,
            "ttft_p50_ms": percentile(ttft, 50) * 1e3 if ttft else None,
            "ttft_p99_ms": percentile(ttft, 99) * 1e3 if ttft else None,
            "overhead_header_p50_ms": percentile(ovh, 50) if ovh else None,
            "loadgen_cpu_us_per_req": self.loadgen_cpu_s / done * 1e6 if done else None,
            "loadgen_core_util": self.loadgen_cpu_s / self.elapsed_s if self.elapsed_s > 0 else None,
        }
        if self.error_sample:
            out["error_sample"] = self.error_sample
        return out


class _Slot(asyncio.Protocol):
    """One connection running requests back to back; all per-request work happens in callbacks."""

    def __init__(self, gen: LoadGen) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.index = 0
        self.stream = False
        self.end_marker = _DONE_MARKER
        self.ended = False
        self.in_flight = False
        self.t_start = 0.0
        self.t_first = 0.0
        self.status = 0
        self.overhead: float | None = None
        self.request_id = b""
        self.prev_body = self.last_body = self.first_byte = b""
        self.closed = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail("bad_response", repr(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.in_flight:
            self.gen.complete(self, False, "cut" if self.status else "conn_lost", repr(exc))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- httptools callbacks ----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == len(_OVERHEAD_HEADER) and name.lower() == _OVERHEAD_HEADER:
            try:
                self.overhead = float(value)
            except ValueError:
                pass
        elif self.gen.request_ids is not None and len(name) == len(_REQUEST_ID_HEADER) \
                and name.lower() == _REQUEST_ID_HEADER:
            self.request_id = value

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self.status >= 300:
            if not self.gen.result.error_sample:
                self.gen.result.error_sample = f"http_{self.status}: " + body[:300].decode(errors="replace")
            return
        if not self.first_byte:
            self.first_byte = body[:1]
        if self.stream and not self.t_first and has_content(body):
            self.t_first = time.perf_counter()
        if self.stream and not self.ended:
            marker = self.end_marker  # may straddle two reads
            self.ended = marker in body or marker in self.last_body[-len(marker):] + body[:len(marker)]
        self.prev_body, self.last_body = self.last_body, body

    def on_message_complete(self) -> None:
        if 200 <= self.status < 300:
            if self.stream and not self.saw_done():
                self.gen.complete(self, False, "stream_without_done", self.last_body[-200:].decode(errors="replace"))
            elif not self.stream and not self.whole_json_object():
                self.gen.complete(self, False, "bad_body", self.last_body[-200:].decode(errors="replace"))
            else:
                self.gen.complete(self, True, "", "")
        else:
            self.gen.complete(self, False, f"http_{self.status}", "")
        if self.transport is not None and not self.parser.should_keep_alive():
            self.transport.close()
            return
        self.gen.next_request(self)

    # -- helpers ----------------------------------------------------------------------------
    def saw_done(self) -> bool:
        """Whether the stream's end marker (``[DONE]`` for OpenAI) went by."""
        return self.ended

    def whole_json_object(self) -> bool:
        """Cheap truncation check of a JSON reply: its envelope only, a full parse would cost too much."""
        return self.first_byte == b"{" and self.last_body.rstrip().endswith(b"}")

    def send(self, payload: bytes, stream: bool, end_marker: bytes = _DONE_MARKER) -> None:
        self.stream = stream
        self.end_marker = end_marker
        self.ended = False
        self.status = 0
        self.t_first = 0.0
        self.overhead = None
        self.request_id = b""
        self.prev_body = self.last_body = self.first_byte = b""
        self.in_flight = True
        self.t_start = time.perf_counter()
        self.transport.write(payload)  # type: ignore[union-attr]

    def fail(self, kind: str, detail: str) -> None:
        """Count an error and drop the connection: after a protocol error its state is unknown."""
        if self.in_flight:
            self.gen.complete(self, False, kind, detail)
        if self.transport is not None:
            self.transport.abort()


class LoadGen:
    """Closed loop: ``concurrency`` slots, each with one request outstanding at all times.

    Phases: warm-up (results discarded) -> measured window (ends after ``duration`` seconds or
    ``count`` completed requests, whichever is set) -> drain (no new requests; in-flight ones
    finish uncounted).  ``on_measure_start``/``on_measure_end`` run synchronously at the window
    edges so a caller can snapshot server-side counters over exactly the same interval.
    """

    def __init__(
        self,
        host: str,
        port: int,
        requests: Sequence[Request],
        *,
        concurrency: int,
        duration: float | None = None,
        count: int | None = None,
        warmup: float = 1.0,
        timeout: float = 60.0,
        on_measure_start: Callable[[], None] | None = None,
        on_measure_end: Callable[[], None] | None = None,
        record_ids: bool = False,
    ) -> None:
        if (duration is None) == (count is None):
            raise ValueError("give exactly one of duration or count")
        self.host, self.port = host, port
        self.payloads = [(r.encode(f"{host}:{port}"), r.stream, r.end_marker) for r in requests]
        self.concurrency = concurrency
        self.duration, self.count = duration, count
        self.warmup, self.timeout = warmup, timeout
        self.on_measure_start, self.on_measure_end = on_measure_start, on_measure_end
        self.result = Result(concurrency=concurrency)
        # With ``record_ids``: mmproxy's x-mmproxy-request-id of every answer (a soak checks each has its row).
        self.request_ids: list[bytes] | None = [] if record_ids else None
        self.phase = WARMUP
        self.slots: list[_Slot] = []
        self._t0 = 0.0
        self._cpu0 = 0.0
        self._finished: asyncio.Future[None] | None = None

    # -- called by slots --------------------------------------------------------------------
    def complete(self, slot: _Slot | None, ok: bool, kind: str, detail: str) -> None:
        if slot is not None:
            slot.in_flight = False
            if slot.request_id and self.request_ids is not None:  # every answer that named its request
                self.request_ids.append(slot.request_id)
                slot.request_id = b""
        if self.phase != MEASURE:
            if self.phase == DRAIN:
                self._check_drained()
            elif not ok:
                self.result.warmup_errors += 1
                self._sample(kind, detail)
            return
        res = self.result
        if ok and slot is not None:
            now = time.perf_counter()
            res.ok += 1
            res.latencies.append(now - slot.t_start)
            if slot.t_first:
                res.ttfts.append(slot.t_first - slot.t_start)
            if slot.overhead is not None:
                res.overheads_ms.append(slot.overhead)
        else:
            res.errors[kind] += 1
            self._sample(kind, detail)
        if self.count is not None and res.ok + sum(res.errors.values()) >= self.count:
            self._end_measure()

    def next_request(self, slot: _Slot) -> None:
        if self.phase == DRAIN or slot.transport is None:
            self._check_drained()
            return
        if len(self.payloads) == 1:
            payload, stream, marker = self.payloads[0]
        else:
            payload, stream, marker = self.payloads[slot.index % len(self.payloads)]
            slot.index += 1
        slot.send(payload, stream, marker)

    # -- internals --------------------------------------------------------------------------
    def _sample(self, kind: str, detail: str) -> None:
        if not self.result.error_sample:
            self.result.error_sample = f"{kind}: {detail}"[:300]

    def _start_measure(self) -> None:
        if self.phase != WARMUP:
            return
        if self.on_measure_start:
            self.on_measure_start()
        self.phase = MEASURE
        self._cpu0 = time.process_time()
        self._t0 = time.perf_counter()
        if self.duration is not None:
            asyncio.get_running_loop().call_later(self.duration, self._end_measure)

    def _end_measure(self) -> None:
        if self.phase != MEASURE:
            return
        self.phase = DRAIN
        self.result.elapsed_s = time.perf_counter() - self._t0
        self.result.loadgen_cpu_s = time.process_time() - self._cpu0
        if self.on_measure_end:
            self.on_measure_end()
        self._check_drained()

    def _check_drained(self) -> None:
        if (
            self.phase == DRAIN
            and self._finished is not None
            and not self._finished.done()
            and not any(s.in_flight for s in self.slots)
        ):
            self._finished.set_result(None)

    async def _connect(self) -> _Slot:
        """Open a slot's connection, retrying (and counting an error) every 50 ms until it works."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                _, proto = await loop.create_connection(lambda: _Slot(self), self.host, self.port)
                return proto
            except OSError as exc:
                if self.phase == DRAIN:
                    raise
                self.complete(None, False, "connect", repr(exc))
                await asyncio.sleep(0.05)

    async def _keep_slot(self, index: int) -> None:
        """Run one slot for the whole test, reconnecting when the server closes or errors.

        Slots start spread evenly over the first half of the warm-up: started together, slots with
        equal response times would stay in lockstep and make window edges land mid-burst.
        """
        await asyncio.sleep(index * min(self.warmup / 2, 1.0) / self.concurrency)
        slot = self.slots[index]
        while self.phase != DRAIN:
            self.next_request(slot)
            await slot.closed
            if self.phase == DRAIN:
                break
            try:
                slot = self.slots[index] = await self._connect()
            except OSError:
                break
        self._check_drained()

    async def _watchdog(self) -> None:
        """Abort requests that exceed the timeout (a periodic sweep, cheaper than a timer each)."""
        while True:
            await asyncio.sleep(min(1.0, self.timeout / 4))
            now = time.perf_counter()
            for slot in self.slots:
                if slot.in_flight and now - slot.t_start > self.timeout:
                    slot.fail("timeout", f"no complete response after {self.timeout}s")

    async def run(self) -> Result:
        """Connect every slot, warm up, measure, drain; returns the measured window's ``Result``."""
        loop = asyncio.get_running_loop()
        self._finished = loop.create_future()
        self.slots = list(await asyncio.gather(*(self._connect() for _ in range(self.concurrency))))
        keepers = [asyncio.ensure_future(self._keep_slot(i)) for i in range(self.concurrency)]
        watchdog = asyncio.ensure_future(self._watchdog())
        if self.warmup > 0:
            loop.call_later(self.warmup, self._start_measure)
        else:
            self._start_measure()
        try:
            await self._finished
        finally:
            watchdog.cancel()
            for slot in self.slots:
                if slot.transport is not None:
                    slot.transport.close()
            await asyncio.gather(*keepers, return_exceptions=True)
        return self.result


def run_sync(gen: LoadGen) -> Result:
    """Run a ``LoadGen`` on a fresh uvloop loop (plain asyncio if uvloop is missing)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(gen.run())
    return uvloop.run(gen.run())


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", help="e.g. http://127.0.0.1:4000/v1/chat/completions")
    ap.add_argument("-c", "--concurrency", type=int, default=16)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("-d", "--duration", type=float, help="seconds to measure (default 10)")
    group.add_argument("-n", "--requests", type=int, help="requests to measure instead of a duration")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of unrecorded warm-up")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--model", default="sim-fast")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--api-key")
    ap.add_argument("--body", help="raw JSON body to send instead of the built-in chat request")
    args = ap.parse_args(argv)

    url = urlsplit(args.url)
    if url.scheme != "http" or not url.hostname:
        ap.error("only plain http:// URLs are supported")
    if args.body:
        headers = (("Authorization", f"Bearer {args.api_key}"),) if args.api_key else ()
        req = Request(body=args.body.encode(), stream=args.stream, headers=headers)
    else:
        req = chat_request(args.model, stream=args.stream, api_key=args.api_key)
    req = Request(req.body, req.stream, url.path or "/", req.method, req.headers)
    duration = (args.duration or 10.0) if args.requests is None else None
    gen = LoadGen(
        url.hostname,
        url.port or 80,
        [req],
        concurrency=args.concurrency,
        duration=duration,
        count=args.requests,
        warmup=args.warmup,
        timeout=args.timeout,
    )
    summary = run_sync(gen).summary()
    sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 1 if summary["errors"] or not summary["requests"] else 0


if __name__ == "__main__":
    sys.exit(main())
