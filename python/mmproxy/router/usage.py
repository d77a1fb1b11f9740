"""Live per-deployment usage: requests and tokens this minute (rpm/tpm), in-flight calls, latency.

This is what the routing strategies and the rpm/tpm limits read. Windows are fixed calendar
minutes, as in LiteLLM, so a limit resets for every deployment at the same moment and
``Retry-After`` can say exactly when. In-process; ``shared.SharedState`` adds the other instances'
figures through Redis.
"""

from __future__ import annotations

import time

from mmproxy.config import Deployment

_EWMA_ALPHA = 0.3  # weight of the newest latency sample


class Usage:
    def __init__(self) -> None:
        self._minute = -1
        self._requests: dict[str, int] = {}
        self._tokens: dict[str, int] = {}
        self.in_flight: dict[str, int] = {}
        self.latency: dict[str, float] = {}
        # Other instances' figures, when they share state through Redis (see shared.py).
        self.remote_in_flight: dict[str, int] = {}
        self.shared_latency: dict[str, float] = {}

    def busy(self, deployment_id: str) -> int:
        """Calls in flight on this deployment, from every instance."""
        return self.in_flight.get(deployment_id, 0) + self.remote_in_flight.get(deployment_id, 0)

    def latency_of(self, deployment_id: str) -> float | None:
        """The fleet's average when shared, else this instance's; None before any sample."""
        shared = self.shared_latency.get(deployment_id)
        return shared if shared is not None else self.latency.get(deployment_id)

    def _roll(self) -> None:
        minute = int(time.time() // 60)
        if minute != self._minute:
            self._minute = minute
            self._requests.clear()
            self._tokens.clear()

    def has_room(self, deployment: Deployment, tokens: int) -> bool:
        """Whether one more request of ``tokens`` input tokens stays within the deployment's rpm and tpm."""
        if deployment.rpm is None and deployment.tpm is None:
            return True
        self._roll()
        if deployment.rpm is not None and self._requests.get(deployment.id, 0) >= deployment.rpm:
            return False
        return deployment.tpm is None or self._tokens.get(deployment.id, 0) + tokens <= deployment.tpm

    def start(self, deployment_id: str, tokens: int) -> None:
        self._roll()
        self._requests[deployment_id] = self._requests.get(deployment_id, 0) + 1
        self._tokens[deployment_id] = self._tokens.get(deployment_id, 0) + tokens
        self.in_flight[deployment_id] = self.in_flight.get(deployment_id, 0) + 1

    def mark_full(self, deployment: Deployment) -> None:
        """Another instance filled this deployment's minute (the shared count said so)."""
        self._roll()
        if deployment.rpm is not None:
            self._requests[deployment.id] = max(self._requests.get(deployment.id, 0), deployment.rpm)
        if deployment.tpm is not None:
            self._tokens[deployment.id] = max(self._tokens.get(deployment.id, 0), deployment.tpm)

    def finish(self, deployment_id: str) -> None:
        self.in_flight[deployment_id] -= 1

    def add_tokens(self, deployment_id: str, tokens: int) -> None:
        """Completion tokens, known only once the answer is in."""
        self._roll()
        self._tokens[deployment_id] = self._tokens.get(deployment_id, 0) + tokens

    def observe_latency(self, deployment_id: str, seconds: float) -> None:
        """Total latency of an answer, or time to the first event of a stream."""
        previous = self.latency.get(deployment_id)
        self.latency[deployment_id] = seconds if previous is None else (
            _EWMA_ALPHA * seconds + (1 - _EWMA_ALPHA) * previous)

    def requests(self, deployment_id: str) -> int:
        self._roll()
        return self._requests.get(deployment_id, 0)

    def tokens(self, deployment_id: str) -> int:
        self._roll()
        return self._tokens.get(deployment_id, 0)

    @staticmethod
    def seconds_to_reset() -> int:
        return max(1, 60 - int(time.time() % 60))
