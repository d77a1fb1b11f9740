"""``mmproxy serve --access-log``: one line per API request on stdout, text or JSON, never a key."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, gateway_config, poll, start_gateway


def _line_of(gw: Process, request_id: str) -> str:
    line = poll(lambda: next((line for line in list(gw.output) if request_id in line), None),
                lambda found: found is not None, within=5)
    assert line is not None, f"no access log line for {request_id}"
    return line.strip()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_request_gets_one_line_without_keys(simulator: Process, tmp_path: Path, fmt: str):
    gw = start_gateway(tmp_path, gateway_config(simulator.url), "--access-log", fmt)
    try:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)
        ok = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "log me"}], max_tokens=7)
        bad = httpx.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                         json={"model": "no such model", "messages": [{"role": "user", "content": "x"}]})
        admin = httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"})
        virtual = admin.post("/key/generate", json={"key_alias": "team-bot"}).json()["key"]
        keyed = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=virtual, max_retries=0).embeddings.with_raw_response \
            .create(model="embed", input="hello")

        lines = {name: _line_of(gw, reply.headers["x-mmproxy-request-id"])
                 for name, reply in (("ok", ok), ("bad", bad), ("keyed", keyed))}
        if fmt == "json":
            entries = {name: orjson.loads(line) for name, line in lines.items()}
        else:
            entries = {name: dict(part.split("=", 1) for part in _split(line)) for name, line in lines.items()}
        first = entries["ok"]
        assert (str(first["status"]), first["endpoint"], first["model"]) == ("200", "chat", "gpt-4o")
        assert first["deployment"] == "frontier-1" and float(first["cost_usd"]) > 0
        assert int(first["tokens_out"]) == ok.parse().usage.completion_tokens
        assert str(entries["bad"]["status"]) == "400" and entries["bad"]["error"] == "model_not_found"
        assert entries["bad"]["model"].strip('"') == "no such model"
        assert entries["keyed"]["endpoint"] == "embeddings" and entries["keyed"]["key"] == "team-bot"
        everything = "".join(gw.output)
        assert MASTER_KEY not in everything and UPSTREAM_KEY not in everything and virtual not in everything
    finally:
        gw.stop()


def _split(line: str) -> list[str]:
    """``key=value`` pairs of a text line, where a value with spaces is JSON-quoted."""
    parts, current, quoted = [], "", False
    for char in line:
        if char == '"' and not current.endswith("\\"):
            quoted = not quoted
        if char == " " and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]
