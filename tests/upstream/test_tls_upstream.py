"""Real providers are HTTPS: the lean upstream client over TLS, with certificate verification on."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, start_process

HELLO = [{"role": "user", "content": "Hello over TLS"}]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the simulator's key pair, and the CA file the gateway trusts)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


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
