"""
The most-missed keys in bounded memory (Space-Saving, Metwally et al. 2005): a POP
sees millions of distinct names, and the status page only needs the heavy ones.
"""

from __future__ import annotations

from collections.abc import Hashable


class TopKeys:
    """Counts are upper bounds, exact for any key seen more often than total/capacity."""

    def __init__(self, capacity: int = 64):
        self._capacity = capacity
        self._counts: dict[Hashable, int] = {}

    def add(self, key: Hashable) -> None:
        counts = self._counts
        if key in counts:
            counts[key] += 1
        elif len(counts) < self._capacity:
            counts[key] = 1
        else:
            smallest = min(counts, key=counts.__getitem__)
            counts[key] = counts.pop(smallest) + 1

    def top(self, n: int) -> list[tuple[Hashable, int]]:
        return sorted(self._counts.items(), key=lambda item: item[1], reverse=True)[:n]
