"""
The token maps in force: the current one and, while shards are being split, the
previous one. SIGHUP swaps both at once, and only if both files are valid: a broken
file is refused with a log line and the maps already in force stay.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from edgeproxy.tokenmap import TokenMap, TokenMapError, load_tokenmap

log = Logger()


@dataclass(frozen=True)
class ShardMaps:
    current: TokenMap
    previous: TokenMap | None = None

    def previous_owner(self, image_hash: str) -> tuple[str, ...] | None:
        """The pair that owned an image before the split, if it was another one."""
        if self.previous is None:
            return None
        owner = self.previous.owner_of_hash(image_hash)
        return None if owner == self.current.owner_of_hash(image_hash) else owner


class ShardMapFiles:
    """Reads are on a thread pool: SIGHUP must not stall the reactor on a slow disk."""

    def __init__(self, current: str, previous: str | None, maps: ShardMaps, reactor: IReactorFromThreads, pool: ThreadPool):
        self.maps = maps
        self._paths = (current, previous)
        self._reactor = reactor
        self._pool = pool

    def reload(self) -> "Deferred[bool]":
        d = deferToThreadPool(self._reactor, self._pool, self._load)
        return d.addCallbacks(self._swap, self._refused)

    def _load(self) -> ShardMaps:
        current, previous = self._paths
        return ShardMaps(load_tokenmap(current), load_tokenmap(previous) if previous else None)

    def _swap(self, maps: ShardMaps) -> bool:
        self.maps = maps
        log.info("token map reloaded: {n} pairs", n=len(maps.current.pairs))
        return True

    def _refused(self, failure: Failure) -> bool:
        failure.trap(TokenMapError)
        log.error("token map reload refused, the old map stays: {why}", why=failure.getErrorMessage())
        return False
