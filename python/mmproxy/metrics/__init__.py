"""Prometheus metrics for ``GET /metrics``, cheap enough to update on every request.

With ``--workers N`` a scrape reaches one worker of N, so each worker writes its totals to a shared
directory every second and ``Metrics.render`` adds the other workers' latest files to its own live
state: any worker answers for the whole server.
"""

from mmproxy.metrics.families import CONTENT_TYPE
from mmproxy.metrics.worker import Metrics

__all__ = ["CONTENT_TYPE", "Metrics"]
