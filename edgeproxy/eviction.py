"""
Byte-bounded eviction policies for the memory and disk tiers.

Why not plain LRU: a photo CDN sees many objects exactly once (thumbnails of
photos nobody opens again, crawlers, one-off variants). Under LRU each of those
one-hit wonders is inserted at the head and pushes a popular object out before
it ages away. S3-FIFO and SIEVE are scan resistant: a new object has to be
requested again soon after it arrives to stay long, so a burst of one-time
requests passes through without flushing the hot set. Both are also cheaper on a
hit than LRU: a hit only sets a counter or a bit, it never reorders a list.

Every policy is a mapping bounded by the total `getsizeof(value)` of its values:

- `get(key, default)` counts as an access; `in` does not.
- `cache[key] = value` inserts or replaces, evicting first so that `currsize`
  never exceeds `maxsize`; `on_evict(key, value)` is called for each entry the
  policy evicts. A value larger than `maxsize` raises `ValueError`. A replaced
  value is not reported to `on_evict`: it is the caller that dropped it.
- `pop(key, default)` removes without calling `on_evict` (purges).

`make_policy(name, ...)` builds one of `POLICIES` by name.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Generic, Hashable, Iterator, Protocol, TypeVar

from cachetools import LRUCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Sizer = Callable[[V], int]
EvictCallback = Callable[[K, V], None]


def _ignore(key: object, value: object) -> None:
    """The default `on_evict`: saves an `is None` test on every eviction."""


def _checked_size(size: int, maxsize: int) -> int:
    """The size of a value about to be stored, or `ValueError` as cachetools does."""
    if size > maxsize:
        raise ValueError("value too large")
    if size < 0:
        raise ValueError("value size must be non-negative")
    return size


class EvictionPolicy(Protocol[K, V]):
    """The interface every policy in `POLICIES` has."""

    def get(self, key: K, default: V | None = None) -> V | None: ...

    def __setitem__(self, key: K, value: V) -> None: ...

    def pop(self, key: K, default: V | None = None) -> V | None: ...

    def __contains__(self, key: object) -> bool: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[K]: ...

    @property
    def currsize(self) -> int: ...

    @property
    def maxsize(self) -> int: ...


class LRUPolicy(LRUCache, Generic[K, V]):
    """Least recently used, the baseline: `cachetools.LRUCache` plus `on_evict`."""

    def __init__(
        self, maxsize: int, getsizeof: Sizer[V], on_evict: EvictCallback[K, V] | None = None
    ):
        super().__init__(maxsize, getsizeof)
        self._on_evict = on_evict or _ignore

    def get(self, key: K, default: V | None = None) -> V | None:
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: K, value: V) -> None:
        _checked_size(self.getsizeof(value), self.maxsize)
        super().pop(key, None)
        super().__setitem__(key, value)

    def pop(self, key: K, default: V | None = None) -> V | None:
        return super().pop(key, default)

    def popitem(self) -> tuple[K, V]:
        key, value = super().popitem()
        self._on_evict(key, value)
        return key, value


class _Entry:
    """One cached value and its policy state."""

    __slots__ = ("key", "value", "size", "freq")

    def __init__(self, key: object, value: object, size: int, freq: int = 0):
        self.key = key
        self.value = value
        self.size = size
        self.freq = freq


class _Node(_Entry):
    """An entry in a circular doubly linked list."""

    __slots__ = ("prev", "next")

    def __init__(self, key: object, value: object, size: int, freq: int = 0):
        super().__init__(key, value, size, freq)
        self.prev = self.next = self


class _EntryPolicy(Generic[K, V]):
    """What S3-FIFO and SIEVE share: a dict of `_Entry` and the byte accounting."""

    def __init__(
        self, maxsize: int, getsizeof: Sizer[V], on_evict: EvictCallback[K, V] | None = None
    ):
        if maxsize < 0:
            raise ValueError("maxsize must be non-negative")
        self._maxsize = maxsize
        self._currsize = 0
        self._getsizeof = getsizeof
        self._on_evict = on_evict or _ignore
        self._entries: dict[K, _Entry] = {}

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def currsize(self) -> int:
        return self._currsize

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(maxsize={self._maxsize}, currsize={self._currsize})"

    def pop(self, key: K, default: V | None = None) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return default
        self._remove(entry)
        return entry.value

    def _add(self, entry: _Entry) -> None:
        self._entries[entry.key] = entry
        self._currsize += entry.size

    def _forget(self, entry: _Entry) -> None:
        del self._entries[entry.key]
        self._currsize -= entry.size

    def _remove(self, entry: _Entry) -> None:
        """Drop `entry` silently (pop, replacement): forget it and unlink it from its queue."""
        raise NotImplementedError


class S3FIFOPolicy(_EntryPolicy[K, V]):
    """
    S3-FIFO (Yang et al., SOSP'23), with sizes in bytes.

    New objects enter a small FIFO holding 10% of the bytes. An object is
    requested again while there moves to the main FIFO; one that is not goes,
    as a bare key, to a ghost FIFO. A missed object still in the ghost was
    evicted too early, so it is inserted straight into main. Main is a FIFO with
    reinsertion: a 2-bit counter (0..3) of hits is decremented instead of
    evicting. Objects are only ever moved between queue ends: O(1) amortized.
    """

    small_ratio = 0.10

    def __init__(
        self, maxsize: int, getsizeof: Sizer[V], on_evict: EvictCallback[K, V] | None = None
    ):
        super().__init__(maxsize, getsizeof, on_evict)
        self._main_cap = maxsize - int(maxsize * self.small_ratio)
        self._small: OrderedDict[K, _Entry] = OrderedDict()
        self._main: OrderedDict[K, _Entry] = OrderedDict()
        self._main_bytes = 0
        self._ghost: OrderedDict[K, None] = OrderedDict()

    def get(self, key: K, default: V | None = None) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return default
        if entry.freq < 3:
            entry.freq += 1
        return entry.value

    def __setitem__(self, key: K, value: V) -> None:
        size = _checked_size(self._getsizeof(value), self._maxsize)
        old = self._entries.get(key)
        if old is None:
            to_main = key in self._ghost
            if to_main:
                del self._ghost[key]
        else:
            to_main = key in self._main
            self._remove(old)
        self._make_room(size)
        entry = _Entry(key, value, size)
        self._add(entry)
        if to_main:
            self._to_main(entry)
        else:
            self._small[key] = entry

    def _to_main(self, entry: _Entry) -> None:
        self._main[entry.key] = entry
        self._main_bytes += entry.size

    def _remove(self, entry: _Entry) -> None:
        self._forget(entry)
        if self._main.pop(entry.key, None) is None:
            del self._small[entry.key]
        else:
            self._main_bytes -= entry.size

    def _make_room(self, size: int) -> None:
        while self._currsize + size > self._maxsize:
            if self._main_bytes > self._main_cap or not self._small:
                self._evict_main()
            else:
                self._evict_small()

    def _evict_small(self) -> None:
        """Promote the oldest small objects that were hit; evict the first one that was not."""
        small = self._small
        while small:
            key, entry = small.popitem(last=False)
            if entry.freq:
                entry.freq = 0
                self._to_main(entry)
            else:
                self._forget(entry)
                self._remember(key)
                self._on_evict(key, entry.value)
                return

    def _evict_main(self) -> None:
        """Reinsert the oldest main objects that were hit, one count less; evict the first not."""
        main = self._main
        while True:
            key, entry = main.popitem(last=False)
            if not entry.freq:
                break
            entry.freq -= 1
            main[key] = entry
        self._main_bytes -= entry.size
        self._forget(entry)
        self._on_evict(key, entry.value)

    def _remember(self, key: K) -> None:
        """Put an evicted key in the ghost, which holds as many keys as main holds objects."""
        ghost = self._ghost
        ghost[key] = None
        while len(ghost) > len(self._main):
            ghost.popitem(last=False)


class SIEVEPolicy(_EntryPolicy[K, V]):
    """
    SIEVE (Zhang et al., NSDI'24), with sizes in bytes.

    One FIFO list, newest at one end, and a hand that walks from the oldest
    object towards the newest, wrapping around. A hit only sets the object's
    visited bit. Evicting clears the bits the hand passes over and removes the
    first object whose bit was already clear; survivors keep their place, so new
    objects, which sit between the hand and the newest end, go first unless hit.
    """

    def __init__(
        self, maxsize: int, getsizeof: Sizer[V], on_evict: EvictCallback[K, V] | None = None
    ):
        super().__init__(maxsize, getsizeof, on_evict)
        self._ring = _Node(None, None, 0)
        self._hand = self._ring

    def get(self, key: K, default: V | None = None) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return default
        entry.freq = 1
        return entry.value

    def __setitem__(self, key: K, value: V) -> None:
        size = _checked_size(self._getsizeof(value), self._maxsize)
        old = self._entries.get(key)
        visited = 0
        if old is not None:
            visited = old.freq
            self._remove(old)
        self._make_room(size)
        node = _Node(key, value, size, visited)
        self._add(node)
        newest = self._ring.prev
        node.prev, node.next = newest, self._ring
        newest.next = self._ring.prev = node

    def _remove(self, entry: _Entry) -> None:
        self._forget(entry)
        if self._hand is entry:
            self._hand = entry.next
        entry.prev.next = entry.next
        entry.next.prev = entry.prev

    def _make_room(self, size: int) -> None:
        while self._currsize + size > self._maxsize:
            self._evict_one()

    def _evict_one(self) -> None:
        ring = self._ring
        node = self._hand
        while node is ring or node.freq:
            node.freq = 0
            node = node.next
        self._hand = node
        self._remove(node)
        self._on_evict(node.key, node.value)


POLICIES: dict[str, type[EvictionPolicy]] = {
    "lru": LRUPolicy,
    "s3fifo": S3FIFOPolicy,
    "sieve": SIEVEPolicy,
}


def make_policy(
    name: str, maxsize: int, getsizeof: Sizer[V], on_evict: EvictCallback[K, V] | None = None
) -> EvictionPolicy[K, V]:
    """The policy called `name` in `POLICIES`; `ValueError` names the known ones otherwise."""
    if name not in POLICIES:
        raise ValueError(f"unknown eviction policy {name!r}; known: {', '.join(POLICIES)}")
    return POLICIES[name](maxsize, getsizeof, on_evict)
