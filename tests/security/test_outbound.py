"""The gateway fetches nothing on a caller's behalf: image URLs go to the provider as URLs (or are refused, for
Ollama, which takes images inline only), and ``api_base``, ``base_url``, ``api_key``, ``extra_headers`` or
``user_config`` in a request are refused with a 400 before anything goes upstream. A listener named in all of
them never sees a connection."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, SimControl, gateway_config, poll, start_gateway
from tests.security.conftest import Listener


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gw(simulator: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    config = gateway_config(simulator.url)
    config["model_list"] += [
        {"model_name": "gem", "litellm_params": {"model": "gemini/gemini-2.5-flash", "api_key": UPSTREAM_KEY,
                                                 "api_base": f"{simulator.url}/v1beta"}},
        {"model_name": "llama", "litellm_params": {"model": "ollama_chat/llama3", "api_base": simulator.url}},
    ]
    process = start_gateway(tmp_path_factory.mktemp("outbound"), config)
    yield process
    process.stop()


OVERRIDES: dict[str, Any] = {"api_base": "{url}", "base_url": "{url}/v1", "api_key": "sk-callers-own",
                             "extra_headers": {"Host": "{url}"},
                             "user_config": {"model_list": [{"model_name": "gpt-4o", "litellm_params": {
                                 "model": "openai/gpt-4o", "api_base": "{url}"}}]}}


def _overrides(url: str) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(OVERRIDES).replace(b"{url}", url.encode()))


def test_a_request_cannot_choose_its_upstream_key_or_headers(gw: Process, sim: SimControl, listener: Listener):
    url = f"http://127.0.0.1:{listener.port}"
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)
    claude = anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0)
    before = sim.stats()["requests"]
    for name, value in _overrides(url).items():
        for model in ("gpt-4o", "claude"):
            with pytest.raises(openai.BadRequestError) as refused:
                client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                               extra_body={name: value})
            assert refused.value.code == "upstream_override_not_allowed" and refused.value.param == name
        with pytest.raises(anthropic.BadRequestError) as refused_messages:
            claude.messages.create(model="claude", max_tokens=5, messages=[{"role": "user", "content": "hi"}],
                                   extra_body={name: value})
        assert name in refused_messages.value.message
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model="embed", input="hi", extra_body={name: value})
        line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], name: value}}
        with pytest.raises(openai.BadRequestError) as refused_line:
            file_id = client.files.create(file=("in.jsonl", io.BytesIO(orjson.dumps(line))), purpose="batch").id
            client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
        assert refused_line.value.param == f"input_file_id (line 1: body.{name})"
        with pytest.raises(anthropic.BadRequestError):
            claude.messages.batches.create(requests=[{"custom_id": "a", "params": {
                "model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], name: value}}])
    assert sim.stats()["requests"] == before  # refused before anything went upstream
    time.sleep(0.2)
    assert listener.connections == 0


def test_media_urls_go_to_the_provider_and_are_never_fetched_by_the_gateway(gw: Process, sim: SimControl,
                                                                            listener: Listener):
    url = f"http://127.0.0.1:{listener.port}"
    image = {"type": "image_url", "image_url": {"url": f"{url}/cat.png"}}
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)
    for model in ("gpt-4o", "claude", "gem"):
        reply = client.chat.completions.create(model=model, messages=[
            {"role": "user", "content": [{"type": "text", "text": "what is this?"}, image]}])
        assert reply.choices[0].message.content
        assert f"{url}/cat.png" in orjson.dumps(sim.last()["body"]).decode()  # the provider fetches it, if it may
    with pytest.raises(openai.BadRequestError) as refused:  # Ollama takes images inline only
        client.chat.completions.create(model="llama", messages=[{"role": "user", "content": [image]}])
    assert "data URL" in refused.value.message

    claude = anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0)
    answer = claude.messages.create(model="claude", max_tokens=20, messages=[
        {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": f"{url}/dog.jpg"}},
                                     {"type": "text", "text": "and this?"}]}])
    assert answer.content
    client.responses.create(model="gpt-4o", input=[{"role": "user", "content": [
        {"type": "input_image", "image_url": f"{url}/bird.png", "detail": "auto"}]}])
    assert f"{url}/bird.png" in orjson.dumps(sim.last()["body"]).decode()

    time.sleep(0.3)  # a connection attempted in the background would have landed by now
    assert listener.connections == 0
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5):
        pass
    assert poll(lambda: listener.connections, lambda n: n == 1) == 1  # what does reach the listener is counted
