"""The generator's byte scans: what counts as streamed text and where a reply's output tokens are read."""

import pytest

from mmproxy.bench.loadgen import content_pattern, count_content, last_int_after
from mmproxy.bench.workload import DIALECTS

OPENAI, ANTHROPIC = (content_pattern(DIALECTS[api].content_key) for api in ("openai", "anthropic"))


@pytest.mark.parametrize(("chunk", "pattern", "events"), [
    (b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n', OPENAI, 0),  # the role chunk
    (b'data: {"choices":[{"delta":{"content":" hi"}}]}\n\ndata: {"choices":[{"delta":{"content": "!"}}]}\n\n',
     OPENAI, 2),
    (b'data: {"choices":[{"delta":{"content":null,"tool_calls":[]}}]}\n\n', OPENAI, 0),
    (b'event: content_block_start\ndata: {"content_block":{"type":"text","text":""}}\n\n', ANTHROPIC, 0),
    (b'event: message_start\ndata: {"message":{"content":[],"usage":{"output_tokens":1}}}\n\n', ANTHROPIC, 0),
    (b'event: content_block_delta\ndata: {"delta":{"type":"text_delta","text":"Hel"}}\n\n', ANTHROPIC, 1),
])
def test_content_events(chunk: bytes, pattern, events: int) -> None:
    assert count_content(chunk, pattern) == events


def test_output_tokens_come_from_the_last_usage() -> None:
    anthropic = (b'data: {"message":{"usage":{"input_tokens":9,"output_tokens":1}}}\n\n'
                 b'data: {"type":"message_delta","usage":{"output_tokens": 42}}\n\n')
    assert last_int_after(anthropic, DIALECTS["anthropic"].usage_key) == 42
    openai = b'{"usage":{"prompt_tokens":5,"completion_tokens":17,"completion_tokens_details":{"reasoning_tokens":3}}}'
    assert last_int_after(openai, DIALECTS["openai"].usage_key) == 17
    assert last_int_after(b'{"usage":null}', DIALECTS["openai"].usage_key) is None
