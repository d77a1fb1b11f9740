"""The response cache end to end: exact hits and misses, streams replayed, controls, isolation, Redis, semantic."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, SimControl, gateway_config, start_gateway
from tests.router.test_shared_redis import redis_url  # noqa: F401  (the module fixture: a real redis-server)

QUESTION = [{"role": "user", "content": "What is the boiling point of water at sea level?"}]


def _config(sim_url: str, **cache_params: Any) -> dict[str, Any]:
    config = gateway_config(sim_url)
    config["litellm_settings"] = {"cache": True, "cache_params": {"type": "local", **cache_params}}
    return config


@pytest.fixture(scope="module")
def gw(simulator: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = start_gateway(tmp_path_factory.mktemp("cache"), _config(simulator.url))
    yield process
    process.stop()


def _client(gw: Process, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)


def _ask(client: openai.OpenAI, **extra: Any) -> Any:
    params = {"model": "gpt-4o", "messages": QUESTION, **extra}
    return client.chat.completions.with_raw_response.create(**params)


def _upstream_calls(sim: SimControl) -> int:
    return sim.stats()["requests"]


def test_exact_hit_costs_nothing_and_skips_the_upstream(gw: Process, sim: SimControl):
    client = _client(gw)
    first = _ask(client, temperature=0, max_tokens=30)
    assert first.headers["x-mmproxy-cache"] == "miss"
    calls = _upstream_calls(sim)
    second = _ask(client, temperature=0, max_tokens=30)
    assert second.headers["x-mmproxy-cache"] == "hit"
    assert _upstream_calls(sim) == calls
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert second.headers["x-mmproxy-cost-usd"] == "0"
    row = httpx.get(f"{gw.url}/spend/logs", params={"request_id": second.headers["x-mmproxy-request-id"]},
                    headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()[0]
    assert row["cache"] == "hit" and row["cost_usd"] == 0
    assert row["saved_usd"] == pytest.approx(float(first.headers["x-mmproxy-cost-usd"]), rel=1e-9)
    savings = httpx.get(f"{gw.url}/spend/report", params={"group_by": "cache"},
                        headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()["savings"]["exact"]
    assert savings["requests"] >= 1 and savings["usd"] >= row["saved_usd"] and savings["tokens"] > 0


@pytest.mark.parametrize("change", [
    {"messages": [{"role": "user", "content": "What is the boiling point of water on Everest?"}]},
    {"max_tokens": 31},
    {"temperature": 0, "seed": 7},
    {"model": "mini"},
    {"response_format": {"type": "json_object"}},
    {"stop": ["."]},
])
def test_fields_that_change_the_answer_miss(gw: Process, sim: SimControl, change: dict):
    client = _client(gw)
    base = {"max_tokens": 30, "temperature": 0}
    _ask(client, **base, extra_body={"cache": {"namespace": f"fields-{sorted(change)}"}})
    params = {"model": "gpt-4o", "messages": QUESTION, **base, **change,
              "extra_body": {"cache": {"namespace": f"fields-{sorted(change)}"}}}
    assert client.chat.completions.with_raw_response.create(**params).headers["x-mmproxy-cache"] == "miss"


@pytest.mark.parametrize("same", [{"user": "someone-else"}, {"metadata": {"trace": "x"}}])
def test_fields_that_cannot_change_the_answer_hit(gw: Process, sim: SimControl, same: dict):
    client = _client(gw)
    namespace = {"cache": {"namespace": f"same-{sorted(same)}"}}
    _ask(client, max_tokens=20, extra_body=namespace)
    reply = _ask(client, max_tokens=20, extra_body={**namespace, **same})
    assert reply.headers["x-mmproxy-cache"] == "hit"


def test_stream_is_replayed_as_a_stream(gw: Process, sim: SimControl):
    client = _client(gw)
    kwargs = {"stream": True, "stream_options": {"include_usage": True}, "max_tokens": 25,
              "extra_body": {"cache": {"namespace": "stream"}}}
    first = _ask(client, **kwargs)
    first_chunks = list(first.parse())
    calls = _upstream_calls(sim)
    second = _ask(client, **kwargs)
    assert second.headers["x-mmproxy-cache"] == "hit" and second.headers["content-type"] == "text/event-stream"
    chunks = list(second.parse())
    assert _upstream_calls(sim) == calls
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(c.choices[0].delta.content or "" for c in first_chunks if c.choices)
    assert chunks[-1].usage.completion_tokens == first_chunks[-1].usage.completion_tokens
    assert chunks[-1].model_extra["x_mmproxy_cost_usd"] == 0
    # A plain (non-stream) request of the same question is a different entry: the shapes differ.
    assert _ask(client, max_tokens=25, extra_body={"cache": {"namespace": "stream"}}).headers[
        "x-mmproxy-cache"] == "miss"


def test_cut_stream_is_not_cached(gw: Process, sim: SimControl):
    client = _client(gw)
    kwargs = {"model": "flaky", "messages": QUESTION, "stream": True, "extra_body": {"cache": {"namespace": "cut"}}}
    sim.fault("sim-flaky", "cut", cut_after=4)
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(**kwargs))
    reply = client.chat.completions.with_raw_response.create(**kwargs)
    list(reply.parse())
    assert reply.headers["x-mmproxy-cache"] == "miss"


def test_per_request_controls(gw: Process, sim: SimControl):
    client = _client(gw)
    ns = {"namespace": "controls"}
    _ask(client, extra_body={"cache": ns})
    refreshed = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=QUESTION, extra_body={"cache": ns}, extra_headers={"Cache-Control": "no-cache"})
    assert refreshed.headers["x-mmproxy-cache"] == "bypass"
    assert "cache" not in sim.last()["body"]  # the control field never reaches the upstream
    assert _ask(client, extra_body={"cache": {**ns, "no-cache": True}}).headers["x-mmproxy-cache"] == "bypass"
    assert _ask(client, extra_body={"cache": ns}).headers["x-mmproxy-cache"] == "hit"

    unstored = {"namespace": "controls-no-store"}
    _ask(client, extra_body={"cache": {**unstored, "no-store": True}})
    assert _ask(client, extra_body={"cache": unstored}).headers["x-mmproxy-cache"] == "miss"

    short = {"namespace": "controls-ttl", "ttl": 1}
    _ask(client, extra_body={"cache": short})
    assert _ask(client, extra_body={"cache": short}).headers["x-mmproxy-cache"] == "hit"
    time.sleep(1.2)
    assert _ask(client, extra_body={"cache": short}).headers["x-mmproxy-cache"] == "miss"

    with pytest.raises(openai.BadRequestError, match=r"cache\.ttl"):
        _ask(client, extra_body={"cache": {"ttl": "forever"}})


SAMPLED = [{"temperature": 0.7}, {"top_p": 0.5}, {"n": 2}, {"tools": [
    {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]}]


@pytest.mark.parametrize("params", SAMPLED)
def test_sampled_requests_are_cached_as_litellm_caches_them(gw: Process, sim: SimControl, params: dict):
    client = _client(gw)
    _ask(client, **params)
    assert _ask(client, **params).headers["x-mmproxy-cache"] == "hit"


def test_the_stricter_rule_answers_sampled_requests_fresh(simulator: Process, tmp_path: Path, sim: SimControl):
    gw = start_gateway(tmp_path, _config(simulator.url, cache_sampled=False, cache_n=False, cache_tools=False))
    try:
        client = _client(gw)
        for params in SAMPLED:
            _ask(client, **params)
            assert _ask(client, **params).headers["x-mmproxy-cache"] == "bypass", params
        _ask(client, temperature=0)
        assert _ask(client, temperature=0).headers["x-mmproxy-cache"] == "hit"
    finally:
        gw.stop()


def test_entries_are_isolated_per_key_and_shared_within_a_team(gw: Process, sim: SimControl):
    admin = httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"})
    admin.post("/team/new", json={"team_id": "red"}).raise_for_status()
    alice = admin.post("/key/generate", json={"team_id": "red"}).json()["key"]
    bob = admin.post("/key/generate", json={"team_id": "red"}).json()["key"]
    eve = admin.post("/key/generate", json={}).json()["key"]
    ns = {"cache": {"namespace": "isolation"}}
    _ask(_client(gw, alice), extra_body=ns)
    assert _ask(_client(gw, bob), extra_body=ns).headers["x-mmproxy-cache"] == "hit"  # same team
    assert _ask(_client(gw, eve), extra_body=ns).headers["x-mmproxy-cache"] == "miss"
    assert _ask(_client(gw), extra_body=ns).headers["x-mmproxy-cache"] == "miss"  # the master key's own


def test_redis_backend_is_shared_by_two_instances(simulator: Process, tmp_path: Path, redis_url: str,  # noqa: F811
                                                   sim: SimControl):
    config = _config(simulator.url, type="redis", url=redis_url, shared=True)
    one = start_gateway(tmp_path, config)
    (tmp_path / "two").mkdir()
    two = start_gateway(tmp_path / "two", config)
    try:
        _ask(_client(one), max_tokens=12)
        calls = _upstream_calls(sim)
        reply = _ask(_client(two), max_tokens=12)
        assert reply.headers["x-mmproxy-cache"] == "hit" and _upstream_calls(sim) == calls
    finally:
        one.stop()
        two.stop()


def _until_semantic_hit(gw: Process, messages: list[dict[str, str]], within: float = 10.0) -> Any:
    """Ask (without storing) until the answer is a semantic hit or ``within`` seconds pass; the last reply."""
    deadline = time.monotonic() + within
    while True:
        reply = _client(gw).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=messages, extra_body={"cache": {"no-store": True}})
        if reply.headers["x-mmproxy-cache"] == "semantic-hit" or time.monotonic() > deadline:
            return reply
        time.sleep(0.2)


def test_semantic_entries_are_shared_through_redis(simulator: Process, tmp_path: Path, redis_url: str,  # noqa: F811
                                                   sim: SimControl):
    # Each instance searches its own index; the entries travel through a Redis stream, answers through the store.
    config = _config(simulator.url, type="redis-semantic", url=redis_url, shared=True, embedding_model="embed",
                     similarity_threshold=0.85, namespace=f"feed-{time.time_ns()}")
    one = start_gateway(tmp_path, config)
    (tmp_path / "two").mkdir()
    two = start_gateway(tmp_path / "two", config)
    late = None
    try:
        asked = _client(one).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "How do I reverse a list in Python?"}])
        assert asked.headers["x-mmproxy-cache"] == "miss"
        near = [{"role": "user", "content": "how do I reverse a python list"}]
        reply = _until_semantic_hit(two, near)  # the other instance reads the stream every half second
        assert reply.headers["x-mmproxy-cache"] == "semantic-hit"
        assert reply.parse().choices[0].message.content == asked.parse().choices[0].message.content
        # An instance started later rebuilds its index from Redis.
        (tmp_path / "late").mkdir()
        late = start_gateway(tmp_path / "late", config)
        assert _until_semantic_hit(late, near).headers["x-mmproxy-cache"] == "semantic-hit"
        # Near misses stay misses on every instance.
        assert _client(two).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "How do I sort a list in Python?"}],
        ).headers["x-mmproxy-cache"] == "miss"
    finally:
        for gw in (one, two, late):
            if gw is not None:
                gw.stop()


def test_semantic_hits_with_an_embedding_deployment(simulator: Process, tmp_path: Path, sim: SimControl):
    # The simulator's embeddings are bags of words: rephrasings that keep the words score high.
    gw = start_gateway(tmp_path, _config(simulator.url, type="semantic", embedding_model="embed",
                                         similarity_threshold=0.85))
    try:
        client = _client(gw)
        first = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "How do I reverse a list in Python?"}])
        assert first.headers["x-mmproxy-cache"] == "miss"
        assert any(r["path"] == "/v1/embeddings" for r in sim.requests(5))
        near = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "how do I reverse a python list"}])
        assert near.headers["x-mmproxy-cache"] == "semantic-hit"
        assert float(near.headers["x-mmproxy-cache-similarity"]) >= 0.85
        assert near.parse().choices[0].message.content == first.parse().choices[0].message.content
        other = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "What is the capital of France?"}])
        assert other.headers["x-mmproxy-cache"] == "miss"
        # Same question after a different conversation: never the same answer.
        history = [{"role": "user", "content": "We are talking about Rust."},
                   {"role": "assistant", "content": "Sure."},
                   {"role": "user", "content": "how do I reverse a python list"}]
        assert client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=history).headers["x-mmproxy-cache"] == "miss"
        # The exact cache answers first: no embedding call for a repeat.
        before = [r for r in sim.requests(50) if r["path"] == "/v1/embeddings"]
        assert client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "How do I reverse a list in Python?"}]
        ).headers["x-mmproxy-cache"] == "hit"
        assert [r for r in sim.requests(50) if r["path"] == "/v1/embeddings"] == before
        # The Messages API has its own entries (its answers have its shape), semantic ones included.
        claude = _claude(gw)
        asked = claude.messages.with_raw_response.create(
            model="claude", max_tokens=50, messages=[{"role": "user", "content": "How do I reverse a list in Python?"}])
        assert asked.headers["x-mmproxy-cache"] == "miss"
        blocks = [{"type": "text", "text": "how do I reverse a python list"}]
        near_message = claude.messages.with_raw_response.create(
            model="claude", max_tokens=50, messages=[{"role": "user", "content": blocks}])
        assert near_message.headers["x-mmproxy-cache"] == "semantic-hit"
        assert near_message.parse().content[0].text == asked.parse().content[0].text
        # So does the Responses API (its input read as the chat turn it becomes).
        responded = client.responses.with_raw_response.create(model="gpt-4o",
                                                              input="How do I reverse a list in Python?")
        assert responded.headers["x-mmproxy-cache"] == "miss"
        near_response = client.responses.with_raw_response.create(model="gpt-4o",
                                                                  input="how do I reverse a python list")
        assert near_response.headers["x-mmproxy-cache"] == "semantic-hit"
        assert near_response.parse().output_text == responded.parse().output_text
    finally:
        gw.stop()


def test_semantic_cache_with_the_local_embedder_rejects_near_misses(simulator: Process, tmp_path: Path,
                                                                    redis_url: str, sim: SimControl):  # noqa: F811
    # Answers in Redis and the index on disk: both survive a restart of the gateway.
    config = _config(simulator.url, type="semantic", url=redis_url, namespace="local-embedder",
                     semantic_path=str(tmp_path / "index"))
    gw = start_gateway(tmp_path, config)
    try:
        client = _client(gw)

        def ask(text: str) -> str:
            return client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": text}]).headers["x-mmproxy-cache"]

        assert ask("How do I reverse a list in Python?") == "miss"
        assert ask("What's the way to reverse a Python list?") == "semantic-hit"
        assert ask("How do I reverse a string in Python?") == "miss"
        assert ask("Convert 100 degrees Fahrenheit to Celsius.") == "miss"
        assert ask("Convert 100 degrees Celsius to Fahrenheit.") == "miss"  # swapped direction: a near miss
    finally:
        gw.stop()
    again = start_gateway(tmp_path, config)
    try:
        reply = _client(again).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Show me how to reverse a list in Python."}])
        assert reply.headers["x-mmproxy-cache"] == "semantic-hit"
    finally:
        again.stop()


def test_upstream_key_never_in_cache_or_errors(gw: Process):
    body = httpx.get(f"{gw.url}/metrics").text
    assert UPSTREAM_KEY not in body


def _claude(gw: Process) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0)


@pytest.mark.parametrize("model", ["claude", "gpt-4o"])  # passed through to Anthropic, and translated
def test_messages_api_is_cached(gw: Process, sim: SimControl, model: str):
    claude = _claude(gw)
    params = {"model": model, "max_tokens": 40, "system": "Be brief.", "messages": QUESTION,
              "extra_body": {"cache": {"namespace": f"messages-{model}"}}}
    first = claude.messages.with_raw_response.create(**params)
    assert first.headers["x-mmproxy-cache"] == "miss"
    assert "cache" not in sim.last()["body"]  # the gateway's control field never reaches the upstream
    calls = _upstream_calls(sim)
    second = claude.messages.with_raw_response.create(**params)
    assert second.headers["x-mmproxy-cache"] == "hit" and second.headers["x-mmproxy-cost-usd"] == "0"
    assert _upstream_calls(sim) == calls
    assert second.parse().content[0].text == first.parse().content[0].text
    assert second.parse().type == "message"
    # Another system prompt is another question.
    other = claude.messages.with_raw_response.create(**{**params, "system": "Be thorough."})
    assert other.headers["x-mmproxy-cache"] == "miss"
    # The same question on the OpenAI endpoint wants OpenAI's shape: never the Messages answer.
    reply = _ask(_client(gw), max_tokens=40, extra_body={"cache": {"namespace": f"messages-{model}"}})
    assert reply.headers["x-mmproxy-cache"] == "miss" and reply.parse().choices[0].message.content


def test_messages_stream_is_replayed_as_a_stream(gw: Process, sim: SimControl):
    claude = _claude(gw)
    params = {"model": "claude", "max_tokens": 30, "messages": QUESTION,
              "extra_body": {"cache": {"namespace": "messages-stream"}}}
    with claude.messages.stream(**params) as stream:
        first_events = [event.type for event in stream]
        first = stream.get_final_message()
    calls = _upstream_calls(sim)
    with claude.messages.stream(**params) as stream:
        events = [event.type for event in stream]
        again = stream.get_final_message()
        assert stream.response.headers["x-mmproxy-cache"] == "hit"
    assert _upstream_calls(sim) == calls
    assert events == first_events and events[0] == "message_start" and events[-1] == "message_stop"
    assert again.content[0].text == first.content[0].text
    assert again.usage.output_tokens == first.usage.output_tokens


def test_embeddings_are_cached(gw: Process, sim: SimControl):
    client = _client(gw)
    inputs = ["boiling point of water", "freezing point of water"]
    ns = {"cache": {"namespace": "embeddings"}}
    first = client.embeddings.with_raw_response.create(model="embed", input=inputs, extra_body=ns)
    assert first.headers["x-mmproxy-cache"] == "miss"
    assert "cache" not in sim.last()["body"]
    calls = _upstream_calls(sim)
    second = client.embeddings.with_raw_response.create(model="embed", input=inputs, extra_body=ns)
    assert second.headers["x-mmproxy-cache"] == "hit" and second.headers["x-mmproxy-cost-usd"] == "0"
    assert _upstream_calls(sim) == calls
    assert [d.embedding for d in second.parse().data] == [d.embedding for d in first.parse().data]
    # Other inputs, or the same in another order, are other requests.
    swapped = client.embeddings.with_raw_response.create(model="embed", input=inputs[::-1], extra_body=ns)
    assert swapped.headers["x-mmproxy-cache"] == "miss"
    assert _upstream_calls(sim) == calls + 1


def test_supported_call_types_limit_what_is_cached(simulator: Process, tmp_path: Path, sim: SimControl):
    gw = start_gateway(tmp_path, _config(simulator.url, supported_call_types=["acompletion"]))
    try:
        client = _client(gw)
        for _ in range(2):
            reply = client.embeddings.with_raw_response.create(model="embed", input=["salt"])
            assert reply.headers["x-mmproxy-cache"] == "bypass"
        _ask(client, max_tokens=9)
        assert _ask(client, max_tokens=9).headers["x-mmproxy-cache"] == "hit"
    finally:
        gw.stop()


def test_responses_api_is_cached_exactly(gw: Process, sim: SimControl):
    client = _client(gw)
    params = {"model": "gpt-4o", "input": "What is the boiling point of water?", "max_output_tokens": 20,
              "extra_body": {"cache": {"namespace": "responses"}}}
    first = client.responses.with_raw_response.create(**params)
    assert first.headers["x-mmproxy-cache"] == "miss"
    calls = _upstream_calls(sim)
    second = client.responses.with_raw_response.create(**params)
    assert second.headers["x-mmproxy-cache"] == "hit" and _upstream_calls(sim) == calls
    assert second.parse().output_text == first.parse().output_text
    with client.responses.stream(**params) as stream:  # a stream is another entry, kept as it is relayed
        streamed = stream.get_final_response().output_text
    with client.responses.stream(**params) as stream:
        assert stream.get_final_response().output_text == streamed
    assert _upstream_calls(sim) == calls + 1
