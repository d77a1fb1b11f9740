"""Real providers are HTTPS: the lean upstream client over TLS, with certificate verification on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, start_process

HELLO = [{"role": "user", "content": "Hello over TLS"}]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is required to make the test certificate (apt-get install openssl)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(key),
         "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_simulator(certificate: tuple[Path, Path]):
    cert, key = certificate
    sim = start_process(["mmproxy.simulator", "--port", "0", "--api-key", UPSTREAM_KEY,
                         "--tls-cert", str(cert), "--tls-key", str(key)])
    assert sim.url.startswith("https://")
    yield sim
    sim.stop()


def _gateway(tmp_path: Path, sim: Process, ca_file: Path | None) -> Process:
    config = {
        "model_list": [
            {"model_name": "gpt", "litellm_params": {"model": "openai/sim-tls", "api_base": f"{sim.url}/v1",
                                                     "api_key": UPSTREAM_KEY}},
            {"model_name": "claude", "litellm_params": {"model": "anthropic/sim-tls-claude", "api_base": sim.url,
                                                        "api_key": UPSTREAM_KEY}},
        ],
        "general_settings": {"master_key": MASTER_KEY},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"SSL_CERT_FILE": str(ca_file)} if ca_file else {"SSL_CERT_FILE": "/nonexistent-ca.pem"}
    return start_process(["mmproxy", "serve", "--config", str(path), "--host", "127.0.0.1", "--port", "0"], env=env)


def test_https_upstream_plain_and_streaming(tls_simulator: Process, certificate, tmp_path):
    gw = _gateway(tmp_path, tls_simulator, certificate[0])
    try:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)
        for model in ("gpt", "claude"):
            assert client.chat.completions.create(model=model, messages=HELLO).choices[0].message.content
            chunks = list(client.chat.completions.create(model=model, messages=HELLO, stream=True))
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finally:
        gw.stop()


def test_untrusted_certificate_is_refused(tls_simulator: Process, tmp_path):
    gw = _gateway(tmp_path, tls_simulator, None)
    try:
        response = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "gpt", "messages": HELLO},
                              headers={"Authorization": f"Bearer {MASTER_KEY}"})
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_unreachable"
        assert UPSTREAM_KEY not in response.text
    finally:
        gw.stop()
