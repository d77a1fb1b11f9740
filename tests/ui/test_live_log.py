"""The live log's promises: a key's page sees only its key's requests, and a slow page costs bounded memory."""

from __future__ import annotations

from mmproxy.pipeline.live_log import LINE, LiveLog, Watcher
from mmproxy.spend.record import RequestRecord


def _record(i: int, key_hash: str | None) -> RequestRecord:
    record = RequestRecord(f"req-{i}", "chat")
    record.status, record.requested_model, record.key_hash = 200, "m", key_hash
    return record


async def test_a_keys_page_sees_only_its_keys_requests_and_the_master_sees_all():
    live = LiveLog()
    mine, everything = Watcher("a" * 64), Watcher(None)
    live.watchers.update((mine, everything))
    for i in range(6):
        live.publish(_record(i, "a" * 64 if i % 2 else "b" * 64))
    lines, dropped = mine.take()
    assert len(lines) == 3 and dropped == 0
    assert {line[LINE.index("key")] for line in lines} == {"a" * 12}  # never the whole hash, never a key
    assert len(everything.take()[0]) == 6
    assert mine.take() == ([], 0) and not mine.ready.is_set()


async def test_a_page_that_falls_behind_loses_the_oldest_lines_and_is_told_how_many():
    live = LiveLog()
    slow = Watcher(None)
    live.watchers.add(slow)
    for i in range(2500):
        live.publish(_record(i, None))
    lines, dropped = slow.take()
    assert len(lines) == 2000 and dropped == 500
    assert lines[-1][LINE.index("status")] == 200


async def test_closing_wakes_every_page_so_shutdown_is_not_held():
    live = LiveLog()
    page = Watcher(None)
    live.watchers.add(page)
    live.close()
    assert live.closed and page.ready.is_set()


async def test_prompts_appear_only_when_the_operator_turns_them_on():
    from mmproxy.pipeline.apis import Inbound

    chat = {"model": "m", "messages": [{"role": "user", "content": "my secret plan " * 40}]}
    inbound = Inbound("m", chat, b"", chat=chat)
    for shown in (False, True):
        live = LiveLog(prompts=shown)
        page = Watcher(None)
        live.watchers.add(page)
        live.publish(_record(0, None), inbound)
        prompt = page.take()[0][0][LINE.index("prompt")]
        assert prompt == (("my secret plan " * 40)[:300] if shown else None)
