"""mmproxy.privacy: placeholders in, values back out, whatever the split of a stream; the privacy config."""

from __future__ import annotations

import orjson
import pytest

from mmproxy._native import PiiDetector
from mmproxy.config import ConfigError, parse_config
from mmproxy.privacy import Privacy, Redaction

EMAIL, CARD = "jane.doe@example.com", "4111 1111 1111 1111"


def _redacted(text: str) -> tuple[Redaction, str]:
    redaction = Privacy(PiiDetector()).redaction()
    return redaction, redaction.text(text)


def test_same_value_same_placeholder_and_kinds_filter():
    redaction, text = _redacted(f"{EMAIL} and {CARD}, then {EMAIL} and other@example.org")
    assert text == "[EMAIL_1] and [CARD_1], then [EMAIL_1] and [EMAIL_2]"
    assert redaction.summary() == "card:1,email:2"
    only_cards = Privacy(PiiDetector()).redaction(["card"])
    assert only_cards.text(f"{EMAIL} {CARD}") == f"{EMAIL} [CARD_1]"


def test_every_string_of_any_shape_is_redacted_but_inline_data():
    redaction = Privacy(PiiDetector()).redaction()
    image = "data:image/png;base64,QUtJQUlPU0ZPRE5ON0VYQU1QTEU=/AKIAIOSFODNN7EXAMPLE"
    body = {"system": f"owner {EMAIL}", "messages": [{"role": "user", "content": [
        {"type": "tool_result", "content": [{"type": "text", "text": f"card {CARD}"}]},
        {"type": "image", "source": {"type": "url", "url": image}}]}]}
    redacted = redaction.value(body)
    assert redacted["system"] == "owner [EMAIL_1]"
    assert redacted["messages"][0]["content"][0]["content"][0]["text"] == "card [CARD_1]"
    assert redacted["messages"][0]["content"][1]["source"]["url"] == image


def test_json_answers_get_the_values_escaped():
    redaction = Privacy(PiiDetector(patterns=[("home_dir", r'C:\\Users\\"?\w+')])).redaction()
    assert redaction.text('open C:\\Users\\"ada now') == "open [HOME_DIR_1] now"
    body = orjson.dumps({"content": "in [HOME_DIR_1], not [HOME_DIR_7]"})
    assert orjson.loads(redaction.restore_json(body))["content"] == 'in C:\\Users\\"ada, not [HOME_DIR_7]'


def _events(*contents: str | None, finish: bool = True) -> bytes:
    out = b""
    for content in contents:
        out += b"data: " + orjson.dumps({"id": "c", "choices": [{"index": 0, "delta": {"content": content},
                                                                  "finish_reason": None}]}) + b"\n\n"
    if finish:
        out += b"data: " + orjson.dumps({"id": "c", "choices": [{"index": 0, "delta": {},
                                                                  "finish_reason": "stop"}]}) + b"\n\n"
    return out + b"data: [DONE]\n\n"


def _relay(redaction: Redaction, data: bytes, cut: int) -> tuple[str, int]:
    """The text a client reads from ``data`` fed in two pieces split at ``cut``, and how many chunks carried it."""
    stream = redaction.stream(None)
    out = stream.feed(data[:cut]) + stream.feed(data[cut:])
    assert stream.complete
    texts = [orjson.loads(line[6:])["choices"][0]["delta"].get("content") or ""
             for line in out.split(b"\n\n") if line.startswith(b"data: {")]
    return "".join(texts), sum(1 for t in texts if t)


@pytest.mark.parametrize("finish", [True, False])
def test_a_placeholder_split_across_chunks_is_restored(finish: bool):
    redaction, _ = _redacted(f"mail {EMAIL} card {CARD}")
    data = _events("write to [EM", "AIL", "_1] or use [CA", "RD_1]", ".", finish=finish)
    for cut in range(len(data) + 1):  # every split of the bytes, events cut anywhere
        text, chunks = _relay(redaction, data, cut)
        assert text == f"write to {EMAIL} or use {CARD}.", cut
        assert chunks >= 3  # only a possible placeholder is held back, not the stream


@pytest.mark.parametrize("finish", [True, False])
def test_tool_call_arguments_split_across_chunks_get_the_values_back_escaped(finish: bool):
    redaction = Privacy(PiiDetector(patterns=[("home_dir", r'C:\\Users\\"?\w+')])).redaction()
    redaction.text(f'mail {EMAIL} from C:\\Users\\"ada')
    pieces = ['{"to": "[EM', 'AIL_1]", "pa', 'th": "[HOME_', 'DIR_1]"}']
    data = b""
    for i, piece in enumerate(pieces):
        call = {"index": 0, "function": {"arguments": piece}, **({"id": "t1", "type": "function"} if i == 0 else {})}
        data += b"data: " + orjson.dumps({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [call]},
                                                                  "finish_reason": None}]}) + b"\n\n"
    if finish:
        data += b"data: " + orjson.dumps({"id": "c", "choices": [{"index": 0, "delta": {},
                                                                  "finish_reason": "tool_calls"}]}) + b"\n\n"
    data += b"data: [DONE]\n\n"
    for cut in range(len(data) + 1):
        stream = redaction.stream(None)
        out = stream.feed(data[:cut]) + stream.feed(data[cut:])
        arguments = "".join(call["function"].get("arguments") or ""
                            for line in out.split(b"\n\n") if line.startswith(b"data: {")
                            for choice in orjson.loads(line[6:])["choices"]
                            for call in choice["delta"].get("tool_calls") or ())
        assert orjson.loads(arguments) == {"to": EMAIL, "path": 'C:\\Users\\"ada'}, cut


def test_brackets_that_are_no_placeholder_pass_at_once():
    redaction, _ = _redacted(f"mail {EMAIL}")
    stream = redaction.stream(None)
    out = stream.feed(_events("a [note] and [x", finish=False)[:-len(b"data: [DONE]\n\n")])
    assert b"a [note] and [x" in out
    held = stream.feed(b'data: {"choices":[{"index":0,"delta":{"content":"see [EMAIL_"}}]}\n\n')
    assert b"[EMAIL_" not in held and b"see " in held


@pytest.mark.parametrize(("privacy", "message"), [
    ({"kinds": ["cards"]}, "unknown kind"),
    ({"patterns": {"badge": "("}}, 'pattern "badge"'),
    ({"terms": {"project": "Bluebird"}}, "privacy.terms.project: must be a list of words"),
    ({"redact": ["nope"]}, "privacy.redact: unknown kind 'nope'"),
    ({"min_confidence": 2}, "privacy.min_confidence"),
    ({"reddact": True}, "privacy.reddact: unknown key"),
])
def test_privacy_config_errors_name_the_key(privacy, message):
    with pytest.raises(ConfigError) as caught:
        parse_config({"model_list": [], "privacy": privacy})
    assert message in str(caught.value)


def test_trusted_marks_the_boundary():
    config = parse_config({"model_list": [
        {"model_name": "vllm", "litellm_params": {"model": "openai/llama", "api_base": "http://10.0.0.5/v1"},
         "model_info": {"trusted": True}},
        {"model_name": "ollama", "litellm_params": {"model": "ollama_chat/llama3", "api_base": "http://h:11434"},
         "model_info": {"trusted": False}},
        {"model_name": "ollama-local", "litellm_params": {"model": "ollama_chat/llama3", "api_base": "http://h:1"}},
    ], "privacy": {"redact": ["credential"]}})
    assert [d.local for d in config.deployments] == [True, False, True]
    assert config.privacy is not None and config.privacy.always == frozenset({"credential"})
