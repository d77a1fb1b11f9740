"""Gateway benchmark: the simulator direct vs through mmproxy vs through LiteLLM, in one run.

Why this shape: the figures that matter for a gateway are what it *adds* -- latency over talking
to the upstream directly, and CPU per request -- so every target is driven by the same load
generator against the same upstream simulator, with the gateway alone on core 0 and the
simulator plus load generator on core 1.  Gateway CPU comes from /proc (utime+stime of its whole
process tree) read at the exact edges of each measured window.  Each figure is the median of
``--rounds`` runs.  See benches/README.md for the method and what each column means.

    python benches/run.py                      # full comparison, writes benches/out + RESULTS.md
    python benches/run.py --smoke              # a few seconds, direct + mmproxy, writes nothing
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from mmproxy.bench.loadgen import LoadGen, Request, chat_request, run_sync

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ROOT / "benches"
OUT_DIR = BENCHES / "out"
RESULTS_MD = BENCHES / "RESULTS.md"
LITELLM_VENV = BENCHES / ".litellm-venv"
MASTER_KEY = "sk-bench-master"
GATEWAY_CORE, CLIENT_CORE = 0, 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_NAMES = ("direct", "mmproxy", "litellm")
SCENARIO_NAMES = ("nonstream", "stream20", "relay", "memory")
RELAY_DELAY_MS = 2.0
RELAY_SHORT, RELAY_LONG = 20, 100
AB_FIELDS = ("gateway_cpu_us_per_req", "p50_ms", "p99_ms")  # compared baseline -> current in an A/B run
FOREIGN_LOAD_LIMIT = 0.10  # share of a core used by other processes above which a window is flagged
# Targets from the issue, shown beside the measured figures.
GOALS = {
    "cpu_nonstream_c64": "≤ 100 µs",
    "cpu_nonstream_c1": "≤ 200 µs",
    "cpu_stream20": "≤ 150 µs",
    "cpu_event": "≤ 5 µs",
    "added_p50_c1": "≤ +0.25 ms",
    "per_cpu_ratio": "≥ 100x",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- /proc accounting ---------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        text = f.read()
    return text[text.rindex(b")") + 2 :].decode().split()


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (gateway workers count towards the gateway's cost)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                children[int(_stat_fields(int(entry))[1])].append(int(entry))
    tree, i = [root], 0
    while i < len(tree):
        tree += children.get(tree[i], [])
        i += 1
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime+stime of the given processes (all their threads), in seconds."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = _stat_fields(pid)
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def core_busy_seconds() -> dict[int, float]:
    """Non-idle time of each core from /proc/stat: to spot other load sharing our cores."""
    out: dict[int, float] = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                ticks = [int(v) for v in vals[:8]]  # user nice system idle iowait irq softirq steal
                out[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK
    return out


def memory_mb(pids: Sequence[int]) -> tuple[float, float]:
    """(current RSS, peak RSS) summed over the processes, in MB, from VmRSS/VmHWM."""
    rss = hwm = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm += int(line.split()[1])
    return rss / 1024, hwm / 1024


# -- processes ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinning_available() -> bool:
    return (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


class Service:
    """A server started for the benchmark, in its own session so we stop exactly what we started."""

    def __init__(
        self, name: str, argv: list[str], *, port: int, core: int | None, env: dict[str, str], logdir: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.argv = (["taskset", "-c", str(core)] if core is not None else []) + argv
        self.log_path = logdir / f"{name}.log"
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(
                self.argv, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                cwd=cwd if cwd is not None else logdir,  # a gateway's SQLite ledger lands beside its log
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_ready(self, url: str, timeout: float) -> None:
        """Poll ``url`` until it answers 200; fail fast (with the log) if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.log_tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready at {url} after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for child processes: they run the installed mmproxy (its Rust core is built there).

    The benchmarked mmproxy gateways add the checkout they serve in front (mmproxy_env)."""
    env = dict(os.environ)
    env.update(extra or {})
    return env


# -- what we run --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimProfile:
    """A simulator instance; knobs are CLI defaults so the same request body works for all targets."""

    model: str
    chunks: int
    chunk_delay_ms: float = 0.0


PROFILES = {
    "fast": SimProfile("sim-fast", 20),
    "relay20": SimProfile("sim-relay20", RELAY_SHORT, RELAY_DELAY_MS),
    "relay100": SimProfile("sim-relay100", RELAY_LONG, RELAY_DELAY_MS),
}


@dataclass(frozen=True)
class Scenario:
    name: str
    profile: str
    concurrency: int
    stream: bool | None  # None: alternate non-stream and stream requests
    duration: float | None = None
    count: int | None = None


@dataclass
class Target:
    """Where the load goes: host/port plus the process tree whose CPU and memory we charge."""

    name: str
    port_for: Callable[[str], int]
    pids: list[int] = field(default_factory=list)
    service: Service | None = None
    info: dict[str, Any] = field(default_factory=dict)  # figures taken before the load (idle RSS, ...)


def gateway_config(sim_ports: dict[str, int]) -> dict[str, Any]:
    """LiteLLM-format config routing each simulator profile's model name to its simulator."""
    return {
        "model_list": [
            {
                "model_name": p.model,
                "litellm_params": {
                    "model": f"openai/{p.model}",
                    "api_base": f"http://127.0.0.1:{sim_ports[key]}/v1",
                    "api_key": "sk-simulator",
                },
            }
            for key, p in PROFILES.items()
        ],
        # Like for like: LiteLLM's proxy runs here without a database or a Prometheus callback, so mmproxy runs
        # without its spend ledger and metrics; benches/bench_accounting.py measures what those add.
        "general_settings": {"master_key": MASTER_KEY, "disable_spend_logs": True, "disable_metrics": True},
    }


def start_simulators(core: int | None, logdir: Path) -> dict[str, Service]:
    sims: dict[str, Service] = {}
    for key, prof in PROFILES.items():
        port = free_port()
        argv = [sys.executable, "-m", "mmproxy.simulator", "--host", "127.0.0.1", "--port", str(port)]
        # One token per content event; --record 0 keeps the simulator's per-request cost minimal.
        argv += ["--chunks", str(prof.chunks), "--tokens", str(prof.chunks), "--record", "0"]
        argv += ["--chunk-delay-ms", str(prof.chunk_delay_ms)]
        sims[key] = Service(f"sim-{key}", argv, port=port, core=core, env=python_env(), logdir=logdir)
    for svc in sims.values():
        svc.wait_ready(f"http://127.0.0.1:{svc.port}/v1/models", 30)
    return sims


def gateway_kind(name: str) -> str:
    """``mmproxy@<ref>`` is mmproxy built from another commit: it starts and is charged like ``mmproxy``."""
    return name.partition("@")[0]


def current_code() -> Path | None:
    """This checkout's python/ when its Rust core is built in place (an editable install, maturin develop), so
    the current mmproxy is this checkout whatever else the venv installed; None (the installed package) after a
    plain ``pip install .``, which builds the core into site-packages only."""
    package = ROOT / "python" / "mmproxy"
    return package.parent if any(package.glob("_native*.so")) else None


def mmproxy_env(name: str, code: Path | None, logdir: Path) -> dict[str, str]:
    """The environment in which ``python -m mmproxy`` imports the package under ``code`` (a checkout's python/;
    None: the installed package).

    The venv may hold an editable install of some other checkout, so without this an A/B could quietly
    compare a build with itself. Importing ``mmproxy._native`` here also fails fast on a checkout whose Rust
    core was not built, with the import error rather than a gateway that never gets ready.
    """
    if code is None:
        env = python_env()
    else:
        env = python_env({"PYTHONPATH": os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))})
    probe = subprocess.run(
        [sys.executable, "-c", "import mmproxy, mmproxy._native; print(mmproxy.__file__)"],
        env=env, cwd=logdir, capture_output=True, text=True,
    )
    if probe.returncode != 0:
        raise RuntimeError(f"{name}: cannot import mmproxy from {code}:\n{probe.stderr[-2000:]}")
    imported = Path(probe.stdout.strip()).resolve()
    if code is not None and not imported.is_relative_to(code.resolve()):
        raise RuntimeError(f"{name}: mmproxy resolves to {imported}, not to {code}")
    log(f"[{name}] serving the code in {imported.parent}")
    return env


def start_gateway(
    name: str, args: argparse.Namespace, config: Path, core: int | None, logdir: Path, code: dict[str, Path | None]
) -> Service:
    """Start gateway ``name``; an mmproxy target runs the code of ``code[name]`` (a checkout's python/)."""
    port = free_port()
    if gateway_kind(name) == "mmproxy":
        argv = [sys.executable, "-m", "mmproxy", "serve", "--config", str(config)]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(args.mmproxy_workers)]
        env = mmproxy_env(name, code[name], logdir)
        timeout = 60.0
    else:
        argv = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--num_workers", "1", "--telemetry", "False"]
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PYTHONPATH")}
        env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR"}
        timeout = 180.0
    svc = Service(name, argv, port=port, core=core, env=env, logdir=logdir)
    try:
        svc.wait_ready(f"http://127.0.0.1:{port}/health/readiness", timeout)
    except BaseException:
        svc.stop()
        raise
    return svc


def target_unavailable(name: str) -> str | None:
    """Why a target cannot run here, or None."""
    if name == "mmproxy":
        try:
            if importlib.util.find_spec("mmproxy.cli") is None:
                return "mmproxy.cli is not importable (mmproxy serve not built yet)"
        except ImportError as exc:
            return f"mmproxy is not importable: {exc}"
    if name == "litellm" and not (LITELLM_VENV / "bin" / "litellm").exists():
        return f"LiteLLM venv missing ({LITELLM_VENV}); run benches/setup_litellm.sh"
    return None


# -- measuring ----------------------------------------------------------------------------------
def measure_once(target: Target, scen: Scenario, sims: dict[str, Service], args: argparse.Namespace, pin: bool) -> dict:
    """One warm-up + measured window; load-generator figures plus the gateway's /proc deltas."""
    model = PROFILES[scen.profile].model
    if scen.stream is None:
        reqs = [
            chat_request(model, stream=False, api_key=MASTER_KEY),
            chat_request(model, stream=True, api_key=MASTER_KEY),
        ]
    else:
        reqs = [chat_request(model, stream=scen.stream, api_key=MASTER_KEY)]
    sim_pids = [sims[scen.profile].pid]
    snap: dict[str, float] = {}
    cores: dict[str, dict[int, float]] = {}

    def at_start() -> None:
        snap["gw"], snap["sim"] = cpu_seconds(target.pids), cpu_seconds(sim_pids)
        cores["start"] = core_busy_seconds()

    def at_end() -> None:
        snap["gw"], snap["sim"] = cpu_seconds(target.pids) - snap["gw"], cpu_seconds(sim_pids) - snap["sim"]
        cores["end"] = core_busy_seconds()

    gen = LoadGen(
        "127.0.0.1",
        target.port_for(scen.profile),
        reqs,
        concurrency=scen.concurrency,
        duration=scen.duration,
        count=scen.count,
        warmup=0.0 if scen.name == "memory" else args.warmup,
        timeout=args.timeout,
        on_measure_start=at_start,
        on_measure_end=at_end,
    )
    res = run_sync(gen).summary()
    done = res["requests"] + res["errors"]
    elapsed = res["elapsed_s"] or float("nan")
    res["sim_cpu_us_per_req"] = snap["sim"] / done * 1e6 if done else None
    res["client_core_util"] = (snap["sim"] + gen.result.loadgen_cpu_s) / elapsed
    # Busy time on our cores not explained by our processes: other load disturbing the figures.
    busy = {c: (cores["end"][c] - cores["start"][c]) / elapsed for c in cores["end"]}
    if pin:
        res["foreign_util_core0"] = max(0.0, busy[GATEWAY_CORE] - snap["gw"] / elapsed)
        res["foreign_util_core1"] = max(0.0, busy[CLIENT_CORE] - res["client_core_util"])
    if target.pids:
        rss, hwm = memory_mb(target.pids)
        res |= {
            "gateway_cpu_s": snap["gw"],
            "gateway_cpu_us_per_req": snap["gw"] / done * 1e6 if done else None,
            "gateway_core_util": snap["gw"] / elapsed,
            "rss_mb": rss,
            "peak_rss_mb": hwm,
        }
    return res


def median_of(rounds: list[dict]) -> dict:
    """Per-field median across rounds; error counts are summed, not medianed."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for r in rounds for k in r):
        vals = [r[key] for r in rounds if isinstance(r.get(key), (int, float)) and r[key] == r[key]]
        if key in ("errors", "warmup_errors"):
            out[key] = sum(r.get(key, 0) for r in rounds)
        elif key == "error_kinds":
            out[key] = dict(sum((Counter(r.get(key, {})) for r in rounds), Counter()))
        elif key == "error_sample":
            out[key] = next(r[key] for r in rounds if r.get(key))
        elif vals and not isinstance(vals[0], bool):
            out[key] = statistics.median(vals)
        else:
            out[key] = None
    return out


def describe(res: dict) -> str:
    parts = [f"{res['req_s']:9.0f} req/s", f"p50 {res['p50_ms']:7.2f} ms", f"p99 {res['p99_ms']:7.2f} ms"]
    if res.get("ttft_p50_ms") is not None:
        parts.append(f"ttft {res['ttft_p50_ms']:6.2f} ms")
    if res.get("gateway_cpu_us_per_req") is not None:
        parts.append(f"gw {res['gateway_cpu_us_per_req']:8.1f} µs/req ({res['gateway_core_util']:.0%} core)")
    parts.append(f"lg {res['loadgen_cpu_us_per_req'] or 0:5.1f} µs/req, core1 {res['client_core_util']:.0%}")
    foreign = max(res.get("foreign_util_core0", 0), res.get("foreign_util_core1", 0))
    if foreign > FOREIGN_LOAD_LIMIT:
        parts.append(f"OTHER LOAD {foreign:.0%} of a core")
    if res["errors"]:
        parts.append(f"ERRORS {res['errors']} {res['error_kinds']}")
    return ", ".join(parts)


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    out: list[Scenario] = []
    run_for = {"duration": args.duration} if args.requests is None else {"count": args.requests}
    for name, stream in (("nonstream", False), ("stream20", True)):
        if name in args.scenarios:
            out += [Scenario(name, "fast", c, stream, **run_for) for c in args.concurrency]
    if "relay" in args.scenarios:
        # Same request count for both so the CPU difference is the 80 extra relayed events.
        for key in ("relay20", "relay100"):
            out.append(Scenario(key, key, args.relay_concurrency, True, count=args.relay_requests))
    return out


def open_target(
    name: str, args: argparse.Namespace, sims: dict[str, Service], config: Path, logdir: Path, pin: bool,
    code: dict[str, Path | None],
) -> Target:
    """The simulators themselves for ``direct``, else a started gateway with its idle figures taken."""
    if name == "direct":
        return Target(name, lambda prof: sims[prof].port)
    log(f"[{name}] starting gateway")
    service = start_gateway(name, args, config, GATEWAY_CORE if pin else None, logdir, code)
    target = Target(name, lambda _prof: service.port, process_tree(service.pid), service)
    target.info["idle_rss_mb"], _ = memory_mb(target.pids)
    target.info["processes"] = len(target.pids)
    return target


def run_targets(
    names: Sequence[str], args: argparse.Namespace, sims: dict[str, Service], config: Path, logdir: Path,
    pin: bool, code: dict[str, Path | None], report: dict,
) -> None:
    """All scenarios x rounds (then the memory soak) against a group of targets, into ``report``.

    A group is one target, or the mmproxy builds of an A/B: their gateways run side by side (idle but for
    their turn, each alone on core 0 while measured) and every scenario of every round measures them back to
    back, in alternating order, so a slow spell of the shared machine hits both builds alike rather than
    whichever happened to run during it. A target that cannot run or start is reported; the rest are measured.
    """
    targets: list[Target] = []
    try:
        for name in names:
            why = target_unavailable(name)
            if why:
                log(f"[{name}] skipped: {why}")
                report["skipped"][name] = why
                continue
            try:
                targets.append(open_target(name, args, sims, config, logdir, pin, code))
            except RuntimeError as exc:  # a gateway that will not start: report it, measure the rest
                log(f"[{name}] FAILED: {exc}")
                report["failed"][name] = str(exc)
        runs: dict[str, dict[str, list[dict]]] = {t.name: defaultdict(list) for t in targets}
        for rnd in range(args.rounds):
            for scen in scenarios(args):
                key = f"{scen.name}@c{scen.concurrency}"
                for target in targets if rnd % 2 == 0 else targets[::-1]:
                    if target.service is not None:
                        target.pids = process_tree(target.service.pid)
                    res = measure_once(target, scen, sims, args, pin)
                    runs[target.name][key].append(res)
                    log(f"[{target.name}] {key:16} round {rnd + 1}: {describe(res)}")
        for target in targets:
            out: dict[str, Any] = {"target": target.name, **target.info, "scenarios": {}}
            for key, rounds in runs[target.name].items():
                scen_name, conc = key.split("@c")
                out["scenarios"][key] = {
                    "scenario": scen_name,
                    "concurrency": int(conc),
                    "median": median_of(rounds),
                    "rounds": rounds,
                }
            soak = target.service is not None and gateway_kind(target.name) in args.memory_targets
            if "memory" in args.scenarios and soak:
                out["memory"] = memory_soak(target, sims, args, pin)
            report["targets"][target.name] = out
    finally:
        for target in targets:
            if target.service is not None:
                target.service.stop()


def memory_soak(target: Target, sims: dict[str, Service], args: argparse.Namespace, pin: bool) -> dict:
    """RSS after N mixed requests and after N more: a leak shows as the second step growing too."""
    scen = Scenario("memory", "fast", args.memory_concurrency, None, count=args.memory_requests)
    steps = []
    for i in (1, 2):
        res = measure_once(target, scen, sims, args, pin)
        steps.append(res)
        log(f"[{target.name}] memory step {i}: {describe(res)}, RSS {res['rss_mb']:.1f} MB")
    return {
        "requests_per_step": args.memory_requests,
        "rss_after_1_mb": steps[0]["rss_mb"],
        "rss_after_2_mb": steps[1]["rss_mb"],
        "growth_mb": steps[1]["rss_mb"] - steps[0]["rss_mb"],
        "peak_rss_mb": steps[1]["peak_rss_mb"],
        "errors": steps[0]["errors"] + steps[1]["errors"],
        "steps": steps,
    }


# -- derived figures ----------------------------------------------------------------------------
def _m(report: dict, target: str, key: str, field_: str) -> float | None:
    t = report["targets"].get(target)
    if not t or key not in t["scenarios"]:
        return None
    return t["scenarios"][key]["median"].get(field_)


def derive(report: dict) -> None:
    """Added latency over direct, µs per relayed event, and mmproxy-vs-LiteLLM ratios."""
    for name, t in report["targets"].items():
        if name == "direct":
            continue
        for key, s in t["scenarios"].items():
            med = s["median"]
            for fld, added in (("p50_ms", "added_p50_ms"), ("ttft_p50_ms", "added_ttft_p50_ms")):
                base = _m(report, "direct", key, fld)
                med[added] = med[fld] - base if med.get(fld) is not None and base is not None else None
        c = report["config"]["relay_concurrency"]
        short = _m(report, name, f"relay20@c{c}", "gateway_cpu_us_per_req")
        long = _m(report, name, f"relay100@c{c}", "gateway_cpu_us_per_req")
        if short is not None and long is not None:
            t["us_per_event"] = (long - short) / (RELAY_LONG - RELAY_SHORT)
    ratios: dict[str, Any] = {}
    if "mmproxy" in report["targets"] and "litellm" in report["targets"]:
        for key in report["targets"]["mmproxy"]["scenarios"]:
            mm = _m(report, "mmproxy", key, "gateway_cpu_us_per_req")
            ll = _m(report, "litellm", key, "gateway_cpu_us_per_req")
            if mm and ll:
                ratios[key] = ll / mm  # requests per CPU-second, mmproxy ÷ LiteLLM
    report["per_cpu_second_ratio"] = ratios
    report["ab"] = ab_comparison(report)


def ab_comparison(report: dict) -> dict | None:
    """Current ÷ baseline for each of AB_FIELDS per scenario (above 1: the change costs more), or None.

    The ratio of medians is the figure; the CPU ratio of each round (both builds measured back to back) is
    kept beside it, so its spread shows how far the machine's noise lets a "+3%" be told apart from none.
    """
    base = report.get("baseline", {}).get("target")
    if base not in report["targets"] or "mmproxy" not in report["targets"]:
        return None
    cur, old = report["targets"]["mmproxy"]["scenarios"], report["targets"][base]["scenarios"]

    def ratio(new: float | None, was: float | None) -> float | None:
        return new / was if new and was else None

    scenarios_: dict[str, Any] = {}
    for key in (k for k in cur if k in old):
        entry: dict[str, Any] = {}
        for fld in AB_FIELDS:
            was, new = old[key]["median"].get(fld), cur[key]["median"].get(fld)
            entry[fld] = {"baseline": was, "current": new, "ratio": ratio(new, was)}
        # /proc counts CPU in clock ticks: one tick over a window's gateway CPU is the finest step a round sees.
        cpu_s = [cur[key]["median"].get("gateway_cpu_s"), old[key]["median"].get("gateway_cpu_s")]
        entry["cpu_tick_resolution"] = 1 / CLK_TCK / min(cpu_s) if all(cpu_s) else None
        entry["cpu_ratio_by_round"] = [
            ratio(c.get("gateway_cpu_us_per_req"), b.get("gateway_cpu_us_per_req"))
            for c, b in zip(cur[key]["rounds"], old[key]["rounds"], strict=True)
        ]
        scenarios_[key] = entry
    return {"baseline": base, "current": "mmproxy", "scenarios": scenarios_}


def bottleneck_notes(report: dict) -> list[str]:
    """Flag windows capped by core 1 (simulator + load generator) rather than the gateway, disturbed by
    other load on our cores, or with errors."""
    notes = []
    for name, t in report["targets"].items():
        for key, s in t["scenarios"].items():
            med = s["median"]
            gw = med.get("gateway_core_util")
            if gw is not None and gw < 0.85 and (med.get("client_core_util") or 0) > 0.9 and s["concurrency"] > 1:
                notes.append(
                    f"{name} {key}: gateway at {gw:.0%} of its core while core 1 was at "
                    f"{med['client_core_util']:.0%}: req/s there is bounded by simulator + load generator."
                )
            for core in (0, 1):
                foreign = med.get(f"foreign_util_core{core}") or 0
                if foreign > FOREIGN_LOAD_LIMIT:
                    notes.append(
                        f"{name} {key}: core {core} was {foreign:.0%} busy with processes outside the "
                        "benchmark: figures disturbed, rerun on a quiet machine."
                    )
            if med["errors"] or med["warmup_errors"]:
                notes.append(f"{name} {key}: {med['errors']} errors, {med['warmup_errors']} in warm-up.")
    return notes


# -- reporting ----------------------------------------------------------------------------------
def _f(v: float | None, fmt: str = "{:.2f}", unit: str = "") -> str:
    return "-" if v is None else fmt.format(v) + unit


def _us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"


def markdown(report: dict) -> str:
    cfg, env = report["config"], report["environment"]
    c_hi, c_lo = max(cfg["concurrency"]), min(cfg["concurrency"])
    lines = [
        f"Command: `{report['command']}`",
        "",
        f"Date: {report['date']}. Machine: {env['nproc']} x {env['cpu_model']}, Linux {env['kernel']}, "
        f"Python {env['python']}. Versions: mmproxy {env['mmproxy_version']} @ {env['mmproxy_rev']}, "
        f"LiteLLM {env['litellm_version'] or 'not installed'}.",
        "",
        f"Method: gateway pinned to core 0, simulator and load generator on core 1 "
        f"({'pinned' if env['pinned'] else 'NOT pinned: fewer than 2 cores or no taskset'}), loopback; "
        f"{cfg['warmup']} s warm-up then "
        + (f"{cfg['duration']} s" if cfg["requests"] is None else f"{cfg['requests']} requests")
        + f" per window; median of {cfg['rounds']} round(s). CPU = utime+stime of the gateway's process "
        "tree over the measured window ÷ requests.",
        "",
    ]
    for name, why in report["skipped"].items():
        lines.append(f"Skipped {name}: {why}.")
    for name, why in report.get("failed", {}).items():
        lines.append(f"FAILED {name}: {why.splitlines()[0]} (see the JSON report).")
    if report["skipped"] or report.get("failed"):
        lines.append("")

    mm, ll = "mmproxy" in report["targets"], "litellm" in report["targets"]
    gws = [n for n in ("mmproxy", "litellm") if n in report["targets"]]
    if gws:
        lines += ["### Summary", ""]
        head = "| figure | " + " | ".join(gws) + (" | mmproxy advantage" if mm and ll else "") + " | goal |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]

        def row(
            label: str,
            vals: list[float | None],
            fmt: Callable[[float | None], str],
            goal: str,
            higher_better: bool = False,
        ) -> None:
            ratio = ""
            if mm and ll:
                a, b = (vals[1], vals[0]) if higher_better else (vals[0], vals[1])
                ratio = " | " + (f"{b / a:,.0f}x" if a and b and a > 0 and b > 0 else "-")
            lines.append(f"| {label} | " + " | ".join(fmt(v) for v in vals) + ratio + f" | {goal} |")

        def cpu(key: str) -> list[float | None]:
            return [_m(report, g, key, "gateway_cpu_us_per_req") for g in gws]

        row(
            f"CPU per non-stream request, c={c_hi}",
            cpu(f"nonstream@c{c_hi}"),
            _us,
            GOALS["cpu_nonstream_c64"],
        )
        row(f"CPU per non-stream request, c={c_lo}", cpu(f"nonstream@c{c_lo}"), _us, GOALS["cpu_nonstream_c1"])
        row(f"CPU per 20-chunk stream, c={c_hi}", cpu(f"stream20@c{c_hi}"), _us, GOALS["cpu_stream20"])
        row(
            "CPU per relayed SSE event",
            [report["targets"][g].get("us_per_event") for g in gws],
            lambda v: _f(v, "{:.1f}", " µs"),
            GOALS["cpu_event"],
        )
        row(
            f"added p50 latency, non-stream c={c_lo}",
            [_m(report, g, f"nonstream@c{c_lo}", "added_p50_ms") for g in gws],
            lambda v: _f(v, "{:+.2f}", " ms"),
            GOALS["added_p50_c1"],
        )
        row(
            f"added TTFT p50, stream c={c_lo}",
            [_m(report, g, f"stream20@c{c_lo}", "added_ttft_p50_ms") for g in gws],
            lambda v: _f(v, "{:+.2f}", " ms"),
            "",
        )
        row(
            f"requests per gateway-CPU-second, non-stream c={c_hi}",
            [1e6 / v if v else None for v in cpu(f"nonstream@c{c_hi}")],
            lambda v: _f(v, "{:,.0f}"),
            GOALS["per_cpu_ratio"] + " (mmproxy ÷ LiteLLM)",
            higher_better=True,
        )
        row(
            "peak RSS (VmHWM)",
            [
                max((s["median"].get("peak_rss_mb") or 0) for s in report["targets"][g]["scenarios"].values()) or None
                for g in gws
            ],
            lambda v: _f(v, "{:.0f}", " MB"),
            "",
        )
        lines.append("")
        if report["per_cpu_second_ratio"]:
            lines.append(
                "Requests per gateway-CPU-second, mmproxy ÷ LiteLLM: "
                + ", ".join(f"{k} {v:.0f}x" for k, v in report["per_cpu_second_ratio"].items())
                + "."
            )
            lines.append("")

    if report.get("ab"):
        lines += ab_markdown(report)

    lines += [
        "### All scenarios",
        "",
        "| scenario | c | target | req/s | p50 ms | p99 ms | +p50 ms | TTFT p50 ms | +TTFT ms | gw CPU/req "
        "| gw core | RSS MB | peak RSS MB | overhead hdr ms | loadgen CPU/req | core 1 | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = list(dict.fromkeys(k for t in report["targets"].values() for k in t["scenarios"]))
    for key in keys:
        for name, t in report["targets"].items():
            if key not in t["scenarios"]:
                continue
            s = t["scenarios"][key]
            m = s["median"]
            lines.append(
                f"| {s['scenario']} | {s['concurrency']} | {name} | {m['req_s']:,.0f} | {_f(m['p50_ms'])} "
                f"| {_f(m['p99_ms'])} | {_f(m.get('added_p50_ms'), '{:+.2f}')} | {_f(m['ttft_p50_ms'])} "
                f"| {_f(m.get('added_ttft_p50_ms'), '{:+.2f}')} | {_us(m.get('gateway_cpu_us_per_req'))} "
                f"| {_f(m.get('gateway_core_util'), '{:.0%}')} | {_f(m.get('rss_mb'), '{:.0f}')} "
                f"| {_f(m.get('peak_rss_mb'), '{:.0f}')} | {_f(m['overhead_header_p50_ms'], '{:.3f}')} "
                f"| {_us(m['loadgen_cpu_us_per_req'])} | {_f(m['client_core_util'], '{:.0%}')} "
                f"| {m['errors']} |"
            )
    lines.append("")
    relay = [(n, t) for n, t in report["targets"].items() if "us_per_event" in t]
    if relay:
        c = cfg["relay_concurrency"]
        lines += [
            f"### Per-event relay cost ({RELAY_DELAY_MS:g} ms between SSE events, {cfg['relay_requests']} "
            f"streams each, c={c})",
            "",
            f"| target | CPU per {RELAY_SHORT}-event stream | CPU per {RELAY_LONG}-event stream | µs per event |",
            "|---|---|---|---|",
        ]
        for n, t in relay:
            a = _m(report, n, f"relay20@c{c}", "gateway_cpu_us_per_req")
            b = _m(report, n, f"relay100@c{c}", "gateway_cpu_us_per_req")
            lines.append(f"| {n} | {_us(a)} | {_us(b)} | {t['us_per_event']:.2f} |")
        lines.append("")
    mem = [(n, t["memory"]) for n, t in report["targets"].items() if "memory" in t]
    if mem:
        lines += [
            f"### Memory (alternating non-stream / 20-chunk stream, c={cfg['memory_concurrency']})",
            "",
            "| target | idle RSS | RSS after N | RSS after 2N | growth | peak RSS | errors |",
            "|---|---|---|---|---|---|---|",
        ]
        for n, m in mem:
            idle = report["targets"][n].get("idle_rss_mb")
            lines.append(
                f"| {n} (N={m['requests_per_step']:,}) | {_f(idle, '{:.1f}', ' MB')} "
                f"| {m['rss_after_1_mb']:.1f} MB | {m['rss_after_2_mb']:.1f} MB | {m['growth_mb']:+.1f} MB "
                f"| {m['peak_rss_mb']:.1f} MB | {m['errors']} |"
            )
        lines.append("")
    if report["notes"]:
        lines += ["Notes:", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(lines)


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f} ({v - 1:+.1%})"


def ab_markdown(report: dict) -> list[str]:
    """The A/B section: current ÷ baseline per scenario; the per-round range is the noise to read it against."""
    ab, base = report["ab"], report["baseline"]
    lines = [
        f"### A/B: {ab['baseline']} → mmproxy ({report['environment']['mmproxy_rev']})",
        "",
        f"Baseline: `{base['ref']}` = {base['commit'][:12]}, native extension {base['native']}. Ratios are current "
        "÷ baseline (above 1: the current code costs more); the two builds ran interleaved in every round. "
        "Tick: one /proc clock tick as a share of a window's gateway CPU, the finest step a round can show "
        "(longer windows make it smaller).",
        "",
        "| scenario | c | gw CPU/req baseline | gw CPU/req current | CPU ratio | CPU ratio by round | tick "
        "| p50 ratio | p99 ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, e in ab["scenarios"].items():
        scen_name, conc = key.split("@c")
        cpu = e["gateway_cpu_us_per_req"]
        by_round = ", ".join(_f(r, "{:.3f}") for r in e["cpu_ratio_by_round"])
        lines.append(
            f"| {scen_name} | {conc} | {_f(cpu['baseline'], '{:.1f}', ' µs')} | {_f(cpu['current'], '{:.1f}', ' µs')} "
            f"| {_ratio(cpu['ratio'])} | {by_round} | {_f(e['cpu_tick_resolution'], '{:.1%}')} "
            f"| {_ratio(e['p50_ms']['ratio'])} | {_ratio(e['p99_ms']['ratio'])} |"
        )
    return [*lines, ""]


def cpu_per_request(
    target: Service, model: str, *, stream: bool, count: int, concurrency: int, api_key: str = MASTER_KEY,
    warmup: float = 1.0, summaries: list[dict[str, Any]] | None = None, request: Request | None = None,
) -> float:
    """CPU seconds of ``target``'s process tree per request, over a window of ``count`` requests.

    ``request``: what to send instead of the standard chat request for ``model``. The load generator's summary
    (latency percentiles, ...) is appended to ``summaries`` when given.
    """
    pids = process_tree(target.pid)
    marks: list[float] = []
    gen = LoadGen(
        "127.0.0.1", target.port, [request or chat_request(model, stream=stream, api_key=api_key)],
        concurrency=concurrency, count=count, warmup=warmup,
        on_measure_start=lambda: marks.append(cpu_seconds(pids)),
        on_measure_end=lambda: marks.append(cpu_seconds(pids)),
    )
    summary = run_sync(gen).summary()
    if summary["errors"]:
        raise RuntimeError(f"{target.name} {model}: {summary['errors']} errors: {summary.get('error_sample')}")
    if summaries is not None:
        summaries.append(summary)
    return (marks[1] - marks[0]) / summary["requests"]


def gateway_cpu_by_config(
    configs: dict[str, Callable[[int], dict[str, Any]]], *, requests: int, rounds: int, model: str = "g",
    prepare: Callable[[str, str], str] | None = None, stream: bool = False, workers: int = 1,
    concurrency: int = 64, summaries: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, float]:
    """Median gateway CPU seconds per request for each labelled config, on one simulator, in one run.

    Every gateway runs at once (idle but for its turn) and the rounds interleave them.

    ``configs`` map a label to a function of the simulator port returning the gateway config; ``prepare``
    (label, gateway URL) may set the gateway up (e.g. create a virtual key) and returns the API key to load
    it with. Gateway on GATEWAY_CORE, simulator and load generator on CLIENT_CORE when pinning works.
    ``summaries`` collects each round's load-generator summary per label (latency percentiles).
    """
    pin = pinning_available()
    logdir = Path(tempfile.mkdtemp(prefix="mmproxy-cpu-"))
    sim_port = free_port()
    sim = Service("simulator", [sys.executable, "-m", "mmproxy.simulator", "--port", str(sim_port), "--record", "0"],
                  port=sim_port, core=CLIENT_CORE if pin else None, env=python_env(), logdir=logdir)
    gateways: dict[str, tuple[Service, str]] = {}
    samples: dict[str, list[float]] = {label: [] for label in configs}
    try:
        sim.wait_ready(f"http://127.0.0.1:{sim_port}/_sim/health", 20)
        for index, (label, make) in enumerate(configs.items()):
            config = logdir / f"config-{index}.yaml"
            config.write_text(yaml.safe_dump(make(sim_port)))
            port = free_port()
            # Each gateway runs in its own directory, so its SQLite ledger starts empty.
            workdir = logdir / f"gw-{index}"
            workdir.mkdir()
            gateway = Service(label, [sys.executable, "-m", "mmproxy", "serve", "--config", str(config),
                                      "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
                              port=port, core=GATEWAY_CORE if pin else None, env=python_env(), logdir=logdir,
                              cwd=workdir)
            url = f"http://127.0.0.1:{port}"
            gateways[label] = (gateway, MASTER_KEY)
            gateway.wait_ready(f"{url}/health/readiness", 30)
            gateways[label] = (gateway, prepare(label, url) if prepare is not None else MASTER_KEY)
        # Rounds interleave the configurations, so a slow spell of the shared machine hits them all alike.
        for _ in range(rounds):
            for label, (gateway, api_key) in gateways.items():
                kept = summaries.setdefault(label, []) if summaries is not None else None
                samples[label].append(cpu_per_request(gateway, model, stream=stream, count=requests,
                                                      concurrency=concurrency, api_key=api_key, summaries=kept))
        results = {label: statistics.median(values) for label, values in samples.items()}
        for label, cpu in results.items():
            log(f"{label}: {cpu * 1e6:.1f} µs per request")
    finally:
        for gateway, _ in gateways.values():
            gateway.stop()
        sim.stop()
    return results


def machine() -> str:
    """CPU model, core count, kernel, Python and the load at the start: the context every figure needs."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"
    return (
        f"{model}, nproc={os.cpu_count()}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; 1-min load average at start {load} (shared machine)"
    )


def write_results_section(body: str, path: Path = RESULTS_MD, section: str = "## Gateway") -> None:
    """Replace only the body of ``section``; other sections belong to other tools."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = text.splitlines()
    try:
        start = lines.index(section)
    except ValueError:
        lines += ["", section]
        start = len(lines) - 1
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    new = [*lines[: start + 1], "", *body.rstrip().splitlines(), "", *lines[end:]]
    path.write_text("\n".join(new).rstrip() + "\n")


def environment(pinned: bool) -> dict[str, Any]:
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "python", "rust"):
        rev += "-dirty"
    cpu_model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu_model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu_model)
    litellm_version = None
    py = LITELLM_VENV / "bin" / "python"
    if py.exists():
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            litellm_version = subprocess.run(
                [str(py), "-c", "from importlib.metadata import version; print(version('litellm'))"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
    mm_version = "unknown"
    with contextlib.suppress(ImportError):
        sys.path.insert(0, str(ROOT / "python"))
        import mmproxy

        mm_version = mmproxy.__version__
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mmproxy_version": mm_version,
        "mmproxy_rev": rev,
        "litellm_version": litellm_version,
        "pinned": pinned,
    }


# -- A/B baseline ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Baseline:
    """mmproxy as of another commit, checked out for the run: the ``mmproxy@<short>`` target."""

    ref: str
    commit: str
    target: str
    code: Path  # the checkout's python/, where its native extension has been placed
    native: str  # where that extension came from


def _git(*argv: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *argv], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def build_native(checkout: Path, commit: str) -> Path:
    """The checkout's Rust core with its Python binding, built as maturin would (pyproject.toml's
    ``[tool.maturin]``: ``--features python``, release profile), and kept in benches/out/native/ by commit,
    so repeating an A/B against the same commit does not pay the several-minute build again."""
    cached = OUT_DIR / "native" / f"{commit}.abi3.so"
    if cached.exists():
        log(f"[baseline] native extension for {commit[:12]} from {cached}")
        return cached
    log(f"[baseline] building the native extension of {commit[:12]} (cargo, release; several minutes)")
    env = python_env({"PYO3_PYTHON": sys.executable, "CARGO_TARGET_DIR": str(checkout / "target")})
    subprocess.run(["cargo", "build", "--release", "--lib", "--features", "python"], cwd=checkout, env=env, check=True)
    built = sorted((checkout / "target" / "release").glob("lib*.so"))
    if len(built) != 1:
        raise RuntimeError(f"expected one cdylib in {checkout}/target/release, found {[b.name for b in built]}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(built[0], cached)
    return cached


@contextlib.contextmanager
def baseline_checkout(ref: str, native: Path | None) -> Iterator[Baseline]:
    """A detached ``git worktree`` of ``ref`` in a temporary directory, removed (worktree and all) at exit.

    A worktree rather than ``git show`` of single files: the gateway imports the whole package as of
    ``ref``, and its Rust core must match that package's calls into it, so the extension is ``native``
    (prebuilt for ``ref`` by the caller) or built from the same checkout.
    """
    try:
        commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"--baseline {ref!r}: not a commit: {exc.stderr.strip()}") from exc
    short = _git("rev-parse", "--short", commit)
    tmp = Path(tempfile.mkdtemp(prefix=f"mmproxy-baseline-{short}-"))
    checkout = tmp / "src"
    try:
        _git("worktree", "add", "--detach", str(checkout), commit)
        so = native if native is not None else build_native(checkout, commit)
        shutil.copy2(so, checkout / "python" / "mmproxy" / "_native.abi3.so")
        yield Baseline(ref, commit, f"mmproxy@{short}", checkout / "python", str(native or so))
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _git("worktree", "remove", "--force", str(checkout))
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(subprocess.CalledProcessError):
            _git("worktree", "prune")


def target_groups(names: Sequence[str], baseline: Baseline | None) -> list[list[str]]:
    """Targets in the order given, each alone, except that the baseline joins ``mmproxy`` (to interleave)."""
    groups = [[n, baseline.target] if n == "mmproxy" and baseline else [n] for n in names]
    if baseline and "mmproxy" not in names:
        groups.append([baseline.target])
    return groups


# -- CLI ----------------------------------------------------------------------------------------
def _csv(kind: type) -> Callable[[str], list]:
    return lambda s: [kind(x) for x in s.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--targets", type=_csv(str), help="comma list of direct,mmproxy,litellm (default: all)")
    ap.add_argument("--scenarios", type=_csv(str), help=f"comma list of {','.join(SCENARIO_NAMES)} (default: all)")
    ap.add_argument("--concurrency", type=_csv(int), help="comma list (default 1,16,64)")
    run_len = ap.add_mutually_exclusive_group()
    run_len.add_argument("--duration", type=float, help="seconds per measured window (default 5)")
    run_len.add_argument("--requests", type=int, help="requests per measured window instead of a duration")
    ap.add_argument("--warmup", type=float, help="seconds of warm-up before each window (default 2)")
    ap.add_argument("--rounds", type=int, help="rounds per scenario; figures are medians (default 3)")
    ap.add_argument("--relay-requests", type=int, help="streams per relay window (default 1000)")
    ap.add_argument("--relay-concurrency", type=int, default=32)
    ap.add_argument("--memory-requests", type=int, default=100_000, help="requests per memory step")
    ap.add_argument("--memory-concurrency", type=int, default=64)
    ap.add_argument(
        "--memory-targets",
        type=_csv(str),
        default=["mmproxy"],
        help="gateways to soak (default mmproxy; LiteLLM needs ~40 min per 100k)",
    )
    ap.add_argument("--mmproxy-workers", type=int, default=1)
    ap.add_argument(
        "--baseline",
        metavar="REF",
        help="A/B: also run target mmproxy@<short REF>, the same config and scenarios served by the code of git "
        "ref REF (interleaved with mmproxy; its native extension is built with cargo unless --baseline-native)",
    )
    ap.add_argument(
        "--baseline-native",
        type=Path,
        metavar="PATH",
        help="a prebuilt _native.abi3.so for --baseline's commit, instead of building it",
    )
    ap.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="a few seconds: direct + mmproxy, c=1,16, tiny windows, no memory soak, no files",
    )
    ap.add_argument("--json", type=Path, help="write the JSON report here (default benches/out/gateway-*.json)")
    ap.add_argument(
        "--update-results",
        action=argparse.BooleanOptionalAction,
        help="rewrite the ## Gateway section of benches/RESULTS.md (default: yes unless --smoke or --baseline)",
    )
    args = ap.parse_args(argv)
    smoke = args.smoke
    defaults = {
        "targets": ["direct", "mmproxy"] if smoke else list(TARGET_NAMES),
        "scenarios": ["nonstream", "stream20", "relay"] if smoke else list(SCENARIO_NAMES),
        "concurrency": [1, 16] if smoke else [1, 16, 64],
        "duration": 0.5 if smoke else 5.0,
        "warmup": 0.2 if smoke else 2.0,
        "rounds": 1 if smoke else 3,
        "relay_requests": 64 if smoke else 1000,
        "update_results": not smoke and args.baseline is None,  # an A/B is a comparison, not the figures
    }
    for key, val in defaults.items():
        if getattr(args, key) is None and not (key == "duration" and args.requests is not None):
            setattr(args, key, val)
    for t in args.targets:
        if t not in TARGET_NAMES:
            ap.error(f"unknown target {t!r}")
    for s in args.scenarios:
        if s not in SCENARIO_NAMES:
            ap.error(f"unknown scenario {s!r}")
    if args.baseline_native is not None and (args.baseline is None or not args.baseline_native.is_file()):
        ap.error("--baseline-native needs --baseline and an existing file")
    if args.json is None and not smoke:
        args.json = OUT_DIR / f"gateway-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    return args


@contextlib.contextmanager
def running_simulators(core: int | None, logdir: Path) -> Iterator[dict[str, Service]]:
    sims: dict[str, Service] = {}
    try:
        sims = start_simulators(core, logdir)
        yield sims
    finally:
        for svc in sims.values():
            svc.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pin = pinning_available()
    if pin:
        os.sched_setaffinity(0, {CLIENT_CORE})  # the load generator shares core 1 with the simulator
    else:
        log("warning: fewer than 2 cores or no taskset; running unpinned, figures are not comparable")
    report: dict[str, Any] = {
        "command": "python benches/run.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "environment": environment(pin),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "targets": {},
        "skipped": {},
        "failed": {},
    }
    report["command"] = report["command"].rstrip()
    with contextlib.ExitStack() as stack:
        logdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mmproxy-bench-")))
        code = {"mmproxy": current_code()}
        baseline = None
        if args.baseline:
            baseline = stack.enter_context(baseline_checkout(args.baseline, args.baseline_native))
            code[baseline.target] = baseline.code
            report["baseline"] = {k: str(v) for k, v in vars(baseline).items()}
        sims = stack.enter_context(running_simulators(CLIENT_CORE if pin else None, logdir))
        config = logdir / "config.yaml"  # JSON is valid YAML
        config.write_bytes(orjson.dumps(gateway_config({k: s.port for k, s in sims.items()})))
        for group in target_groups(args.targets, baseline):
            run_targets(group, args, sims, config, logdir, pin, code, report)
    derive(report)
    report["notes"] = bottleneck_notes(report)
    md = markdown(report)
    print(md)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        log(f"wrote {args.json}")
    if args.update_results and report["failed"]:
        log(f"not updating {RESULTS_MD}: a gateway failed to start, its last complete results stay")
    elif args.update_results:
        write_results_section(md)
        log(f"updated ## Gateway in {RESULTS_MD}")
    errors = sum(s["median"]["errors"] for t in report["targets"].values() for s in t["scenarios"].values())
    errors += sum(t.get("memory", {}).get("errors", 0) for t in report["targets"].values())
    return 1 if errors or report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
