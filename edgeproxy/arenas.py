"""
glibc's malloc arenas. glibc gives each thread that allocates an arena of its own (up
to 8 per CPU) and keeps in each what that thread's allocations free. Here a body read
by a disk pool thread is allocated in that thread's arena and freed, when evicted, by
the reactor thread into the same arena, so each arena keeps its own scattered free
space. One process (--workers 1, render threads) soaked with a 64 MiB memory tier that
filled and evicted: 232 MB of RSS after 120 s with glibc's arenas, 192 MB with two,
163-167 MB with one; CPU per memory hit within the noise (48-67 us against 53-57).
A render process had 5 arenas and held 26-39 MB freed after nine renders, 7-19 MB with
one; fixing the mmap threshold at 128 KiB as well gave back 6-10 MB more but cost 8-12 %
of the renders per second (a page fault for every page of every fresh buffer). Where
malloc is not glibc's there is nothing to set.
"""

from __future__ import annotations

import ctypes

_M_ARENA_MAX = -8  # glibc's mallopt() parameter


def limit_malloc_arenas(count: int) -> None:
    """Before the process starts its threads: those started later share `count` arenas."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_ARENA_MAX, count)
