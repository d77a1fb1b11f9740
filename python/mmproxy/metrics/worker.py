"""One worker's metrics: live totals bumped per request, and the snapshot file its peers merge at a scrape.

``observe`` only bumps plain ints, floats and lists; every Prometheus-shaped structure is built at
scrape time (``families``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import orjson

from mmproxy.metrics.families import (
    FAMILIES,
    LATENCY_MS,
    OVERHEAD_MS,
    TTFT_MS,
    Series,
    add,
    exposition,
    merge,
    parse_snapshot,
)
from mmproxy.spend.record import RequestRecord

__all__ = ["Metrics"]

log = logging.getLogger("mmproxy.metrics")

MAX_MODELS = 500
"""Distinct ``model`` labels kept per worker; the requested model is client input, so it must not grow
the series set without bound. Later ones, names over ``MAX_LABEL_CHARS`` and names the gateway does not serve
(``Metrics.serve``) count as ``OTHER_MODEL``: a scrape, which needs no key, shows no name a client made up."""
MAX_LABEL_CHARS = 200
OTHER_MODEL = "__other__"

STALE_INTERVALS = 10
"""A peer snapshot older than this many sharing intervals (at least ``MIN_STALE_SECONDS``) belongs to
a worker that stopped, or to an earlier run that used the same directory, and is left out."""
MIN_STALE_SECONDS = 5.0


class _Row:
    """What one (model, deployment, tier) has accumulated; tier is in the key because cost is labelled by it."""

    __slots__ = ("cache_write", "cached", "completion", "cost", "deployment", "latency", "latency_sum", "model",
                 "prompt", "statuses", "tier", "ttft", "ttft_sum")

    def __init__(self, model: str, deployment: str, tier: str) -> None:
        self.model = model
        self.deployment = deployment
        self.tier = tier
        self.statuses: dict[int, int] = {}
        self.prompt = self.completion = self.cached = self.cache_write = 0
        self.cost = 0.0
        self.latency = [0] * (len(LATENCY_MS) + 1)
        self.latency_sum = 0.0
        self.ttft = [0] * (len(TTFT_MS) + 1)
        self.ttft_sum = 0.0


class Metrics:
    """One per worker process; not thread-safe, like everything else on the event loop."""

    def __init__(self, shared_dir: Path | None = None, worker: int = 0,
                 labels: Mapping[str, str] | None = None) -> None:
        """``labels``: the ``model`` label of requests a deployment answered, by deployment id, in place of the
        requested name: a wildcard's deployments are labelled with its pattern, since the names a client may ask
        it for are endless."""
        self._shared_dir = shared_dir
        self._labels = labels or {}
        self._own_file = f"worker-{worker}.json"
        self._stale_after = max(STALE_INTERVALS * 1.0, MIN_STALE_SECONDS)  # run_sharing's default interval
        self._rows: dict[tuple[str, str, str], _Row] = {}
        self._models: set[str] = set()
        self._overhead = [0] * (len(OVERHEAD_MS) + 1)
        self._overhead_sum = 0.0
        self._cache: dict[str | None, list[float]] = {}  # record.cache -> [requests, saved_usd]
        self._retries: dict[str, int] = {}
        self._fallbacks: dict[str, int] = {}
        self._errors: dict[tuple[str, str], int] = {}
        self._cooldowns: dict[str, int] = {}
        self._budget: dict[tuple[str], int] = {}
        self._served: frozenset[str] | None = None  # None: every name (Metrics used alone)
        self._sources: list[Callable[[], dict[str, Series]]] = []

    def add_source(self, source: Callable[[], dict[str, Series]]) -> None:
        """Series another part keeps itself (the verified semantic cache's outcomes), read at each scrape."""
        self._sources.append(source)

    def serve(self, names: Iterable[str]) -> None:
        """The model names clients may request; any other requested name is labelled ``OTHER_MODEL`` unless the
        request was routed (a ``tier:`` or ``local`` target, which the router resolved)."""
        self._served = frozenset(names)

    def observe(self, record: RequestRecord) -> None:
        """Once per client request, on its path: plain dict and list updates (about 1 µs, benches/bench_metrics.py)."""
        key = (record.requested_model, record.deployment or "", record.tier or "")
        row = self._rows.get(key)
        if row is None:
            row = self._new_row(*key, routed=record.model_group is not None)
        statuses = row.statuses
        status = record.status
        statuses[status] = statuses.get(status, 0) + 1
        row.prompt += record.prompt_tokens
        row.completion += record.completion_tokens
        row.cached += record.cached_tokens
        row.cache_write += record.cache_write_tokens
        row.cost += record.cost_usd
        if record.endpoint != "batch":  # a batch line has tokens and cost but no latency of its own
            ms = record.latency_ms
            row.latency[bisect_left(LATENCY_MS, ms)] += 1
            row.latency_sum += ms
            if record.stream and (ttft := record.ttft_ms) is not None:
                row.ttft[bisect_left(TTFT_MS, ttft)] += 1
                row.ttft_sum += ttft
            if (overhead := record.overhead_ms) is not None:
                self._overhead[bisect_left(OVERHEAD_MS, overhead)] += 1
                self._overhead_sum += overhead
        cache = self._cache.get(record.cache)
        if cache is None:
            cache = self._cache[record.cache] = [0, 0.0]
        cache[0] += 1
        cache[1] += record.saved_usd
        if n := record.retries:
            self._retries[row.model] = self._retries.get(row.model, 0) + n
        if n := record.fallbacks:
            self._fallbacks[row.model] = self._fallbacks.get(row.model, 0) + n
        if (code := record.error_code) is not None:
            self._errors[row.model, code] = self._errors.get((row.model, code), 0) + 1

    def _new_row(self, model: str, deployment: str, tier: str, routed: bool) -> _Row:
        """A model not served, or past the cap, is filed under ``OTHER_MODEL`` and never keyed by its own name,
        so a client inventing names costs this slow path per request, not memory; a wildcard's requests are filed
        under its pattern (``labels``), not the names clients ask it for."""
        model = self._labels.get(deployment, model)
        served = self._served
        if len(model) > MAX_LABEL_CHARS or (model not in self._models and len(self._models) >= MAX_MODELS) or (
                served is not None and not routed and model not in served):
            model = OTHER_MODEL
        key = (model, deployment, tier)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = _Row(model, deployment, tier)
            self._models.add(model)
        return row

    def cooldown(self, deployment: str) -> None:
        self._cooldowns[deployment] = self._cooldowns.get(deployment, 0) + 1

    def budget_rejected(self, team_id: str | None) -> None:
        key = (team_id or "",)
        self._budget[key] = self._budget.get(key, 0) + 1

    def render(self) -> bytes:
        """This worker's live state plus every other worker's latest fresh snapshot, in text format 0.0.4."""
        families = self._families()
        if self._shared_dir is not None:
            for peer in self._peer_snapshots(self._shared_dir):
                merge(families, peer)
        return exposition(families)

    async def run_sharing(self, interval: float = 1.0) -> None:
        """Write this worker's snapshot every ``interval`` seconds until cancelled, then remove it."""
        if self._shared_dir is None:
            return
        self._stale_after = max(STALE_INTERVALS * interval, MIN_STALE_SECONDS)
        path = self._shared_dir / self._own_file
        failing = False
        try:
            while True:
                try:
                    self.write_snapshot(path)
                except OSError as exc:
                    if not failing:
                        log.warning("metrics: cannot write %s, other workers' scrapes miss this one: %s", path, exc)
                    failing = True
                else:
                    failing = False
                await asyncio.sleep(interval)
        finally:
            with contextlib.suppress(OSError):
                path.unlink()

    def write_snapshot(self, path: Path) -> None:
        """Atomic (temporary file + rename), so a reader sees the previous snapshot or this one, never half."""
        data = {
            "written": time.time(),
            "families": {
                name: [[*labels, value] for labels, value in series.items()]
                for name, series in self._families().items()
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps(data))
        os.replace(tmp, path)

    def _peer_snapshots(self, directory: Path) -> list[dict[str, Series]]:
        try:
            paths = [p for p in directory.glob("worker-*.json") if p.name != self._own_file]
        except OSError:
            return []
        now = time.time()
        peers = []
        for path in paths:
            try:
                data = orjson.loads(path.read_bytes())
                if now - data["written"] > self._stale_after:
                    log.debug("metrics: ignoring stale snapshot %s", path)
                    continue
                peers.append(parse_snapshot(data["families"]))
            except FileNotFoundError:
                continue  # its worker stopped between the listing and the read
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.warning("metrics: ignoring unreadable snapshot %s: %s", path, exc)
        return peers

    def _families(self) -> dict[str, Series]:
        """The live state keyed the way it is rendered (and shared): every label a string."""
        out: dict[str, Series] = {name: {} for name in FAMILIES}
        requests = out["mmproxy_requests_total"]
        latency = out["mmproxy_request_latency_seconds"]
        ttft = out["mmproxy_time_to_first_token_seconds"]
        tokens = out["mmproxy_tokens_total"]
        cost = out["mmproxy_cost_usd_total"]
        for row in self._rows.values():
            pair = (row.model, row.deployment)
            for status, n in row.statuses.items():
                add(requests, (*pair, str(status)), n)
            add(latency, pair, [*row.latency, row.latency_sum])
            if any(row.ttft):
                add(ttft, pair, [*row.ttft, row.ttft_sum])
            for kind, n in (
                ("prompt", row.prompt),
                ("completion", row.completion),
                ("cached", row.cached),
                ("cache_write", row.cache_write),
            ):
                add(tokens, (*pair, kind), n)
            add(cost, (*pair, row.tier), row.cost)
        if any(self._overhead):
            out["mmproxy_gateway_overhead_seconds"][()] = [*self._overhead, self._overhead_sum]
        for cache, (count, saved) in self._cache.items():
            label = cache or "none"
            add(out["mmproxy_cache_requests_total"], (label,), count)
            add(out["mmproxy_saved_usd_total"], (label,), saved)
        out["mmproxy_retries_total"] = {(model,): n for model, n in self._retries.items()}
        out["mmproxy_fallbacks_total"] = {(model,): n for model, n in self._fallbacks.items()}
        out["mmproxy_errors_total"] = {labels: n for labels, n in self._errors.items()}
        out["mmproxy_cooldowns_total"] = {(deployment,): n for deployment, n in self._cooldowns.items()}
        out["mmproxy_budget_rejections_total"] = {labels: n for labels, n in self._budget.items()}
        for source in self._sources:
            merge(out, source())
        return out
