"""
The disk tier: objects evicted from memory spill here, within a byte budget. An
in-memory index answers "is it on disk?" without touching the directory; reads,
writes and deletes run in the disk thread pool, never on the reactor thread.

Durability policy: writes go to a temp file that is renamed into place, without
fsync. A crash or power loss can lose recent entries or leave torn files; every
read checks key, length and checksum, so such a file is a miss (deleted, logged,
refetched), never a corrupt image. Losing a cache entry is cheap; an fsync per
object is not.
"""

from __future__ import annotations

import itertools
import os
import stat
from typing import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from edgeproxy import diskentry
from edgeproxy.claims import FETCH, STORED, Answer
from edgeproxy.eviction import make_policy

log = Logger()
RETRY_SECONDS = 30.0
_NAME_LENGTH = 64
_HEX = frozenset("0123456789abcdef")


class DiskTier:
    def __init__(
        self,
        root: str,
        budget: int,
        reactor: IReactorFromThreads,
        clock: IReactorTime,
        pool: ThreadPool,
        policy: str,
    ):
        self._objects = os.path.join(root, "objects")
        self._tmp = os.path.join(root, "tmp")
        self._reactor = reactor
        self._clock = clock
        self._pool = pool
        self._index = make_policy(policy, budget, _entry_size, self._evicted)
        self._down_until = 0.0
        self._ready = False
        self._purged_early: list[bytes] = []
        self._writing: dict[bytes, tuple[bytes, int]] = {}  # body, and how many writes of it are queued
        self._temp_ids = itertools.count()
        self._mutations: Deferred[None] = succeed(None)
        self.spilled = 0
        self.promoted = 0
        self.evictions = 0

    def _run(self, work: Callable, *args: object) -> Deferred:
        return deferToThreadPool(self._reactor, self._pool, work, *args)

    def _mutate(self, work: Callable, *args: object) -> Deferred:
        """Writes and deletes run one at a time, in order: a delete never lands after a newer write."""
        done: Deferred = Deferred()
        self._mutations.addCallback(lambda _: self._run(work, *args).addBoth(_settle, done))
        return done

    def start(self) -> Deferred:
        """Rebuild the index from what a previous run left; serving need not wait for it."""
        return self._run(self._scan).addCallbacks(self._indexed, self._scan_failed)

    def __contains__(self, key: bytes) -> bool:
        return key in self._index

    @property
    def bytes_used(self) -> int:
        return self._index.currsize

    @property
    def budget(self) -> int:
        return self._index.maxsize

    def __len__(self) -> int:
        return len(self._index)

    @property
    def ready(self) -> bool:
        """False while the start-up scan runs: spills are skipped until then."""
        return self._ready

    @property
    def writes_in_flight(self) -> int:
        return len(self._writing)

    @property
    def available(self) -> bool:
        return self._clock.seconds() >= self._down_until

    def get(self, key: bytes) -> "Deferred[bytes | None]":
        """The body stored for `key`, or None if it is gone or does not verify."""
        if self._index.get(key) is None:
            return succeed(None)
        if key in self._writing:
            return succeed(self._writing[key][0])
        return self._run(self._read, key).addErrback(self._read_failed, key)

    def put(self, key: bytes, body: bytes) -> None:
        """
        Spill an object; skipped until the start-up scan is done and while the disk is
        failing (retried after RETRY_SECONDS). Every write and delete is queued in the
        order the index changed, so the files never hold more than the budget plus the
        one entry being written.
        """
        size = diskentry.entry_size(key, len(body))
        if not (self._ready and self.available) or key in self._index or size > self._index.maxsize:
            return
        self._index[key] = size
        self.spilled += 1
        self._writing[key] = body, self._writing.get(key, (b"", 0))[1] + 1
        temp = os.path.join(self._tmp, f"{diskentry.file_name(key)}.{os.getpid()}.{next(self._temp_ids)}.tmp")
        d = self._mutate(self._write, key, body, temp)
        d.addCallbacks(self._written, self._write_failed, callbackArgs=(key,), errbackArgs=(key,))

    def claim(self, key: bytes) -> "Deferred[Answer]":
        """One process: its own SingleFlight already collapses every miss (edgeproxy.claims is for workers)."""
        return succeed((STORED if key in self._index else FETCH, None))

    def release(self, key: bytes, outcome: str) -> None:
        """Nothing waits on another process here."""

    def share(self, key: bytes, body: bytes) -> None:
        """Nothing to share: an original reaches the disk when memory evicts it."""

    def purge(self, prefix: bytes) -> list[bytes]:
        """Drop every entry whose key starts with `prefix`; says which (later, too, if still indexing)."""
        if not self._ready:
            self._purged_early.append(prefix)
        keys = [key for key in self._index if key.startswith(prefix)]
        for key in keys:
            self._index.pop(key)
            self._delete(key)
        return keys

    def _evicted(self, key: bytes, size: int) -> None:
        self.evictions += 1
        self._delete(key)

    def _delete(self, key: bytes) -> None:
        self._mutate(_unlink, self._path(key)).addErrback(lambda f: log.warn("disk delete failed: {f}", f=f.getErrorMessage()))

    def _path(self, key: bytes) -> str:
        return entry_path(self._objects, key)

    def _read(self, key: bytes) -> bytes | None:
        return read_entry(self._path(key), key)

    def _read_failed(self, failure: Failure, key: bytes) -> None:
        self._index.pop(key)
        if not failure.check(diskentry.CorruptEntry):
            log.warn("disk read of {key} failed: {f}", key=key, f=failure.getErrorMessage())
        return None

    def _write(self, key: bytes, body: bytes, temp: str) -> None:
        write_entry(self._path(key), temp, key, body)

    def _written(self, _: None, key: bytes) -> None:
        self._write_done(key)
        if self._down_until:
            log.info("disk tier writable again: spilling resumes")
            self._down_until = 0.0

    def _write_done(self, key: bytes) -> None:
        body, queued = self._writing[key]
        if queued > 1:
            self._writing[key] = body, queued - 1
        else:
            del self._writing[key]

    def _write_failed(self, failure: Failure, key: bytes | None = None) -> None:
        """
        The entry goes from the index, unless a newer spill of `key` is still queued: the
        index entry is that one's (evicted and spilled again while this write waited), and
        popping it left its file on disk uncounted.
        """
        if key is not None:
            newer_queued = self._writing[key][1] > 1
            self._write_done(key)
            if not newer_queued:
                self._index.pop(key, None)
        if not self._down_until or self.available:
            log.warn("disk tier failing ({f}): memory only for {s:g}s", f=failure.getErrorMessage(), s=RETRY_SECONDS)
        self._down_until = self._clock.seconds() + RETRY_SECONDS

    def _scan_failed(self, failure: Failure) -> None:
        log.warn("disk tier unusable ({f}): memory only, retrying in {s:g}s", f=failure.getErrorMessage(), s=RETRY_SECONDS)
        self._clock.callLater(RETRY_SECONDS, self.start)

    def _scan(self) -> list[tuple[float, bytes, int]]:
        """Runs in a thread: clear temp files, and list the intact-looking entries, oldest first."""
        os.makedirs(self._objects, exist_ok=True)
        os.makedirs(self._tmp, exist_ok=True)
        for entry in os.scandir(self._tmp):
            if entry.is_file(follow_symlinks=False):
                _unlink(entry.path)
        return sorted(item for item in map(_inspect, _entry_files(self._objects)) if item is not None)

    def _indexed(self, found: list[tuple[float, bytes, int]]) -> None:
        purged = tuple(self._purged_early)
        for _, key, size in found:
            if purged and key.startswith(purged):
                self._delete(key)
            elif size <= self._index.maxsize:
                self._index[key] = size
        self._ready = True
        self._purged_early.clear()
        log.info("disk tier indexed {n} entries, {b} bytes", n=len(self._index), b=self._index.currsize)


def entry_path(objects: str, key: bytes) -> str:
    """`objects/xx/<sha256 of key>`."""
    name = diskentry.file_name(key)
    return os.path.join(objects, name[:2], name)


def read_entry(path: str, key: bytes) -> bytes:
    """Runs in a thread: the verified body; a corrupt file is deleted and raises CorruptEntry."""
    try:
        data = _read_regular_file(path)
        return diskentry.decode(data, key)
    except diskentry.CorruptEntry as problem:
        log.warn("disk entry {path} is corrupt ({problem}): deleted, will refetch", path=path, problem=str(problem))
        _unlink(path)
        raise
    except FileNotFoundError:
        raise diskentry.CorruptEntry("file is gone") from None


def write_entry(path: str, temp: str, key: bytes, body: bytes) -> None:
    """Runs in a thread: write to `temp`, then rename into place (atomic, no fsync)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with open(temp, "wb") as handle:
            handle.write(diskentry.encode(key, body))
        os.replace(temp, path)
    except BaseException:
        _unlink(temp)
        raise


def _settle(result: object, done: Deferred) -> None:
    """Hand a mutation's result to its caller; the queue itself goes on either way."""
    done.callback(result) if not isinstance(result, Failure) else done.errback(result)


def _entry_size(size: int) -> int:
    return size


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _read_regular_file(path: str) -> bytes:
    """Read a file only if it is a regular file: a symlink planted in the cache is never followed."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a planted FIFO must not block
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise diskentry.CorruptEntry("not a regular file")
        return handle.read()


def _entry_files(objects: str) -> list[os.DirEntry]:
    files = []
    for folder in os.scandir(objects):
        if folder.is_dir(follow_symlinks=False) and len(folder.name) == 2:
            files.extend(e for e in os.scandir(folder.path) if _is_entry_name(e))
    return files


def _is_entry_name(entry: os.DirEntry) -> bool:
    return len(entry.name) == _NAME_LENGTH and set(entry.name) <= _HEX and entry.is_file(follow_symlinks=False)


def _inspect(entry: os.DirEntry) -> tuple[float, bytes, int] | None:
    """(mtime, key, size) of an entry whose header and length look right; a torn one is deleted."""
    try:
        with open(entry.path, "rb") as handle:
            key, body_length, _ = diskentry.read_header(handle.read(diskentry.HEADER.size + diskentry.MAX_KEY))
        info = entry.stat(follow_symlinks=False)
    except diskentry.CorruptEntry:
        return _discard(entry, "bad header")
    except OSError:
        return None
    size = diskentry.entry_size(key, body_length)
    if info.st_size != size or diskentry.file_name(key) != entry.name:
        return _discard(entry, "length or name does not match its header")
    return info.st_mtime, key, size


def _discard(entry: os.DirEntry, why: str) -> None:
    log.warn("disk entry {path}: {why}: deleted", path=entry.path, why=why)
    _unlink(entry.path)
    return None
