"""
A worker's view of the disk tier it shares with the other workers. The supervisor owns
the index and the budget (a DiskTier fed by `Reserve`/`Written`); a worker asks before
it writes, writes the entry itself (temp file, then rename: a reader never sees half a
file) and reads entries straight from their path. Every read checks key, length and
checksum, so a file evicted, purged or not yet renamed under a reader is just a miss.
"""

from __future__ import annotations

import itertools
import os
from typing import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from edgeproxy import diskentry
from edgeproxy.disktier import RETRY_SECONDS, entry_path, read_entry, write_entry
from edgeproxy.claims import FETCH, FETCHED, ON_DISK, STORED, Answer
from edgeproxy.workerproto import Claim, Forget, Release, Reserve, Touch, Written

log = Logger()


class SharedDisk:
    """The DiskTier interface ImageService uses; sizes and evictions are the owner's (reported by it)."""

    def __init__(
        self, root: str, budget: int, reactor: IReactorFromThreads, clock: IReactorTime, pool: ThreadPool, claim_timeout: float
    ):
        self._objects = os.path.join(root, "objects")
        self._tmp = os.path.join(root, "tmp")
        self._reactor = reactor
        self._clock = clock
        self._pool = pool
        self.budget = budget
        self.channel: Callable[..., Deferred] | None = None  # callRemote of the supervisor's AMP
        self._writing: dict[bytes, bytes] = {}
        self._purged: set[bytes] = set()  # of the keys being written: purged since, never served
        self._temp_ids = itertools.count()
        self._down_until = 0.0
        self.bytes_used = self.evictions = self.spilled = self.promoted = 0
        self.ready = True
        self._claim_timeout = claim_timeout
        self._wanted: set[bytes] = set()  # claimed keys another worker waits on

    def __contains__(self, key: bytes) -> bool:
        """Unknown here: the file says (a missing one costs an open() in the disk pool)."""
        return True

    def __len__(self) -> int:
        return 0

    @property
    def available(self) -> bool:
        return self._clock.seconds() >= self._down_until

    @property
    def writes_in_flight(self) -> int:
        return len(self._writing)

    def _run(self, work: Callable, *args: object) -> Deferred:
        return deferToThreadPool(self._reactor, self._pool, work, *args)

    def _tell(self, command: type, **arguments: object) -> None:
        if self.channel is not None:
            d = self.channel(command, **arguments)
            if d is not None:  # the channel is gone: the worker is stopping
                d.addErrback(lambda _: None)

    def get(self, key: bytes) -> "Deferred[bytes | None]":
        if key in self._writing:
            return succeed(None if key in self._purged else self._writing[key])
        return self._run(read_entry, entry_path(self._objects, key), key).addCallbacks(self._read, self._read_failed, (key,), errbackArgs=(key,))

    def _read(self, body: bytes, key: bytes) -> bytes:
        self._tell(Touch, key=key)
        return body

    def _read_failed(self, failure: Failure, key: bytes) -> None:
        """
        A corrupt entry, or one whose file is gone, is forgotten: an index still saying
        STORED would send every miss on it to the origin unclaimed, and refuse the new copy.
        """
        if failure.check(diskentry.CorruptEntry):
            self._tell(Forget, key=key)
        else:
            log.warn("disk read of {key} failed: {f}", key=key, f=failure.getErrorMessage())
        return None

    def claim(self, key: bytes) -> "Deferred[Answer]":
        """
        Before reading or fetching an original: it is `stored` on disk, or `fetch` it,
        or another worker that was fetching it sends it (`fetched`, with its bytes), has
        it on `disk` or found it `absent`. Waiting is bounded: past `claim_timeout`,
        fetch. With no supervisor to ask, look on disk (then fetch).
        """
        self._wanted.discard(key)
        d = self.channel(Claim, key=key) if self.channel is not None else None
        if d is None:
            return succeed((STORED, None))
        d.addTimeout(self._claim_timeout, self._clock)
        return d.addCallbacks(lambda answer: (answer["outcome"], answer["body"]), lambda _: (FETCH, None))

    def wanted(self, key: bytes) -> None:
        self._wanted.add(key)

    def release(self, key: bytes, outcome: str, body: bytes | None = None) -> None:
        self._wanted.discard(key)
        self._tell(Release, key=key, outcome=outcome, body=body)

    def share(self, key: bytes, body: bytes) -> None:
        """
        A claimed original just fetched. Workers waiting for it get its bytes at once;
        it is written through too, so that later ones find it on disk. With nobody
        waiting, it is written through first and then released: a worker that claims
        it in between waits for the disk rather than fetching it again.
        """
        if key in self._wanted:
            self.release(key, FETCHED, body)
            self._write(key, body)
            return
        self._write(key, body).addCallback(lambda on_disk: self.release(key, ON_DISK if on_disk else FETCH))

    def put(self, key: bytes, body: bytes) -> None:
        """Spill: ask the owner, then write; skipped while the disk is failing or a write of `key` is in flight."""
        self._write(key, body)

    def _write(self, key: bytes, body: bytes) -> "Deferred[bool]":
        """True once the entry is on disk (written now, or already there)."""
        if self.channel is None or not self.available or key in self._writing:
            return succeed(False)
        self._writing[key] = body
        d = self.channel(Reserve, key=key, size=diskentry.entry_size(key, len(body)))
        return d.addCallback(self._reserved, key).addErrback(self._failed, key)

    def _reserved(self, answer: dict, key: bytes) -> "Deferred[bool] | bool":
        if key in self._purged and answer["write"]:
            self._tell(Written, key=key, ok=False)
        if not answer["write"] or key in self._purged:
            self._forget_write(key)
            return False
        temp = os.path.join(self._tmp, f"{diskentry.file_name(key)}.{os.getpid()}.{next(self._temp_ids)}.tmp")
        d = self._run(write_entry, entry_path(self._objects, key), temp, key, self._writing[key])
        return d.addCallback(self._written, key)

    def _written(self, _: None, key: bytes) -> bool:
        self._forget_write(key)
        self._tell(Written, key=key, ok=True)
        if self._down_until:
            log.info("disk tier writable again: spilling resumes")
            self._down_until = 0.0
        return True

    def _forget_write(self, key: bytes) -> None:
        del self._writing[key]
        self._purged.discard(key)

    def _failed(self, failure: Failure, key: bytes) -> bool:
        self._writing.pop(key, None)
        self._purged.discard(key)
        self._tell(Written, key=key, ok=False)
        if not self._down_until or self.available:
            log.warn("disk tier failing ({f}): memory only for {s:g}s", f=failure.getErrorMessage(), s=RETRY_SECONDS)
        self._down_until = self._clock.seconds() + RETRY_SECONDS
        return False

    def purge(self, prefix: bytes) -> list[bytes]:
        """
        The owner purges the files and the index, and deletes what a worker is writing
        once it lands. Here a write of a purged key still in flight is no longer served
        (it was, from its buffer, and went back into memory: a taken-down variant served
        on) and, while its reservation is not back, is not written at all.
        """
        self._purged.update(key for key in self._writing if key.startswith(prefix))
        return []
