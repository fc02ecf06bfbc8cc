"""
Collapsed forwarding across worker processes. Each worker collapses its own misses
(SingleFlight); before a worker asks the origin for an original it claims the key
from the supervisor. The first claimant fetches; later ones wait until it says how it
went: the original is on the shared disk (they read it there), absent everywhere
(they answer 404), or neither (they fetch it themselves). However many workers miss
on one image at once, the origin hears of it once.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed

FETCH, ON_DISK, ABSENT = "fetch", "disk", "absent"


class FetchClaims:
    def __init__(self) -> None:
        self._claims: dict[bytes, tuple[object, list[Deferred[str]]]] = {}

    def claim(self, key: bytes, claimant: object) -> "Deferred[str]":
        """FETCH at once for the first claimant; for others, the outcome once it is known."""
        if key not in self._claims:
            self._claims[key] = claimant, []
            return succeed(FETCH)
        waiter: Deferred[str] = Deferred()
        self._claims[key][1].append(waiter)
        return waiter

    def release(self, key: bytes, claimant: object, outcome: str) -> None:
        """The claimant's fetch of `key` is over; a waiter told FETCH fetches on its own."""
        owner, waiters = self._claims.get(key, (None, []))
        if owner is not claimant:
            return
        del self._claims[key]
        for waiter in waiters:
            waiter.callback(outcome)

    def abandon(self, claimant: object) -> None:
        """The claimant is gone (its worker died): whoever waits on it fetches."""
        for key in [key for key, (owner, _) in self._claims.items() if owner is claimant]:
            self.release(key, claimant, FETCH)

    def __len__(self) -> int:
        return len(self._claims)
