"""The budget steps around a request: admission before any upstream call, settlement after it.

Admission checks the caller's key (models, limits) and reserves the most the request could cost; when the
request is over, whatever its outcome, the reservation is settled with what it cost and its record goes to
the ledger, the metrics and the access log.
"""

from __future__ import annotations

import time

from mmproxy.errors import ProxyError
from mmproxy.keys.manager import Keys
from mmproxy.metrics import Metrics
from mmproxy.pipeline.access_log import AccessLog
from mmproxy.pipeline.call import Call
from mmproxy.pipeline.live_log import LiveLog
from mmproxy.spend.ledger import Ledger
from mmproxy.spend.record import RequestRecord

_NS_PER_MS = 1_000_000


class Accounting:
    def __init__(self, keys: Keys | None, ledger: Ledger | None, metrics: Metrics | None,
                 access_log: AccessLog | None, live: LiveLog | None = None) -> None:
        self.keys = keys
        self.ledger = ledger
        self.metrics = metrics
        self.access_log = access_log
        self.live = live  # the dashboard's live request log

    async def admit(self, call: Call, model: str, estimate: float) -> None:
        """Key restrictions, limits and the budget reservation (``estimate``: the most the request may cost) for
        a virtual key's request."""
        keys = self.keys
        if keys is None:
            return
        try:
            call.reservation = await keys.admit(call.caller, model, estimate, call.counted)
        except ProxyError as exc:
            if exc.code == "budget_exceeded" and self.metrics is not None:
                self.metrics.budget_rejected(call.record.team_id)
            raise

    def finish(self, call: Call) -> None:
        """The request is over: settle its budget, then hand its record on."""
        record = call.record
        record.latency_ms = (time.perf_counter_ns() - call.started) / _NS_PER_MS
        if call.reservation is not None and self.keys is not None:
            self.keys.settle(call.reservation, record.cost_usd, record.completion_tokens)
        self.record(record)
        if self.access_log is not None:
            self.access_log.write(record)
        if self.live is not None:
            self.live.publish(record, call.inbound)

    def record_subcall(self, record: RequestRecord) -> None:
        """A virtual model's sub-call: a ledger row of its own (linked by ``parent_id``). Not in the metrics,
        which count the client request, whose cost already includes it."""
        if self.ledger is not None:
            self.ledger.record(record)

    def record(self, record: RequestRecord) -> None:
        """A finished record (a request's, or a batch line's) into the ledger and the metrics."""
        if self.ledger is not None:
            self.ledger.record(record)
        if self.metrics is not None:
            self.metrics.observe(record)
