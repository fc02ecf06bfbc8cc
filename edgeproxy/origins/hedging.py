"""
When to send a second request for one image: a primary that has not answered within a
high percentile of its own recent latency is probably stuck, and the secondary of the
pair holds the same bytes. The extra load is bounded by a budget.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

_WINDOW = 256
_MIN_SAMPLES = 20


@dataclass(frozen=True)
class HedgePolicy:
    after: float | None  # a fixed delay, or None for "the percentile of recent latency"
    percentile: float  # 0..1, e.g. 0.95
    share: float  # at most this fraction of requests hedged, e.g. 0.05
    floor: float  # never hedge sooner than this
    initial: float  # the delay until enough latencies are known


class LatencyWindow:
    """Recent time-to-headers of one backend; the percentile is recomputed every few samples."""

    def __init__(self, percentile: float, initial: float):
        self._samples: deque[float] = deque(maxlen=_WINDOW)
        self._percentile = percentile
        self._value = initial
        self._since = 0

    def add(self, seconds: float) -> None:
        self._samples.append(seconds)
        self._since += 1
        if self._since >= 16 and len(self._samples) >= _MIN_SAMPLES:
            ordered = sorted(self._samples)
            self._value = ordered[min(len(ordered) - 1, int(self._percentile * len(ordered)))]
            self._since = 0

    @property
    def value(self) -> float:
        return self._value

    @property
    def measured(self) -> bool:
        """False while `value` is still the initial guess."""
        return len(self._samples) >= _MIN_SAMPLES


class HedgeBudget:
    """Each fetch earns `share` of a hedge; a hedge spends one. A small burst is allowed."""

    def __init__(self, share: float, burst: float = 5.0):
        self._share = share
        self._burst = burst
        self._credit = burst
        self.hedged = 0

    def earn(self) -> None:
        self._credit = min(self._burst, self._credit + self._share)

    def spend(self) -> bool:
        if self._credit < 1.0:
            return False
        self._credit -= 1.0
        self.hedged += 1
        return True
