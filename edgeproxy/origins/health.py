"""
Passive health of one backend, as the seed's HAProxy kept it: a backend that keeps
failing is left alone for a cooldown that grows while it stays broken, then given one
live request as a probe before it takes traffic again.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime


@dataclass(frozen=True)
class HealthPolicy:
    down_after: int  # consecutive failures, on as many different keys, that mark a backend down
    down_for: float  # the first cooldown; doubled on every failed probe
    max_down_for: float


class BackendHealth:
    """
    Failures count only across different keys: one corrupt file asked for again and
    again says nothing about the server. A 404 is an answer, not a failure.
    """

    def __init__(self, clock: IReactorTime, policy: HealthPolicy):
        self._clock = clock
        self._policy = policy
        self._failed_keys: set[str] = set()
        self._cooldown = policy.down_for
        self._down_until: float | None = None
        self._probing = False

    @property
    def up(self) -> bool:
        return self._down_until is None

    def resting(self) -> bool:
        """True while down and not ready for a probe: such a backend is skipped."""
        if self._down_until is None:
            return False
        return self._probing or self._clock.seconds() < self._down_until

    def admit(self) -> bool:
        """May a request go now? Past the cooldown, the first one through becomes the probe."""
        if self.resting():
            return False
        if self._down_until is not None:
            self._probing = True
        return True

    def succeeded(self) -> None:
        self._failed_keys.clear()
        self._probing = False
        self._down_until = None
        self._cooldown = self._policy.down_for

    def failed(self, key: str) -> None:
        if self._down_until is not None:
            if self._probing:
                self._probing = False
                self._cooldown = min(self._cooldown * 2, self._policy.max_down_for)
                self._down_until = self._clock.seconds() + self._cooldown
            return
        self._failed_keys.add(key)
        if len(self._failed_keys) >= self._policy.down_after:
            self._failed_keys.clear()
            self._down_until = self._clock.seconds() + self._cooldown

    def probe_released(self) -> None:
        """The probe ended without a verdict (cancelled): the next request probes instead."""
        self._probing = False
