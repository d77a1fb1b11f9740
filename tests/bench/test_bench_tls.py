"""``mmproxy bench`` against an HTTPS endpoint, as providers are, with certificate verification on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import UPSTREAM_KEY, Process
from tests.upstream.test_tls_upstream import certificate, tls_simulator  # noqa: F401 (fixtures)


def _bench(url: str, ca_file: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mmproxy", "bench", url, "--model", "bench-tls", "-c", "2", "-n", "20",
         "--warmup", "0", "--timeout", "1", "--stream"],
        env={**os.environ, "SSL_CERT_FILE": ca_file, "MMPROXY_BENCH_API_KEY": UPSTREAM_KEY},
        capture_output=True, text=True, timeout=60)


def test_https_target(tls_simulator: Process, certificate: tuple[Path, Path]) -> None:  # noqa: F811
    proc = _bench(tls_simulator.url, str(certificate[0]))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("A c=2: 20 ok") and "TTFT ms" in proc.stdout


def test_untrusted_certificate_fails_with_the_reason(tls_simulator: Process) -> None:  # noqa: F811
    proc = _bench(tls_simulator.url, "/nonexistent-ca.pem")
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"cannot reach {tls_simulator.url}" in proc.stderr and "CERTIFICATE_VERIFY_FAILED" in proc.stderr
    assert UPSTREAM_KEY not in proc.stderr
