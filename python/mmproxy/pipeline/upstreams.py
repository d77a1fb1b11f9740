"""Every configured deployment's provider adapter (its dialect) and transport (its origin's connections)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

from mmproxy.config import Deployment
from mmproxy.providers import Provider, adapter
from mmproxy.upstream import Transport
from mmproxy.upstream.http1 import UpstreamPool


class Upstream(NamedTuple):
    """What one attempt on a deployment needs: its config, its dialect and its transport."""

    deployment: Deployment
    provider: Provider
    transport: Transport


MAX_DERIVED = 1024
"""Upstreams kept for deployments a wildcard made (``router.wildcards``); the least recently used is dropped and
made again when needed."""


class Upstreams:
    def __init__(self, deployments: Sequence[Deployment],
                 connect: Callable[[str], Transport] = UpstreamPool) -> None:
        """One transport per origin, shared by the deployments behind it: ``connect`` makes it from a base URL
        (a keep-alive pool, which needs the running loop; an in-process fake in tests)."""
        self._connect = connect
        self._pools: dict[str, Transport] = {}
        self.by_id: dict[str, Upstream] = {}  # a plain dict: looked up once per attempt
        self._derived: OrderedDict[tuple[str, str, str], Upstream] = OrderedDict()
        for deployment in deployments:
            self.by_id[deployment.id] = self._make(deployment)

    def __getitem__(self, deployment_id: str) -> Upstream:
        return self.by_id[deployment_id]

    def of(self, deployment: Deployment) -> Upstream:
        """The upstream of a configured deployment, or of one a wildcard made (those share their wildcard's id,
        so they are told apart by the model they serve)."""
        upstream = self.by_id.get(deployment.id)
        if upstream is not None:
            return upstream
        key = (deployment.id, deployment.provider, deployment.upstream_model)
        upstream = self._derived.get(key)
        if upstream is None:
            upstream = self._derived[key] = self._make(deployment)
            if len(self._derived) > MAX_DERIVED:
                self._derived.popitem(last=False)
        else:
            self._derived.move_to_end(key)
        return upstream

    def _make(self, deployment: Deployment) -> Upstream:
        origin = "/".join(deployment.api_base.split("/", 3)[:3])
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = self._connect(deployment.api_base)
        return Upstream(deployment, adapter(deployment), pool)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
