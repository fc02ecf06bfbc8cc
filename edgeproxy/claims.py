"""
Collapsed forwarding across worker processes. Each worker collapses its own misses
(SingleFlight); before a worker asks the origin for an original it claims the key
from the supervisor. The first claimant fetches; later ones wait until it says how it
went: here are the bytes (it was told others wait: the first of them makes the
supervisor say so), the original is on the shared disk (they read it there), absent
everywhere (they answer 404), or neither (they fetch it themselves). However many
workers miss on one image at once, the origin hears of it once.

A claim is also how a worker learns that an original is on the shared disk (STORED,
answered at once, nothing claimed): the worker used to read the file itself first,
and in a 100-way cold-miss burst that read took 1-8 ms (the pool thread's answer waits
for the reactor's turn), all of it before the claim and the fetch.

The bytes travel with the answer because the disk was slow to hand them over: a
second worker's waiters waited 13-18 ms past the fetch for the reservation, the write
and the release, each behind the first worker's own 50 answers and their closing
connections.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred, succeed

FETCH, FETCHED, ON_DISK, ABSENT, STORED = "fetch", "fetched", "disk", "absent", "stored"
Answer = tuple[str, "bytes | None"]  # an outcome, and with FETCHED the original's bytes


class FetchClaims:
    def __init__(self, wanted: Callable[[object, bytes], object] = lambda claimant, key: None) -> None:
        """`wanted(claimant, key)` is told when a first other worker waits on a claim."""
        self._claims: dict[bytes, tuple[object, list[Deferred[Answer]]]] = {}
        self._wanted = wanted

    def claim(self, key: bytes, claimant: object) -> "Deferred[Answer]":
        """FETCH at once for the first claimant; for others, the outcome once it is known."""
        if key not in self._claims:
            self._claims[key] = claimant, []
            return succeed((FETCH, None))
        owner, waiters = self._claims[key]
        waiter: Deferred[Answer] = Deferred()
        waiters.append(waiter)
        if len(waiters) == 1:
            self._wanted(owner, key)
        return waiter

    def release(self, key: bytes, claimant: object, outcome: str, body: bytes | None = None) -> None:
        """The claimant's fetch of `key` is over; a waiter told FETCH fetches on its own."""
        owner, waiters = self._claims.get(key, (None, []))
        if owner is not claimant:
            return
        del self._claims[key]
        for waiter in waiters:
            waiter.callback((outcome, body))

    def abandon(self, claimant: object) -> None:
        """The claimant is gone (its worker died): whoever waits on it fetches."""
        for key in [key for key, (owner, _) in self._claims.items() if owner is claimant]:
            self.release(key, claimant, FETCH)

    def __len__(self) -> int:
        return len(self._claims)
