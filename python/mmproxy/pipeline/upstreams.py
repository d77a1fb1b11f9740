"""Every configured deployment's provider adapter (its dialect) and transport (its origin's connections)."""

from __future__ import annotations

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


class Upstreams:
    def __init__(self, deployments: Sequence[Deployment],
                 connect: Callable[[str], Transport] = UpstreamPool) -> None:
        """One transport per origin, shared by the deployments behind it: ``connect`` makes it from a base URL
        (a keep-alive pool, which needs the running loop; an in-process fake in tests)."""
        self._pools: dict[str, Transport] = {}
        self.by_id: dict[str, Upstream] = {}  # a plain dict: looked up once per attempt
        for deployment in deployments:
            origin = "/".join(deployment.api_base.split("/", 3)[:3])
            pool = self._pools.get(origin)
            if pool is None:
                pool = self._pools[origin] = connect(deployment.api_base)
            self.by_id[deployment.id] = Upstream(deployment, adapter(deployment), pool)

    def __getitem__(self, deployment_id: str) -> Upstream:
        return self.by_id[deployment_id]

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
