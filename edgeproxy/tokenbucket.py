"""
A token bucket on the reactor: `take()` is a Deferred that fires when the caller may
send, so a rate limit never sleeps in a thread and never holds the reactor. A
LoopingCall refills it; the bucket holds at most `burst` seconds' worth, enough that
a late tick on a busy host loses no tokens, too little for an idle spell to be
followed by a burst.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

_ROUNDING = 1e-9  # 5 ticks of 0.2 tokens make 0.9999999999999999


class TokenBucket:
    """`rate` tokens per second; the first take is immediate."""

    def __init__(self, rate: float, clock: IReactorTime, tick: float = 0.02, burst: float = 0.1):
        self._rate = rate
        self._clock = clock
        self._capacity = max(1.0, rate * burst)
        self._tokens = 1.0
        self._last = clock.seconds()
        self._waiting: deque[Deferred[None]] = deque()
        self._refill = LoopingCall(self._tick)
        self._refill.clock = clock
        self._interval = min(tick, 1.0 / rate)

    def start(self) -> None:
        self._refill.start(self._interval, now=False)

    def stop(self) -> None:
        if self._refill.running:
            self._refill.stop()

    def take(self) -> Deferred[None]:
        if not self._waiting and self._tokens >= 1.0 - _ROUNDING:
            self._tokens -= 1.0
            return succeed(None)
        waiter: Deferred[None] = Deferred(self._waiting.remove)
        self._waiting.append(waiter)
        return waiter

    def _tick(self) -> None:
        now = self._clock.seconds()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        while self._waiting and self._tokens >= 1.0 - _ROUNDING:
            self._tokens -= 1.0
            self._waiting.popleft().callback(None)
