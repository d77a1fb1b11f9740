"""The gateway process's parts, built and wired: router, upstreams, keys, ledger, metrics, cache, pipeline.

Nothing here decides anything about a request; the pipeline does (``mmproxy.pipeline``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from mmproxy import tokens
from mmproxy.cache.responses import ResponseCache
from mmproxy.config import CacheSettings, Config
from mmproxy.db import Database, open_database
from mmproxy.errors import ProxyError
from mmproxy.keys.manager import Keys
from mmproxy.metrics import Metrics
from mmproxy.pipeline.access_log import AccessLog
from mmproxy.pipeline.accounting import Accounting
from mmproxy.pipeline.caching import CacheStep
from mmproxy.pipeline.live_log import LiveLog
from mmproxy.pipeline.pipeline import Pipeline
from mmproxy.pipeline.upstreams import Upstreams
from mmproxy.router import Router
from mmproxy.spend.ledger import Ledger
from mmproxy.spend.spool import Spool

if TYPE_CHECKING:
    from mmproxy.cache.embedder import LocalEmbedder

_SQLITE_DEFAULT = "mmproxy.db"


class StartupError(Exception):
    """The gateway cannot start (a database it cannot reach); the message is safe to print."""


class Gateway:
    def __init__(self, config: Config, worker: int = 0, shared_dir: Path | None = None) -> None:
        self.config = config
        self.metrics: Metrics | None = Metrics(
            shared_dir, worker, {w.id: w.model_name for w in config.wildcards}) if config.metrics else None
        self.router = Router(config.deployments, config.router, config.rules,
                             self.metrics.cooldown if self.metrics is not None else None, config.wildcards)
        self.db: Database | None = None
        self.keys: Keys | None = None
        self.ledger: Ledger | None = None
        self.cache: ResponseCache | None = None
        self.pipeline: Pipeline  # made in start(), which needs the running loop
        self._multi_worker = shared_dir is not None
        self._worker = worker
        self._local_embedder: LocalEmbedder | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.live = LiveLog(config.ui_log_prompts)  # the dashboard's live request log; free while no page watches

    async def start(self) -> None:
        tokens.warm()
        config = self.config
        upstreams = Upstreams(config.deployments)
        await self.router.start()
        if self.metrics is not None and self._multi_worker:
            self._spawn(self.metrics.run_sharing())
        if config.master_key or config.spend_logs:
            self.db = open_database(config.database_url, Path(_SQLITE_DEFAULT).resolve())
            try:
                await self.db.start()
            except Exception as exc:
                raise StartupError(f"cannot open the database: {self.db.describe_error(exc)}") from None
            if config.master_key:
                self.keys = Keys(self.db, config.master_key, redis_url=config.router.redis_url)
                await self.keys.start()
            if config.spend_logs:
                self.ledger = Ledger(self.db, Spool(Path(config.spool_dir), f"ledger-{self._worker}"))
                await self.ledger.start()
        accounting = Accounting(self.keys, self.ledger, self.metrics,
                                AccessLog(config.access_log) if config.access_log else None, self.live)
        self.pipeline = Pipeline(config, self.router, upstreams, accounting, None)
        if config.smart_routers or config.cascades or config.verifiers or config.consensus or config.reviews:
            self._start_virtual_models()
        if config.cache is not None:
            self.cache = ResponseCache(config.cache, self._embedder(config.cache),
                                       self._worker if self._multi_worker else None, self._local_embedder)
            for job in self.cache.jobs():
                self._spawn(job)
            self.pipeline.cache = CacheStep(self.cache, self.pipeline)
            if self.metrics is not None and self.cache.verified is not None:
                self.metrics.add_source(self.cache.verified.series)
        if self.metrics is not None:
            self.metrics.serve(self.model_names())

    def _start_virtual_models(self) -> None:
        """The learned routers and the virtual models that call several models (numpy, FAISS and ONNX load only
        here)."""
        from mmproxy.pipeline.cascading import Cascading
        from mmproxy.pipeline.consensus import Consensus
        from mmproxy.pipeline.reviewing import Reviewing
        from mmproxy.pipeline.smart_routing import SmartRouting, VirtualModelError
        from mmproxy.pipeline.subcalls import MultiCall
        from mmproxy.pipeline.verifying import Verifying

        config = self.config
        try:
            if config.smart_routers:
                self.pipeline.smart = smart = SmartRouting(config.smart_routers, self.router.groups, self._local())
                for job in smart.jobs(self.db) if self.db is not None else ():
                    self._spawn(job)
            multi: list[MultiCall] = []
            if config.cascades:
                multi.append(Cascading(config.cascades, self.router.groups, self._local()))
            if config.verifiers:
                multi.append(Verifying(config.verifiers, self.router.groups))
            if config.consensus:
                multi.append(Consensus(config.consensus, self.router.groups, self._local()))
            if config.reviews:
                multi.append(Reviewing(config.reviews, self.router.groups))
        except VirtualModelError as exc:
            raise StartupError(str(exc)) from None
        for kind in multi:
            self.pipeline.multi.update(dict.fromkeys(kind.names(), kind))

    def _embedder(self, settings: CacheSettings) -> Callable[[str], Awaitable[Any]] | None:
        if not settings.semantic:
            return None
        if settings.embedding_model is not None:
            from mmproxy.cache.deployment_embedder import DeploymentEmbedder  # numpy loads only when used

            return DeploymentEmbedder(self.router, self.pipeline.upstreams, settings.embedding_model).embed_one
        return self._local().embed_one

    def _local(self) -> LocalEmbedder:
        """The local embedder, one per process, shared by the semantic cache and the learned routers."""
        if self._local_embedder is None:
            from mmproxy.cache.embedder import LocalEmbedder  # onnxruntime loads only when it is used

            settings = self.config.cache or CacheSettings()
            self._local_embedder = LocalEmbedder(threads=settings.embedder_threads,
                                                 precision=settings.embedder_precision)
        return self._local_embedder

    def model_names(self) -> list[str]:
        """The names a client may request: the model groups, ``auto`` with routing rules, the virtual models."""
        smart = self.pipeline.smart
        return [*self.router.model_names(), *(smart.names() if smart is not None else ()), *self.pipeline.multi]

    def _spawn(self, job: Awaitable[None]) -> None:
        task = asyncio.ensure_future(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        self.pipeline.upstreams.close()
        await self.router.stop()
        if self.keys is not None:
            await self.keys.stop()
        if self.cache is not None:
            await self.cache.close()
        if self._local_embedder is not None:
            self._local_embedder.close()
        if self.ledger is not None:
            await self.ledger.close()  # every row still queued is written before the process exits
        if self.db is not None:
            await self.db.close()

    async def require_admin(self, request: web.BaseRequest) -> None:
        """Key and spend administration: the master key only."""
        if self.keys is None:
            raise ProxyError(400, "key management needs general_settings.master_key", code="no_master_key")
        if not (await self.pipeline.authorize(request)).admin:
            raise ProxyError(403, "this endpoint needs the master key", type="permission_error",
                             code="admin_only")
