"""One client request while the gateway serves it: who sent it, what it has cost, what it reserved."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmproxy import tokens
from mmproxy.keys.manager import MASTER, Caller, Reservation
from mmproxy.spend.record import RequestRecord

if TYPE_CHECKING:
    from mmproxy.pipeline.apis import Inbound
    from mmproxy.privacy import Redaction


class Call:
    """One client request while it runs: who sent it, its record, its budget reservation."""

    __slots__ = ("caller", "capture", "counted", "inbound", "record", "redaction", "reservation", "started")

    def __init__(self, record: RequestRecord, started: int) -> None:
        self.record = record
        self.started = started  # perf_counter_ns when the handler began
        self.caller: Caller = MASTER
        self.counted = 0  # input tokens by the gateway's own count (0 when nothing needed it)
        self.reservation: Reservation | None = None
        self.capture: list[bytes] | None = None  # a stream's bytes, kept when the response cache wants them
        self.inbound: Inbound | None = None  # a chat turn's request, for counting its tokens when nothing else did
        self.redaction: Redaction | None = None  # the placeholders of a redacted request, restored in its answer

    def prompt_tokens(self) -> int:
        """Input tokens by the gateway's own count, counted now if nothing needed them before."""
        if not self.counted and self.inbound is not None:
            try:
                self.counted = tokens.count_chat(self.inbound.chat_bytes(), self.record.requested_model).count
            except ValueError:
                return 0
        return self.counted
