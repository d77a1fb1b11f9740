"""Prove a built wheel works on its own: install it into a new venv and use it from outside the source tree.

    python3 scripts/check_wheel.py dist/mmproxy-*.whl

What a user of the wheel relies on, and a source checkout on sys.path would hide: the abi3 native module
loads, the package data (the demo config, the router model) is inside the wheel, and the ``mmproxy``
entry point serves. Steps: import ``mmproxy._native`` (and check it came from the venv), ``mmproxy check``
the bundled demo config, then ``mmproxy demo`` on free ports, one chat completion, SIGTERM, exit 0.
Exits non-zero with the failing step's output otherwise. Runs with the standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import venv
from pathlib import Path

DEMO_MASTER_KEY = "sk-mmproxy-demo"  # published in the README and printed by `mmproxy demo`


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"check_wheel: {' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def wait_until_live(base: str, demo: subprocess.Popen[bytes], seconds: float) -> bool:
    """Poll ``/health/liveliness`` until it answers, the demo exits, or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while demo.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/health/liveliness", timeout=2):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def chat_through_demo(mmproxy: Path, cwd: Path) -> str:
    """Start ``mmproxy demo`` on free ports, send one chat completion, stop it; return the answer."""
    port, sim_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    log = cwd / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen([str(mmproxy), "demo", "--port", str(port), "--sim-port", str(sim_port)], cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        if not wait_until_live(base, demo, 120):
            sys.exit("check_wheel: mmproxy demo did not start:\n" + log.read_text())
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello from the wheel check"}]}
        request = urllib.request.Request(
            f"{base}/v1/chat/completions", data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {DEMO_MASTER_KEY}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)["choices"][0]["message"]["content"]
        if not answer:
            sys.exit(f"check_wheel: empty chat answer from the demo: {answer!r}")
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            status = demo.wait(60)
        except subprocess.TimeoutExpired:
            demo.kill()
            status = demo.wait()
    if status != 0:
        sys.exit(f"check_wheel: mmproxy demo exited {status} on SIGTERM:\n" + log.read_text())
    return str(answer)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: check_wheel.py WHEEL")
    wheel = Path(sys.argv[1]).resolve()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mmproxy-wheel-") as scratch:
        root = Path(scratch)  # outside the source tree: nothing of the checkout can be imported from here
        venv.create(root / "venv", with_pip=True)
        python, mmproxy = root / "venv" / "bin" / "python", root / "venv" / "bin" / "mmproxy"
        run(str(python), "-m", "pip", "install", "--quiet", str(wheel), cwd=root)

        where = run(str(python), "-c", "import mmproxy, mmproxy._native as n; print(n.__file__)", cwd=root).strip()
        if not where.startswith(str(root / "venv")):
            sys.exit(f"check_wheel: mmproxy._native was imported from {where}, not from the wheel's venv")
        config = run(str(python), "-c", "from importlib import resources; "
                     "print(resources.files('mmproxy') / 'demo' / 'config.yaml')", cwd=root).strip()
        # The demo config reads its upstream URLs from the environment `mmproxy demo` sets.
        demo_env = {**os.environ, **{name: "http://127.0.0.1:9" for name in
                                     ("MMPROXY_DEMO_ROOT", "MMPROXY_DEMO_OPENAI_BASE", "MMPROXY_DEMO_GEMINI_BASE")}}
        print(run(str(mmproxy), "check", "--config", config, cwd=root, env=demo_env).strip())
        answer = chat_through_demo(mmproxy, root)
    print(f"check_wheel: {wheel.name} OK in {time.monotonic() - started:.0f} s (native module {where}; "
          f"demo answered {answer[:40]!r})")


if __name__ == "__main__":
    main()
