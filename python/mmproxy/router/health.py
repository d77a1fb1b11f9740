"""Deployment health: failures within a window put a deployment in cooldown.

Every failed upstream attempt counts, retries and fallbacks included, and a group with a single
deployment is cooled down too: during an outage, requests then go straight to a fallback
instead of paying for the failing call each time. When the cooldown ends the deployment gets
traffic again; one more failure sends it straight back (it is on probation until a success).
In-process state; ``shared.SharedState`` keeps it in step with other instances through Redis.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

# Failure kinds that say something about the deployment, not about the request.
COUNTED_KINDS = frozenset({"rate_limit", "overloaded", "server", "timeout", "auth", "not_found"})


@dataclass(slots=True)
class _State:
    failures: deque[float] = field(default_factory=deque)
    cooling_until: float = 0.0
    probation: bool = False
    total_failures: int = 0


class Health:
    def __init__(self, allowed_fails: int, cooldown_time: float, window: float = 60.0) -> None:
        self.allowed_fails = allowed_fails
        self.cooldown_time = cooldown_time
        self.window = window
        self._states: dict[str, _State] = {}

    def failed(self, deployment_id: str, kind: str | None) -> bool:
        """Count a failed attempt; True when it put the deployment into cooldown."""
        if kind not in COUNTED_KINDS or self.cooldown_time <= 0:
            return False
        now = time.monotonic()
        state = self._states.setdefault(deployment_id, _State())
        state.total_failures += 1
        failures = state.failures
        failures.append(now)
        while failures and failures[0] < now - self.window:
            failures.popleft()
        if state.probation or len(failures) >= self.allowed_fails:
            state.cooling_until = now + self.cooldown_time
            state.probation = True
            failures.clear()
            return True
        return False

    def adopt_cooldown(self, deployment_id: str, seconds: float) -> None:
        """A cooldown decided elsewhere (another instance, through Redis)."""
        state = self._states.setdefault(deployment_id, _State())
        until = time.monotonic() + seconds
        if until > state.cooling_until:
            state.cooling_until = until
            state.probation = True
            state.failures.clear()

    def succeeded(self, deployment_id: str) -> None:
        state = self._states.get(deployment_id)
        if state is not None and state.probation and state.cooling_until <= time.monotonic():
            state.probation = False

    def cooling(self, deployment_id: str) -> float:
        """Seconds of cooldown left (0 when the deployment may take traffic)."""
        state = self._states.get(deployment_id)
        if state is None:
            return 0.0
        return max(0.0, state.cooling_until - time.monotonic())

    def report(self, deployment_id: str) -> dict[str, object]:
        state = self._states.get(deployment_id) or _State()
        left = self.cooling(deployment_id)
        return {
            "healthy": left == 0.0,
            "cooldown_remaining_s": round(left, 3),
            "recent_failures": len(state.failures),
            "total_failures": state.total_failures,
        }
