"""HTTP/1.1 load generator for LLM endpoints: closed loop (fixed concurrency) or open loop (a request rate).

Why not aiohttp/httpx/wrk: the generator shares a core with the upstream simulator, so every
microsecond it spends per request caps the throughput it can drive and blurs the gateway's
figures.  This one is a callback state machine on raw asyncio protocols with httptools: one
keep-alive connection per request in flight, the next request written straight from the parser's
"message complete" callback (no coroutine or future per request), request bytes encoded once.

It records, per successful request, latency (request written -> response complete), for streams
the time to the first SSE event carrying non-empty text, and mmproxy's ``x-mmproxy-overhead-ms``
header when present.  With ``detail=True`` (``mmproxy bench``) it also records the gaps between
content events (inter-token latency) and each reply's output tokens; ``benches/run.py`` leaves it
off so the per-request cost it measures stays minimal.  Errors are non-2xx statuses, unparsable
HTTP, streams cut before their end marker, JSON replies that are not a whole ``{...}`` (an envelope
check, not a parse: decoding every reply would cost more than some gateways do), dropped
connections and timeouts.

A library: ``mmproxy bench`` (``mmproxy.bench.cli``) and ``benches/run.py`` drive it, the latter
with hooks that snapshot the gateway's CPU at the edges of the measured window.
"""

from __future__ import annotations

import asyncio
import random
import re
import ssl
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httptools
import orjson

_OVERHEAD_HEADER = b"x-mmproxy-overhead-ms"
_REQUEST_ID_HEADER = b"x-mmproxy-request-id"
_DONE_MARKER = b"[DONE]"
_CONTENT_KEY = b'"content"'
_DIGITS = b"0123456789"

WARMUP, MEASURE, DRAIN = 0, 1, 2
# encoded request, stream, end marker, content pattern, usage key
_Payload = tuple[bytes, bool, bytes, re.Pattern[bytes], bytes | None]


@dataclass(frozen=True)
class Request:
    """One request template; ``stream`` says whether to expect (and check) an SSE response.

    ``content_key`` is the JSON key whose non-empty string values are streamed text (``"content"`` in OpenAI
    chunks, ``"text"`` in Anthropic deltas); ``usage_key`` the one whose last integer in the reply is its
    output token count (None: count content events instead).
    """

    body: bytes
    stream: bool = False
    path: str = "/v1/chat/completions"
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    end_marker: bytes = _DONE_MARKER  # a stream is whole once this went by (Anthropic: message_stop, ...)
    content_key: bytes = _CONTENT_KEY
    usage_key: bytes | None = None

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


def content_pattern(key: bytes) -> re.Pattern[bytes]:
    """Matches ``key`` with a non-empty string value: ``"content": "x``, not ``"content": ""`` or ``null``."""
    return re.compile(re.escape(key) + rb'[ :]*"[^"]')


_CONTENT = content_pattern(_CONTENT_KEY)


def has_content(chunk: bytes, pattern: re.Pattern[bytes] = _CONTENT) -> bool:
    """True if an SSE chunk carries streamed text (a regex search rather than JSON decoding, for speed)."""
    return pattern.search(chunk) is not None


def count_content(chunk: bytes, pattern: re.Pattern[bytes] = _CONTENT) -> int:
    """How many pieces of streamed text (content events) an SSE chunk carries."""
    return len(pattern.findall(chunk))


def last_int_after(data: bytes, key: bytes) -> int | None:
    """The integer following the last ``key`` (and its colon) in ``data``, or None."""
    i = data.rfind(key)
    if i < 0:
        return None
    j = i + len(key)
    n = len(data)
    while j < n and data[j] in b" :":
        j += 1
    k = j
    while k < n and data[k] in _DIGITS:
        k += 1
    return int(data[j:k]) if k > j else None


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (NaN when empty)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


@dataclass
class Result:
    """Raw outcome of the measured window; ``summary()`` turns it into report figures.

    ``sent`` counts every request written (warm-up and drain included: what the server saw), ``dropped``
    the arrivals of a rate run that found ``concurrency`` requests already in flight, ``unfinished`` the
    requests still in flight when the window closed (they finish uncounted; a window of only those says the
    target answers slower than the window is long).  ``itls``,
    ``output_tokens``, ``token_rates`` (each reply's output tokens / its latency) and ``upstream_ms`` are
    filled with ``detail=True``.
    """

    concurrency: int
    rate: float | None = None
    elapsed_s: float = 0.0
    ok: int = 0
    sent: int = 0
    dropped: int = 0
    unfinished: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    itls: list[float] = field(default_factory=list)
    output_tokens: int = 0
    token_rates: list[float] = field(default_factory=list)
    overheads_ms: list[float] = field(default_factory=list)
    upstream_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    warmup_errors: int = 0
    error_sample: str = ""
    loadgen_cpu_s: float = 0.0

    def merge(self, other: Result) -> None:
        """Add another window of the same load (a later round) to this one."""
        self.elapsed_s += other.elapsed_s
        self.ok += other.ok
        self.sent += other.sent
        self.dropped += other.dropped
        self.unfinished += other.unfinished
        self.output_tokens += other.output_tokens
        for mine, theirs in ((self.latencies, other.latencies), (self.ttfts, other.ttfts), (self.itls, other.itls),
                             (self.token_rates, other.token_rates), (self.overheads_ms, other.overheads_ms),
                             (self.upstream_ms, other.upstream_ms)):
            mine.extend(theirs)
        self.errors.update(other.errors)
        self.warmup_errors += other.warmup_errors
        self.error_sample = self.error_sample or other.error_sample
        self.loadgen_cpu_s += other.loadgen_cpu_s

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
        self.content = _CONTENT
        self.usage_key: bytes | None = None
        self.ended = False
        self.in_flight = False
        self.t_start = 0.0
        self.t_first = 0.0
        self.t_last = 0.0
        self.status = 0
        self.overhead: float | None = None
        self.request_id = b""
        self.prev_body = self.last_body = self.first_byte = b""
        self.events = 0
        self.gaps: list[float] | None = [] if gen.detail else None  # reused for every request of the slot
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
        if self.stream:
            if self.gaps is not None:
                self.count_events(body)
            elif not self.t_first and has_content(body, self.content):
                self.t_first = time.perf_counter()
            if not self.ended:
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
    def count_events(self, body: bytes) -> None:
        """Detail mode: time the read's content events; events that arrived in one read are 0 apart."""
        n = count_content(body, self.content)
        if not n:
            return
        now = time.perf_counter()
        gaps = self.gaps
        assert gaps is not None
        if self.t_first:
            gaps.append(now - self.t_last)
        else:
            self.t_first = now
        for _ in range(n - 1):
            gaps.append(0.0)
        self.t_last = now
        self.events += n

    def output_tokens(self) -> int | None:
        """Detail mode: the reply's output tokens from its usage (near the end), else its content events."""
        usage_key = self.usage_key
        if usage_key is not None:
            tokens = last_int_after(self.last_body, usage_key)
            if tokens is None and self.prev_body:
                tokens = last_int_after(self.prev_body[-512:] + self.last_body, usage_key)
            if tokens is not None:
                return tokens
        return self.events if self.stream else None

    def saw_done(self) -> bool:
        """Whether the stream's end marker (``[DONE]`` for OpenAI) went by."""
        return self.ended

    def whole_json_object(self) -> bool:
        """Cheap truncation check of a JSON reply: its envelope only, a full parse would cost too much."""
        return self.first_byte == b"{" and self.last_body.rstrip().endswith(b"}")

    def send(self, template: _Payload) -> None:
        payload, self.stream, self.end_marker, self.content, self.usage_key = template
        self.ended = False
        self.status = 0
        self.t_first = 0.0
        self.overhead = None
        self.request_id = b""
        self.prev_body = self.last_body = self.first_byte = b""
        if self.gaps is not None:
            self.gaps.clear()
            self.events = 0
        self.in_flight = True
        self.gen.result.sent += 1
        self.t_start = time.perf_counter()
        self.transport.write(payload)  # type: ignore[union-attr]

    def fail(self, kind: str, detail: str) -> None:
        """Count an error and drop the connection: after a protocol error its state is unknown."""
        if self.in_flight:
            self.gen.complete(self, False, kind, detail)
        if self.transport is not None:
            self.transport.abort()


class LoadGen:
    """``concurrency`` requests in flight at all times (closed loop), or arrivals at ``rate`` per second.

    Closed loop: one slot (connection) per concurrency level, each with one request outstanding.  Open loop
    (``rate``): arrivals ``poisson``-distributed (else evenly spaced) whatever the replies do, each on an idle
    connection or a new one, at most ``concurrency`` in flight (beyond that an arrival is dropped and counted).

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
        rate: float | None = None,
        poisson: bool = True,
        detail: bool = False,
        tls: ssl.SSLContext | None = None,
        on_measure_start: Callable[[], None] | None = None,
        on_measure_end: Callable[[], None] | None = None,
        record_ids: bool = False,
    ) -> None:
        if (duration is None) == (count is None):
            raise ValueError("give exactly one of duration or count")
        if rate is not None and not rate > 0:
            raise ValueError("rate must be positive")
        self.host, self.port = host, port
        self.payloads: list[_Payload] = [
            (r.encode(f"{host}:{port}"), r.stream, r.end_marker, content_pattern(r.content_key), r.usage_key)
            for r in requests
        ]
        self.concurrency = concurrency
        self.duration, self.count = duration, count
        self.warmup, self.timeout = warmup, timeout
        self.rate, self.poisson, self.detail, self.tls = rate, poisson, detail, tls
        self.on_measure_start, self.on_measure_end = on_measure_start, on_measure_end
        self.result = Result(concurrency=concurrency, rate=rate)
        # With ``record_ids``: mmproxy's x-mmproxy-request-id of every answer (a soak checks each has its row).
        self.request_ids: list[bytes] | None = [] if record_ids else None
        self.phase = WARMUP
        self.slots: list[_Slot] = []
        self.idle: list[_Slot] = []
        self.next_request: Callable[[_Slot], None] = self._park if rate is not None else self._next_closed
        self._t0 = 0.0
        self._cpu0 = 0.0
        self._arrival_rate = rate or 0.0  # open loop only
        self._next_arrival = 0.0
        self._opening: set[asyncio.Future[None]] = set()  # open loop: connections being opened for arrivals
        self._rng = random.Random()  # unseeded: the arrivals of successive steps are independent
        self._finished: asyncio.Future[None] | None = None

    @property
    def started(self) -> float:
        """``perf_counter`` at the start of the measured window (0 before it)."""
        return self._t0

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
            if slot.gaps is not None:
                self._record_detail(slot, now)
        else:
            res.errors[kind] += 1
            self._sample(kind, detail)
        if self.count is not None and res.ok + sum(res.errors.values()) >= self.count:
            self._end_measure()

    def _next_closed(self, slot: _Slot) -> None:
        """Closed loop: the slot's next request goes out as soon as its reply is complete."""
        if self.phase == DRAIN or slot.transport is None:
            self._check_drained()
            return
        self._send(slot)

    def _send(self, slot: _Slot) -> None:
        if len(self.payloads) == 1:
            slot.send(self.payloads[0])
        else:
            slot.send(self.payloads[slot.index % len(self.payloads)])
            slot.index += 1

    def _park(self, slot: _Slot) -> None:
        """Open loop: a connection whose reply is complete waits for the next arrival."""
        if slot.transport is not None:
            self.idle.append(slot)
        self._check_drained()

    # -- internals --------------------------------------------------------------------------
    def _record_detail(self, slot: _Slot, now: float) -> None:
        """Detail mode: the request's inter-token gaps, output tokens and mmproxy's split of its latency."""
        res = self.result
        res.itls.extend(slot.gaps or ())
        latency = now - slot.t_start
        tokens = slot.output_tokens()
        if tokens is not None:
            res.output_tokens += tokens
            if latency > 0:
                res.token_rates.append(tokens / latency)
        if slot.overhead is not None:
            res.upstream_ms.append(latency * 1e3 - slot.overhead)

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
        self.result.unfinished = sum(1 for s in self.slots if s.in_flight)
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
        """Open a slot's connection, retrying (and counting an error) every 50 ms for up to ``timeout`` seconds.

        A server that stays unreachable that long (wrong port, refused certificate) raises the last OSError
        rather than leaving the run waiting forever.
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.timeout
        while True:
            try:
                _, proto = await loop.create_connection(lambda: _Slot(self), self.host, self.port, ssl=self.tls)
                return proto
            except OSError as exc:
                if self.phase == DRAIN or loop.time() > give_up:
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

    def _arrive(self) -> None:
        """Open loop: one arrival, then the timer for the next (absolute times, so lateness does not drift)."""
        if self.phase == DRAIN:
            return
        loop = asyncio.get_running_loop()
        gap = self._rng.expovariate(self._arrival_rate) if self.poisson else 1.0 / self._arrival_rate
        self._next_arrival += gap
        loop.call_at(self._next_arrival, self._arrive)
        while self.idle:
            slot = self.idle.pop()
            if slot.transport is not None:
                self._send(slot)
                return
        if len(self.slots) - len(self.idle) + len(self._opening) >= self.concurrency:  # pooled ones not idle are busy
            if self.phase == MEASURE:
                self.result.dropped += 1
            return
        opening = asyncio.ensure_future(self._open_and_send())
        self._opening.add(opening)
        opening.add_done_callback(self._opening.discard)

    async def _open_and_send(self) -> None:
        """Open loop: a new connection for an arrival that found none idle; it joins the pool."""
        try:
            slot = await self._connect()
        except OSError:
            return
        self.slots.append(slot)
        slot.closed.add_done_callback(lambda _: self._forget(slot))
        if self.phase == DRAIN:
            self._park(slot)
        else:
            self._send(slot)

    def _forget(self, slot: _Slot) -> None:
        """Open loop: a closed connection leaves the pool."""
        if slot in self.slots:
            self.slots.remove(slot)
        if slot in self.idle:
            self.idle.remove(slot)
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
        """Connect, warm up, measure, drain; returns the measured window's ``Result``."""
        loop = asyncio.get_running_loop()
        self._finished = loop.create_future()
        keepers: list[asyncio.Future[None]] = []
        if self.rate is None:
            self.slots = list(await asyncio.gather(*(self._connect() for _ in range(self.concurrency))))
            keepers = [asyncio.ensure_future(self._keep_slot(i)) for i in range(self.concurrency)]
        else:
            self._next_arrival = loop.time()
            loop.call_soon(self._arrive)
        watchdog = asyncio.ensure_future(self._watchdog())
        if self.warmup > 0:
            loop.call_later(self.warmup, self._start_measure)
        else:
            self._start_measure()
        try:
            await self._finished
        finally:
            watchdog.cancel()
            for slot in list(self.slots):
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
