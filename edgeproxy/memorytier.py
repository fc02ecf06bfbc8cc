"""
The memory tier: an LRU bounded by bytes. It is the first place a request looks,
so `get` is a single dictionary lookup plus LRU bookkeeping.
"""

from __future__ import annotations

from cachetools import LRUCache

from edgeproxy.cachedobject import CachedObject


def _object_size(obj: CachedObject) -> int:
    return obj.size


class MemoryTier:
    """Never holds more than `budget` bytes; objects over `max_object` are served, not kept."""

    def __init__(self, budget: int, max_object: int):
        self._lru: LRUCache[bytes, CachedObject] = LRUCache(maxsize=budget, getsizeof=_object_size)
        self.max_object = min(max_object, budget)
        self.get = self._lru.get

    def put(self, key: bytes, obj: CachedObject) -> bool:
        """Keep `obj` if it fits the per-object limit; says whether it was kept."""
        if obj.size > self.max_object:
            return False
        self._lru[key] = obj
        return True

    @property
    def bytes_used(self) -> int:
        return int(self._lru.currsize)

    @property
    def budget(self) -> int:
        return int(self._lru.maxsize)

    def __len__(self) -> int:
        return len(self._lru)
