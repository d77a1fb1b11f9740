"""A key's limits and budget counted in a real Redis: atomic admission, batched settlement, Redis trouble."""

from __future__ import annotations

import asyncio
import socket
import time

import redis

from mmproxy.db.base import KeyRecord, TeamRecord
from mmproxy.keys.shared_limits import SharedKeyLimits
from mmproxy.redis_client import RedisError
from tests.router.test_shared_redis import redis_url  # noqa: F401  (the module fixture: a real redis-server)


def _record(name: str, **fields: object) -> KeyRecord:
    base: dict[str, object] = {
        "key_name": "sk-...test", "key_alias": None, "team_id": None, "user_id": None, "models": [],
        "max_budget": None, "budget_duration": None, "budget_reset_at": None, "spend": 0.0, "rpm_limit": None,
        "tpm_limit": None, "metadata": {}, "expires": None, "created_at": time.time()}
    return KeyRecord(key_hash=f"{name}-{time.time_ns()}", **{**base, **fields})  # type: ignore[arg-type]


def test_budget_counts_every_process_reservations_and_settled_spend(redis_url: str):  # noqa: F811
    async def scenario() -> None:
        troubles: list[RedisError] = []
        one, two = SharedKeyLimits(redis_url, troubles.append), SharedKeyLimits(redis_url, troubles.append)
        record = _record("budget", max_budget=1.0, spend=0.25)
        now = time.time()
        names = one.names(record, now)
        assert await one.admit([record], [names], 0.5, 10, now) is None  # 0.25 spent + 0.5 reserved
        assert await two.admit([record], [names], 0.3, 10, now) is None  # 1.05 committed: over from now on
        refused = await two.admit([record], [names], 0.2, 10, now)  # the other process's reservation counts
        assert refused is not None and refused[0] == "budget" and abs(refused[1] - 1.05) < 1e-9 and refused[2] == 0
        one.settle(names, 0.5, 0.1, 5)  # the first request cost less than it reserved
        await asyncio.sleep(0.2)  # the batched settlement has gone out
        assert await two.admit([record], [names], 0.2, 10, now) is None  # 0.35 spent + 0.3 reserved
        client = redis.Redis.from_url(redis_url)
        assert abs(float(client.get(names[3])) - 0.35) < 1e-9
        assert abs(float(client.get(names[2])) - 0.5) < 1e-9
        assert int(client.get(names[1])) == 35  # 30 input tokens of the admitted requests + 5 output
        await one.close()
        await two.close()
        assert troubles == []

    asyncio.run(scenario())


def test_rpm_and_tpm_are_checked_before_counting(redis_url: str):  # noqa: F811
    async def scenario() -> None:
        limits = SharedKeyLimits(redis_url, lambda exc: None)
        record = _record("rpm", rpm_limit=2, tpm_limit=100)
        now = time.time()
        names = limits.names(record, now)
        assert await limits.admit([record], [names], 0.0, 60, now) is None
        assert await limits.admit([record], [names], 0.0, 60, now) == ("tpm", 60.0, 0)  # 120 > 100: not counted
        assert await limits.admit([record], [names], 0.0, 30, now) is None
        assert await limits.admit([record], [names], 0.0, 1, now) == ("rpm", 2.0, 0)
        assert int(redis.Redis.from_url(redis_url).get(names[0])) == 2  # refusals took nothing
        await limits.close()

    asyncio.run(scenario())


def test_a_team_counts_the_requests_of_all_its_keys(redis_url: str):  # noqa: F811
    async def scenario() -> None:
        limits = SharedKeyLimits(redis_url, lambda exc: None)
        team = TeamRecord(team_id=f"team-{time.time_ns()}", team_alias=None, models=[], max_budget=None,
                          budget_duration=None, budget_reset_at=None, spend=0.0, rpm_limit=1, tpm_limit=None,
                          metadata={}, created_at=time.time())
        first, second = _record("first"), _record("second")
        now = time.time()
        through_first = [limits.names(first, now), limits.names(team, now)]
        through_second = [limits.names(second, now), limits.names(team, now)]
        assert await limits.admit([first, team], through_first, 0.0, 1, now) is None
        # The second key has room of its own; the team (index 1) has none left.
        assert await limits.admit([second, team], through_second, 0.0, 1, now) == ("rpm", 1.0, 1)
        assert redis.Redis.from_url(redis_url).get(through_second[0][0]) is None  # the refusal counted nothing
        await limits.close()

    asyncio.run(scenario())


def test_a_lost_script_is_sent_again(redis_url: str):  # noqa: F811
    async def scenario() -> None:
        limits = SharedKeyLimits(redis_url, lambda exc: None)
        record = _record("script", rpm_limit=5)
        now = time.time()
        names = limits.names(record, now)
        assert await limits.admit([record], [names], 0.0, 1, now) is None
        redis.Redis.from_url(redis_url).script_flush()  # as after a Redis restart
        assert await limits.admit([record], [names], 0.0, 1, now) is None
        assert await limits.admit([record], [names], 0.0, 1, now) is None
        assert int(redis.Redis.from_url(redis_url).get(names[0])) == 3
        await limits.close()

    asyncio.run(scenario())


def test_settlements_wait_for_redis_to_come_back():
    with socket.socket() as probe:  # a port nothing listens on (yet)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> None:
        troubles: list[RedisError] = []
        limits = SharedKeyLimits(f"redis://127.0.0.1:{port}/0", troubles.append)
        record = _record("down", max_budget=1.0)
        names = limits.names(record, time.time())
        limits.settle(names, 0.5, 0.2, 3)
        limits.settle(names, 0.5, 0.3, 4)
        await asyncio.sleep(0.2)
        assert troubles and limits._pending == {names: [1.0, 0.5, 7]}  # kept, summed, nothing lost

    asyncio.run(scenario())
