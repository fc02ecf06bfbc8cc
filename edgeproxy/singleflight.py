"""
Collapsed forwarding: however many requests miss on one object at once, one fetch
runs and every waiter is answered the moment it lands (no polling, no lock delay).
A waiter that gives up (its client went away) never cancels the fetch for the others.
"""

from __future__ import annotations

from typing import Callable, Generic, Hashable, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[Hashable, list[Deferred[T]]] = {}
        self.collapsed = 0

    def run(self, key: Hashable, start: Callable[[], "Deferred[T]"]) -> "Deferred[T]":
        """Join the flight for `key`, starting it with `start()` if none is in the air."""
        waiter: Deferred[T] = Deferred()
        waiters = self._flights.get(key)
        if waiters is not None:
            self.collapsed += 1
            waiters.append(waiter)
            return waiter
        self._flights[key] = [waiter]
        maybeDeferred(start).addBoth(self._land, key)
        return waiter

    def __contains__(self, key: Hashable) -> bool:
        return key in self._flights

    def __len__(self) -> int:
        """Flights in the air: what a drain waits for."""
        return len(self._flights)

    def _land(self, result: T | Failure, key: Hashable) -> None:
        """Answer every waiter with the same result; a failure is not kept for the next request."""
        for waiter in self._flights.pop(key):
            if not waiter.called:
                waiter.callback(result) if not isinstance(result, Failure) else waiter.errback(result)
