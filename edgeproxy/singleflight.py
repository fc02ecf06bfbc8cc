"""
Collapsed forwarding: however many requests miss on one object at once, one fetch
runs and every waiter is answered the moment it lands (no polling, no lock delay).
A waiter that gives up (its client went away) never cancels the fetch for the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Callable, Generic, Hashable, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[Hashable, list[Deferred[T]]] = {}
        self._in_air = 0
        self.collapsed = 0

    def run(self, key: Hashable, start: Callable[[], "Deferred[T]"]) -> "Deferred[T]":
        """Join the flight for `key`, starting it with `start()` if none is in the air."""
        waiter: Deferred[T] = Deferred()
        waiters = self._flights.get(key)
        if waiters is not None:
            self.collapsed += 1
            waiters.append(waiter)
            return waiter
        waiters = self._flights[key] = [waiter]
        self._in_air += 1
        maybeDeferred(start).addBoth(self._land, key, waiters)
        return waiter

    def flight(self, key: Hashable) -> object | None:
        """The flight in the air for `key`: what `attached` is asked about once it may have been detached."""
        return self._flights.get(key)

    def attached(self, key: Hashable, flight: object) -> bool:
        """Whether later requests for `key` still join `flight` (it has not been detached)."""
        return self._flights.get(key) is flight

    def detach(self, keys: Iterable[Hashable]) -> None:
        """Later requests for `keys` start flights of their own; those in the air still answer their waiters."""
        for key in keys:
            self._flights.pop(key, None)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._flights

    def __iter__(self) -> Iterator[Hashable]:
        """The keys with a flight that later requests join (a snapshot: detaching while iterating is fine)."""
        return iter(list(self._flights))

    def __len__(self) -> int:
        """Flights in the air, detached ones included: what a drain waits for."""
        return self._in_air

    def _land(self, result: T | Failure, key: Hashable, waiters: list[Deferred[T]]) -> None:
        """Answer every waiter with the same result; a failure is not kept for the next request."""
        self._in_air -= 1
        if self._flights.get(key) is waiters:
            del self._flights[key]
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(result) if not isinstance(result, Failure) else waiter.errback(result)
