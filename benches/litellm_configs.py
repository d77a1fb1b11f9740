"""Do LiteLLM's own example configs start unchanged? ``mmproxy check`` and ``mmproxy serve`` on each one.

Why: a LiteLLM ``config.yaml`` must run unchanged (issue 16); the configs LiteLLM ships in its package are the
widest sample of what such files hold. Each ``*.yaml`` in the folder is checked, then served on a free port until
``/health/liveliness`` answers, then stopped. Every ``os.environ/VAR`` it names is set to a dummy shaped for the
key that reads it (a URL for ``api_base``, a port number for ``port``, ...), as a real deployment's environment
would be. A config naming a ``database_url`` is served only when ``--database-url`` is given: its database is
replaced by that one (in a copy of the file; the copy is the only change made). Nothing calls a model.

The default folder is ``litellm/proxy/example_config_yaml`` of an importable ``litellm``; without one, download
the wheel and pass the folder (see ``benches/RESULTS.md``, "LiteLLM example configs")::

    python benches/litellm_configs.py [CONFIG_DIR] [--database-url postgresql://...] [--timeout 30]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Service, free_port

_ENV_REF = re.compile(r"os\.environ/([A-Za-z_][A-Za-z0-9_]*)")
_DUMMY_URL = "http://127.0.0.1:9/v1"  # discard port: nothing is called


@dataclass
class Outcome:
    config: str
    check: bool = False
    starts: bool | None = None  # None: not served (needs a database none was given for)
    warnings: list[str] = field(default_factory=list)
    error: str = ""


def default_folder() -> Path | None:
    spec = importlib.util.find_spec("litellm")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "proxy" / "example_config_yaml"


def references(node: Any, key: str = "") -> dict[str, str]:
    """Every ``os.environ/VAR`` in a parsed config, by variable, with the key that reads it."""
    found: dict[str, str] = {}
    if isinstance(node, dict):
        for name, value in node.items():
            found.update(references(value, str(name)))
    elif isinstance(node, list):
        for item in node:
            found.update(references(item, key))
    elif isinstance(node, str):
        found.update((match, key) for match in _ENV_REF.findall(node))
    return found


def dummy(key: str, database_url: str | None) -> str:
    """A value of the shape ``key`` expects."""
    key = key.lower()
    if key == "database_url":
        return database_url or "postgresql://unset@127.0.0.1:9/unset"
    if key.endswith("port"):
        return "6379"
    if key.endswith("host"):
        return "127.0.0.1"
    if any(part in key for part in ("url", "base", "endpoint", "target")):
        return _DUMMY_URL
    return f"dummy-{key or 'value'}"


def run(folder: Path, database_url: str | None, timeout: float) -> list[Outcome]:
    outcomes = []
    for path in sorted(folder.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        env = {**os.environ, **{var: dummy(key, database_url) for var, key in references(raw).items()}}
        outcome = Outcome(path.name)
        outcomes.append(outcome)
        with tempfile.TemporaryDirectory() as workdir:
            config = path
            general = raw.get("general_settings") or {}
            needs_database = general.get("database_url") is not None
            if needs_database and database_url is not None:
                config = Path(workdir) / path.name  # the one change: the database is the one given
                config.write_text(yaml.safe_dump({**raw, "general_settings": {**general,
                                                                              "database_url": database_url}}))
            check = subprocess.run([sys.executable, "-m", "mmproxy", "check", "--config", str(config)], env=env,
                                   capture_output=True, text=True, cwd=workdir, timeout=timeout)
            outcome.warnings = [line.removeprefix("mmproxy: warning: ") for line in check.stderr.splitlines()
                                if line.startswith("mmproxy: warning: ")]
            outcome.check = check.returncode == 0
            if not outcome.check:
                outcome.error = check.stderr.strip().splitlines()[-1] if check.stderr.strip() else "check failed"
                outcome.starts = False
                continue
            if needs_database and database_url is None:
                outcome.error = "names a database_url: not served without --database-url"
                continue
            outcome.starts, outcome.error = serve(config, env, workdir, timeout)
    return outcomes


def serve(config: Path, env: dict[str, str], workdir: str, timeout: float) -> tuple[bool, str]:
    """Whether ``mmproxy serve`` comes up and answers its liveness probe; its last log line when it does not."""
    port = free_port()
    argv = [sys.executable, "-m", "mmproxy", "serve", "--config", str(config), "--host", "127.0.0.1",
            "--port", str(port)]
    service = Service("mmproxy", argv, port=port, core=None, env=env, logdir=Path(workdir))
    try:
        service.wait_ready(f"http://127.0.0.1:{port}/health/liveliness", timeout)
        return True, ""
    except RuntimeError:
        return False, service.log_tail(1)
    finally:
        service.stop()


def table(outcomes: list[Outcome]) -> str:
    rows = ["| config | check | starts | warnings | error |", "|---|---|---|---|---|"]
    for o in outcomes:
        starts = "not run" if o.starts is None else "yes" if o.starts else "no"
        rows.append(f"| {o.config} | {'ok' if o.check else 'no'} | {starts} | {len(o.warnings)} | {o.error} |")
    started = sum(1 for o in outcomes if o.starts)
    rows.append("")
    rows.append(f"{started} of {len(outcomes)} start.")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, help="folder of LiteLLM config YAMLs (default: "
                        "litellm/proxy/example_config_yaml of an importable litellm)")
    parser.add_argument("--database-url", help="a PostgreSQL URL for the configs that name a database_url")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a config has to start (default 30)")
    parser.add_argument("--warnings", action="store_true", help="also list every config's warnings")
    args = parser.parse_args()
    folder = args.folder or default_folder()
    if folder is None or not folder.is_dir():
        parser.error("no LiteLLM config folder: pass one, or make litellm importable")
    outcomes = run(folder, args.database_url, args.timeout)
    print(table(outcomes))
    if args.warnings:
        for outcome in outcomes:
            print(f"\n{outcome.config}:")
            for warning in outcome.warnings:
                print(f"  - {warning}")
    sys.exit(0 if all(o.starts for o in outcomes) else 1)


if __name__ == "__main__":
    main()
