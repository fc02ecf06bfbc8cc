"""
The token maps in force: the current one and, while shards are being split, the
previous one. SIGHUP reads `[shards] tokenmap` and `previous` from the configuration
file again and swaps both maps at once, and only if the section and both files are
valid: a broken one is refused with a log line and the maps already in force stay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from edgeproxy.config import ConfigError, ShardsConfig, load_shards
from edgeproxy.tokenmap import TokenMap

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
    """
    The paths are read from the config file on every reload, not kept from start-up:
    resharding edits them (README), and adds a previous map where there was none.
    Reads are on a thread pool: SIGHUP must not stall the reactor on a slow disk.
    """

    def __init__(
        self, config_path: str, maps: ShardMaps, reactor: IReactorFromThreads, pool: ThreadPool, swapped: Callable[[], object]
    ):
        """`swapped` is called in the same turn as a swap, so nothing answers from the old maps' 404s after it."""
        self.maps = maps
        self._config_path = config_path
        self._swapped = swapped
        self._reactor = reactor
        self._pool = pool

    def reload(self) -> "Deferred[bool]":
        d = deferToThreadPool(self._reactor, self._pool, load_shards, self._config_path)
        return d.addCallbacks(self._swap, self._refused)

    def _swap(self, shards: ShardsConfig) -> bool:
        self.maps = ShardMaps(shards.tokenmap, shards.previous)
        self._swapped()
        log.info(
            "token map reloaded: {n} pairs from {current}, previous map {previous}",
            n=len(shards.tokenmap.pairs), current=shards.tokenmap_path, previous=shards.previous_path or "none",
        )
        return True

    def _refused(self, failure: Failure) -> bool:
        failure.trap(ConfigError)
        log.error("token map reload refused, the old maps stay: {why}", why=failure.getErrorMessage())
        return False
