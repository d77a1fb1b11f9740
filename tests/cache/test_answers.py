"""A cached answer's text in each API shape the cache keeps, and the three answer equivalences."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest

from mmproxy.cache.answers import Embedded, Exact, Judged, answer_key, answer_text


def _sse(*events: dict, done: bool = False) -> bytes:
    body = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
    return body + (b"data: [DONE]\n\n" if done else b"")


CHAT = orjson.dumps({"object": "chat.completion", "choices": [{"index": 0, "message": {
    "role": "assistant", "content": "card_arrival"}, "finish_reason": "stop"}]})
CHAT_STREAM = _sse({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                                          "content": "card_"}}]},
                   {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "arrival"}}]},
                   {"object": "chat.completion.chunk", "choices": [], "usage": {"total_tokens": 3}}, done=True)
MESSAGES = orjson.dumps({"type": "message", "role": "assistant", "content": [
    {"type": "text", "text": "card_"}, {"type": "text", "text": "arrival"}], "stop_reason": "end_turn"})
MESSAGES_STREAM = (b"event: message_start\n" + _sse({"type": "message_start", "message": {"content": []}})
                   + b"event: content_block_delta\n"
                   + _sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta",
                                                                                "text": "card_arrival"}})
                   + _sse({"type": "message_stop"}))
RESPONSES = orjson.dumps({"object": "response", "output": [
    {"type": "reasoning", "summary": []},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "card_arrival"}]}]})
RESPONSES_STREAM = _sse({"type": "response.created", "response": {}},
                        {"type": "response.output_text.delta", "delta": "card_arr"},
                        {"type": "response.output_text.delta", "delta": "ival"},
                        {"type": "response.completed", "response": {}})


@pytest.mark.parametrize(("body", "stream"), [(CHAT, False), (CHAT_STREAM, True), (MESSAGES, False),
                                              (MESSAGES_STREAM, True), (RESPONSES, False), (RESPONSES_STREAM, True)])
def test_the_text_is_read_back_from_every_shape(body: bytes, stream: bool):
    assert answer_text(body, stream) == "card_arrival"


def test_no_text_answer_is_none():
    tool_call = orjson.dumps({"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]})
    assert answer_text(tool_call, False) is None
    assert answer_text(b"not json", False) is None
    assert answer_text(b"data: [DONE]\n\n", True) is None


def test_short_answers_compare_by_their_normalised_form():
    assert answer_key("The answer is B.") == answer_key("B")
    assert answer_key('{"b": 2, "a": 1}') == answer_key('```json\n{"a": 1, "b": 2}\n```')
    assert answer_key("1,000") == answer_key("1000")
    assert answer_key("card_arrival") != answer_key("card_delivery_estimate")
    long_a = "Paris is the capital of France and has been for a very long time, since the Middle Ages."
    assert answer_key(long_a) == answer_key(long_a.upper().replace(" ", "  "))  # free text: case and spacing only
    assert answer_key(long_a) != answer_key(long_a + " It is also its largest city.")


def _same(equivalence, question: str, a: str, b: str) -> bool:
    return asyncio.run(equivalence.same(question, a, b))


def test_exact_equivalence():
    assert _same(Exact(), "q", "The answer is 42", "#### 42")
    assert not _same(Exact(), "q", "42", "43")


def test_embedded_equivalence_compares_free_text_by_cosine():
    vectors = {"a": np.array([1.0, 0.0]), "b": np.array([0.96, 0.28]), "c": np.array([0.0, 1.0])}

    async def embed(text: str) -> np.ndarray:
        return vectors[text.split()[-1]]

    long = "this reply runs long enough to count as free text and not as a label at all, "
    same = Embedded(embed, 0.9)
    assert _same(same, "q", long + "a", long + "b")  # cosine 0.96
    assert not _same(same, "q", long + "a", long + "c")
    assert not _same(same, "q", "12", "13")  # short answers are compared exactly, never by embedding


def test_judged_equivalence_asks_only_for_free_text_and_reads_the_grouping():
    asked: list[list[dict[str, str]]] = []

    def judge(reply: str | Exception):
        async def ask(messages: list[dict[str, str]]) -> str:
            asked.append(messages)
            if isinstance(reply, Exception):
                raise reply
            return reply
        return Judged(ask)

    long_a = "You can freeze the card in the app right away and order a replacement from the same screen."
    long_b = "Freeze it from the app at once, then order a new card there; the old one stops working."
    assert _same(judge('{"groups": [[1, 2]]}'), "I lost my card", long_a, long_b)
    assert "I lost my card" in asked[-1][-1]["content"] and long_b in asked[-1][-1]["content"]
    assert not _same(judge('{"groups": [[1], [2]]}'), "q", long_a, long_b)
    assert not _same(judge("I cannot tell"), "q", long_a, long_b)  # unreadable: never a wider cache
    assert not _same(judge(RuntimeError("judge down")), "q", long_a, long_b)
    calls = len(asked)
    assert _same(judge('{"groups": [[1], [2]]}'), "q", "B", "The answer is B")  # short: no judge asked
    assert len(asked) == calls
