"""One client request while the gateway serves it: who sent it, what it has cost, what it reserved."""

from __future__ import annotations

from mmproxy.keys.manager import MASTER, Caller, Reservation
from mmproxy.spend.record import RequestRecord


class StartupError(Exception):
    """The gateway cannot start (a database it cannot reach); the message is safe to print."""


class Call:
    """One client request while it runs: who sent it, its record, its budget reservation."""

    __slots__ = ("caller", "capture", "counted", "record", "reservation", "started")

    def __init__(self, record: RequestRecord, started: int) -> None:
        self.record = record
        self.started = started  # perf_counter_ns when the handler began
        self.caller: Caller = MASTER
        self.counted = 0  # input tokens by the gateway's own count (0 when nothing needed it)
        self.reservation: Reservation | None = None
        self.capture: list[bytes] | None = None  # a stream's bytes, kept when the response cache wants them
