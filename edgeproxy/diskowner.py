"""
The supervisor's disk tier: the single owner of the index, the byte budget and the
evictions of a disk tier that worker processes write. A worker asks (`reserve`)
before it writes an entry, writes it itself (temp file, then rename), and says when it
landed (`reserved_written`). Until then the entry is indexed and counted, and if it is
evicted or purged meanwhile its file is deleted only once it has landed, so no file
is ever on disk that the index does not count (beyond the one being renamed).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed

from edgeproxy.claims import STORED, Answer, FetchClaims
from edgeproxy.disktier import DiskTier


class DiskOwner(DiskTier):
    def __init__(self, *args: object, **kwargs: object):
        super().__init__(*args, **kwargs)
        self._reserved: set[bytes] = set()
        self.claims = FetchClaims(lambda claimant, key: claimant.wanted(key))  # which worker fetches an original for all

    def claim(self, key: bytes, claimant: object) -> "Deferred[Answer]":
        """STORED if `key` is on disk (indexed, and not being written); else the claims decide."""
        if key in self._index and key not in self._reserved:
            return succeed((STORED, None))
        return self.claims.claim(key, claimant)

    def reserve(self, key: bytes, size: int) -> "Deferred[bool]":
        """
        Index `key` for a worker to write, within the budget (evicting what must go).
        False if it is indexed already (a hit for the policy), being written, too big,
        or the index is not rebuilt yet: then the worker does not write. True only once
        every delete queued before has run, so an older unlink of `key` cannot land on
        the new file.
        """
        if key in self._index:
            self._index.get(key)
            return succeed(False)
        if not self.ready or key in self._reserved or size > self.budget:
            return succeed(False)
        self._index[key] = size
        self.spilled += 1
        self._reserved.add(key)
        return self._mutate(lambda: True)

    def reserved_written(self, key: bytes, ok: bool) -> None:
        """The worker renamed the file into place (ok), or could not write it."""
        if key not in self._reserved:
            return
        self._reserved.discard(key)
        if not ok:
            self._index.pop(key, None)
        elif key not in self._index:
            self._delete(key)  # evicted or purged while it was being written

    def abandon(self, key: bytes) -> None:
        """The worker died mid-write: the entry goes, and its file if it got there."""
        self._index.pop(key, None)
        self.reserved_written(key, True)

    def touch(self, key: bytes) -> None:
        """A worker read `key`: the eviction policy counts the hit."""
        self._index.get(key)

    def forget(self, key: bytes) -> None:
        """
        A worker found `key` corrupt (and deleted it) or its file gone. An entry being
        written stays: its file is not renamed into place yet, and lands afresh.
        """
        if key not in self._reserved and self._index.pop(key, None) is not None:
            self._delete(key)

    @property
    def writes_in_flight(self) -> int:
        return len(self._reserved)

    def _delete(self, key: bytes) -> None:
        if key in self._reserved:
            return  # reserved_written deletes it once it has landed
        super()._delete(key)
