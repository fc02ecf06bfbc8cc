"""
The memory tier: a map bounded by bytes under a chosen eviction policy. It is the
first place a request looks, so `get` is the policy's own lookup, bound once.
"""

from __future__ import annotations

from typing import Callable

from edgeproxy.cachedobject import CachedObject
from edgeproxy.eviction import make_policy

OnEvict = Callable[[bytes, CachedObject], None]


def _object_size(obj: CachedObject) -> int:
    return obj.size


class MemoryTier:
    """Never holds more than `budget` bytes; objects over `max_object` are served, not kept."""

    def __init__(self, budget: int, max_object: int, policy: str, on_evict: OnEvict):
        """`on_evict` receives what the policy pushes out (the disk tier spills it)."""
        self._on_evict = on_evict
        self._objects = make_policy(policy, budget, _object_size, self._evicted)
        self.max_object = min(max_object, budget)
        self.get = self._objects.get
        self.evictions = 0

    @property
    def bytes_used(self) -> int:
        return self._objects.currsize

    @property
    def budget(self) -> int:
        return self._objects.maxsize

    def _evicted(self, key: bytes, obj: CachedObject) -> None:
        self.evictions += 1
        self._on_evict(key, obj)

    def put(self, key: bytes, obj: CachedObject) -> bool:
        """Keep `obj` if it fits the per-object limit; says whether it was kept."""
        if obj.size > self.max_object:
            return False
        self._objects[key] = obj
        return True

    def purge(self, prefix: bytes) -> list[bytes]:
        """Drop every object whose key starts with `prefix`; says which."""
        keys = [key for key in self._objects if key.startswith(prefix)]
        for key in keys:
            self._objects.pop(key)
        return keys

    def __len__(self) -> int:
        return len(self._objects)
