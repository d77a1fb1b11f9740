"""The gateway under faults, one after another and overlapping, with mixed traffic running throughout.

Two workers, virtual keys with budgets and limits counted in Redis, the ledger on PostgreSQL; the
faults: upstream errors, timeouts, stalled connections, cut streams and broken JSON (the simulator), clients that
hang up mid-stream, a key's budget raced by 100 requests, Redis killed and started again, PostgreSQL stopped and
started again, a worker killed with SIGKILL. The client keeps a record of every request and what it was answered;
the assertions afterwards are what an operator relies on: every request that got a request id has exactly one
ledger row (none lost, none doubled, none double-counted in the key's spend), a 5xx only where a fault explains it
and with the error code that names it (never a 500), healthy requests succeed after each fault without anyone
stepping in, and the workers' memory comes back to its level.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis

from mmproxy.spend.ledger import INTERRUPTED
from tests.conftest import MASTER_KEY, PostgresCluster, Process, SimControl, gateway_config, start_gateway
from tests.test_redis_client import Server as RedisServer
from tests.test_redis_client import server  # noqa: F401  (the fixture: a redis-server the test may kill)

MAX_TOKENS = 20  # the simulator's answers are 20 tokens: a budget's reservation is what a request really costs
# What each upstream fault is answered with: the upstream's status and code passed on, or the gateway's own
# (upstream_500, upstream_timeout, upstream_bad_response); a stream cut upstream ends with an error event.
FAULT_CODES = {
    "429": (429, "rate_limit_exceeded"), "500": (502, "upstream_500"), "502": (502, "bad_gateway"),
    "503": (503, "server_is_overloaded"), "bad_json": (502, "upstream_bad_response"),
    "timeout": (504, "upstream_timeout"), "hang": (504, "upstream_timeout"), "cut": (200, "stream_cut"),
}


@dataclass
class Outcome:
    """One request as the client saw it."""

    phase: str
    kind: str  # "chat", "stream", "hangup" (a stream the client leaves after its first event), "budget", "stranger"
    fault: str | None  # the upstream fault the request asked the simulator for
    status: int | None = None  # None: no response at all (the connection dropped first)
    request_id: str | None = None
    code: str | None = None  # the error code of an error body, or of a stream's error event
    whole: bool = False  # a 200 that arrived complete ([DONE] for a stream)
    dropped: str | None = None  # the client-side error when the connection dropped
    usage: dict[str, int] | None = None


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of this module's own, which the test stops and starts again."""
    own = PostgresCluster()
    yield own
    own.remove()


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


class Traffic:
    """Mixed client traffic against the gateway, every request's outcome recorded."""

    def __init__(self, gw: Process, key: str) -> None:
        self.http = httpx.AsyncClient(base_url=gw.url, timeout=15, headers={"Authorization": f"Bearer {key}"},
                                      limits=httpx.Limits(max_connections=200, max_keepalive_connections=200))
        self.outcomes: list[Outcome] = []
        self.phase = "start"

    async def close(self) -> None:
        await self.http.aclose()

    def _body(self, model: str, stream: bool, sim: dict[str, Any]) -> dict[str, Any]:
        return {"model": model, "stream": stream, "max_tokens": MAX_TOKENS, "sim": sim,
                "messages": [{"role": "user", "content": f"fault matrix {self.phase}"}]}

    async def chat(self, fault: str | None = None, model: str = "gpt-4o", key: str | None = None,
                   kind: str = "chat") -> Outcome:
        outcome = Outcome(self.phase, kind, fault)
        self.outcomes.append(outcome)
        headers = {"Authorization": f"Bearer {key}"} if key else None
        try:
            response = await self.http.post("/v1/chat/completions", headers=headers,
                                            json=self._body(model, False, {"fault": fault} if fault else {}))
        except httpx.TransportError as exc:
            outcome.dropped = repr(exc)
            return outcome
        outcome.status, outcome.request_id = response.status_code, response.headers.get("x-mmproxy-request-id")
        body = response.json()
        if response.status_code == 200:
            outcome.whole = body["choices"][0]["message"]["content"] is not None
            outcome.usage = body["usage"]
        else:
            outcome.code = body["error"]["code"]
        return outcome

    async def stream(self, fault: str | None = None, model: str = "gpt-4o", hang_up: bool = False,
                     delay_ms: int = 5) -> Outcome:
        outcome = Outcome(self.phase, "hangup" if hang_up else "stream", fault)
        self.outcomes.append(outcome)
        sim: dict[str, Any] = {"chunks": 10, "chunk_delay_ms": 100 if hang_up else delay_ms}
        if fault:
            sim["fault"] = fault
        try:
            async with self.http.stream("POST", "/v1/chat/completions", json=self._body(model, True, sim)) as response:
                outcome.status, outcome.request_id = response.status_code, response.headers.get("x-mmproxy-request-id")
                if response.status_code != 200:
                    outcome.code = orjson.loads(await response.aread())["error"]["code"]
                    return outcome
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line.removeprefix("data: ")
                    if hang_up:
                        return outcome  # leaving the block closes the connection mid-stream
                    if data == "[DONE]":
                        outcome.whole = outcome.code is None
                    elif "error" in (event := orjson.loads(data)):
                        outcome.code = event["error"]["code"]
        except httpx.TransportError as exc:
            outcome.dropped = repr(exc)
        return outcome

    async def run(self, phase: str, seconds: float, concurrency: int = 12, faults: bool = False) -> None:
        """``concurrency`` clients sending the mix back to back for ``seconds``: plain chats and streams, and
        with ``faults`` every upstream fault and clients hanging up mid-stream among them."""
        self.phase = phase
        healthy = [self.chat, self.stream, self.chat, lambda: self.chat(model="mini")]
        faulty = [
            lambda: self.chat("429"), lambda: self.chat("500"), lambda: self.stream("502"), lambda: self.chat("503"),
            lambda: self.chat("bad_json"), lambda: self.stream("cut"), lambda: self.stream(hang_up=True),
            lambda: self.chat("timeout", model="flaky"), lambda: self.stream("hang", model="flaky"),
        ]
        mix = [*healthy, *faulty] if faults else healthy
        deadline = time.monotonic() + seconds

        async def client(start: int) -> None:
            for send in itertools.islice(itertools.cycle(mix), start, None):
                if time.monotonic() > deadline:
                    return
                await send()

        await asyncio.gather(*(client(i) for i in range(concurrency)))


def _config(sim_url: str, database_url: str, redis_url: str, spool: Path) -> dict[str, Any]:
    config = gateway_config(sim_url)
    config["general_settings"].update({"database_url": database_url, "spool_dir": str(spool)})
    config["router_settings"]["redis_url"] = redis_url
    for entry in config["model_list"]:  # priced, so a key with a budget may use every group
        entry["model_info"].setdefault("input_cost_per_token", 1e-07)
        entry["model_info"].setdefault("output_cost_per_token", 4e-07)
    return config


async def _admin(gw: Process, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}) as client:
        return await client.request(method, path, json=body)


async def _budget_race(gw: Process, traffic: Traffic) -> list[Outcome]:
    """100 requests at once on a key whose budget pays for five (priced from what one request costs)."""
    probe = await traffic.chat(key=MASTER_KEY)
    assert probe.status == 200 and probe.usage is not None
    one = probe.usage["prompt_tokens"] * 2.5e-06 + probe.usage["completion_tokens"] * 1e-05  # gpt-4o's prices
    generated = await _admin(gw, "POST", "/key/generate", {"max_budget": 5 * one, "key_alias": "five"})
    key = generated.json()["key"]
    return list(await asyncio.gather(*(traffic.chat(key=key, kind="budget") for _ in range(100))))


Row = tuple[int, str | None, str | None, float]


def _ledger(database_url: str) -> tuple[Counter[str], dict[str, Row], dict[str, float]]:
    """How many rows each request id has, each one's (status, error code, key, cost), and each key's spend."""
    logs = "SELECT request_id, status, error_code, key_hash, cost_usd FROM mmproxy_spend_logs"
    keys = "SELECT key_hash, spend FROM mmproxy_keys"
    if database_url.startswith("sqlite://"):
        with sqlite3.connect(database_url.removeprefix("sqlite://")) as db:
            rows, spend = db.execute(logs).fetchall(), db.execute(keys).fetchall()
    else:
        async def read() -> tuple[list[Any], list[Any]]:
            conn = await asyncpg.connect(database_url)
            try:
                return await conn.fetch(logs), await conn.fetch(keys)
            finally:
                await conn.close()

        rows, spend = asyncio.run(read())
    return Counter(r[0] for r in rows), {r[0]: tuple(r[1:]) for r in rows}, {k[0]: k[1] for k in spend}


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_the_gateway_survives_a_sequence_of_faults_losing_no_ledger_row(
        backend: str, request: pytest.FixtureRequest, simulator: Process, sim: SimControl,
        server: RedisServer, tmp_path: Path):  # noqa: F811
    # PostgreSQL is stopped and started again mid-run; SQLite (both workers on one file) has no outage to play.
    cluster: PostgresCluster | None = request.getfixturevalue("cluster") if backend == "postgres" else None
    database_url = cluster.url if cluster is not None else f"sqlite://{tmp_path / 'ledger.db'}"
    redis_url = f"redis://127.0.0.1:{server.port}/0"
    gw = start_gateway(tmp_path, _config(simulator.url, database_url, redis_url, tmp_path / "spool"),
                       "--workers", "2")
    try:
        run = asyncio.run(_scenario(gw, cluster, server))
        _check_answers(run)
        _check_ledger(run, database_url)
    finally:
        gw.stop()


@dataclass
class Run:
    outcomes: list[Outcome]
    budget: list[Outcome]
    rss_before: dict[int, float]
    rss_after: dict[int, float]
    victim: int
    redis_counters: int  # the keys' counters in Redis once it was back
    outage_read: httpx.Response | None  # a ledger read while PostgreSQL was down
    outage_key: Outcome | None  # a request with a key no worker knows, while PostgreSQL was down


async def _scenario(gw: Process, cluster: PostgresCluster | None, redis_server: RedisServer) -> Run:
    generated = await _admin(gw, "POST", "/key/generate", {"max_budget": 1000.0, "rpm_limit": 100_000,
                                                           "key_alias": "traffic"})
    traffic = Traffic(gw, generated.json()["key"])
    try:
        await traffic.run("warm-up", 3)
        rss_before = {pid: _rss_mb(pid) for pid in _children(gw.proc.pid)}

        # Upstream faults of every kind, clients hanging up, and a budget raced by 100 requests at once.
        race = asyncio.ensure_future(_budget_race(gw, traffic))
        await traffic.run("upstream faults", 5, faults=True)
        budget = await race
        await traffic.run("after upstream faults", 1.5)

        # Redis killed under load, then started again (empty: it lost every counter and script).
        load = asyncio.ensure_future(traffic.run("redis down", 3, faults=True))
        await asyncio.sleep(0.5)
        assert redis_server.proc is not None
        redis_server.proc.kill()
        await load
        await asyncio.to_thread(redis_server.start)
        await traffic.run("after redis", 2)
        redis_counters = len(redis.Redis(port=redis_server.port).keys("mmproxy:key:*"))

        # PostgreSQL stopped under load: rows wait in the queue and the spool; started again, they arrive.
        outage_read, stranger = None, None
        if cluster is not None:
            load = asyncio.ensure_future(traffic.run("postgres down", 4, faults=True))
            await asyncio.sleep(0.5)
            await asyncio.to_thread(cluster.stop)
            await asyncio.sleep(1.0)
            outage_read = await _admin(gw, "GET", "/spend/logs")
            stranger = await traffic.chat(key="sk-known-to-no-worker", kind="stranger")  # the database would say
            await asyncio.sleep(1.0)
            await asyncio.to_thread(cluster.start)
            await load
            await traffic.run("after postgres", 2)

        # A worker killed with SIGKILL mid-load: its parent starts another, which writes the dead one's rows.
        load = asyncio.ensure_future(traffic.run("worker killed", 4, faults=True))
        long = [asyncio.ensure_future(traffic.stream(delay_ms=300)) for _ in range(10)]  # 3 s each
        await asyncio.sleep(1.0)
        victim = _children(gw.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        await asyncio.gather(load, *long)
        await traffic.run("after worker killed", 3)
        rss_after = {pid: _rss_mb(pid) for pid in _children(gw.proc.pid)}
        return Run(traffic.outcomes, budget, rss_before, rss_after, victim, redis_counters, outage_read, stranger)
    finally:
        await traffic.close()


def _check_answers(run: Run) -> None:
    """What the clients were answered: 5xx only for an upstream fault, recovery after each outage, the budget."""
    for outcome in run.outcomes:
        if outcome.dropped is not None:  # no answer: only what was in flight on the killed worker
            assert outcome.phase == "worker killed", outcome
        elif outcome.fault is not None:
            assert (outcome.status, outcome.code) == FAULT_CODES[outcome.fault], outcome
        elif outcome.kind not in ("budget", "stranger"):  # checked below
            assert (outcome.status, outcome.code, outcome.whole or outcome.kind == "hangup") == (200, None, True), \
                outcome
    dropped = [o for o in run.outcomes if o.dropped is not None]
    assert len(dropped) <= 24, dropped  # at most what the killed worker had in flight (12 clients, 2 workers)
    for phase in ("after upstream faults", "after redis", "after postgres", "after worker killed"):
        outcomes = [o for o in run.outcomes if o.phase == phase]
        assert all(o.status == 200 for o in outcomes), phase  # healthy again, by itself
        assert outcomes or (phase == "after postgres" and run.outage_read is None)
    served = [o for o in run.budget if o.status == 200]
    refused = [o for o in run.budget if o.status != 200]
    assert 4 <= len(served) <= 6, len(served)
    assert {(o.status, o.code) for o in refused} == {(429, "budget_exceeded")}
    assert run.redis_counters > 0  # the restarted Redis counts the keys' limits again
    if run.outage_read is not None and run.outage_key is not None:  # answers naming the outage, not a 500
        assert run.outage_read.status_code == 503
        assert run.outage_read.json()["error"]["code"] == "database_unavailable"
        assert (run.outage_key.status, run.outage_key.code) == (503, "database_unavailable")
    # The worker killed was replaced, and memory came back to its level.
    assert len(run.rss_after) == 2 and run.victim not in run.rss_after
    ceiling = max(run.rss_before.values()) + 25
    assert all(mb < ceiling for mb in run.rss_after.values()), (run.rss_before, run.rss_after)


def _check_ledger(run: Run, database_url: str) -> None:
    """Every answer with a request id has exactly one ledger row, as the client saw it; each key's spend is the
    sum of its rows' cost (a row written again after the outage or the kill counted once)."""
    answered = {o.request_id: o for o in run.outcomes if o.request_id is not None}
    deadline = time.monotonic() + 30
    while True:
        counts, stored, spend = _ledger(database_url)
        if answered.keys() <= counts.keys() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    missing = [o for rid, o in answered.items() if rid not in counts]
    assert not missing, (len(missing), missing[:5])
    assert max(counts.values()) == 1
    for rid, outcome in answered.items():
        if outcome.dropped is not None:  # a stream cut by the worker's death: its provisional row
            expected: tuple[int | None, str | None] = (200, INTERRUPTED)
        elif outcome.kind == "hangup":
            expected = (499, "client_disconnected")
        else:  # what the client was answered
            expected = (outcome.status, outcome.code)
        assert stored[rid][:2] == expected, (outcome, stored[rid])
    assert any(o.dropped is not None for o in answered.values())  # the kill did cut streams
    unknown = counts.keys() - answered.keys()
    assert len(unknown) <= len([o for o in run.outcomes if o.dropped is not None])
    by_key: dict[str, float] = {}
    for _, _, key_hash, cost in stored.values():
        if key_hash is not None:
            by_key[key_hash] = by_key.get(key_hash, 0.0) + cost
    assert by_key and all(abs(spend[key] - total) < 1e-9 for key, total in by_key.items()), (by_key, spend)
