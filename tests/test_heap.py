"""
Process memory: the start-up heap is frozen (later full collections walk only what was
made since), and every thread of a running twistd shares glibc's one malloc arena.
"""

import gc

import pytest_twisted

from edgeproxy.heap import freeze_startup_heap
from tests.configs import SAMPLES, write_config
from tests.edge import Edge
from tests.twistd import Twistd

SAMPLE = "a6fc62329945ddc6aa13a641fe0a90d0885d04a4"
ARENA_HEAP = 64 << 20  # glibc's HEAP_MAX_SIZE on 64 bits: each arena but the main one is such a mapping


@pytest_twisted.ensureDeferred
async def test_a_frozen_startup_heap_is_left_out_of_full_collections(tmp_path):
    edge = Edge(tmp_path)
    try:
        gc.collect()
        walked_before = len(gc.get_objects(generation=2))
        freeze_startup_heap()
        try:
            assert walked_before > 10_000 and gc.get_freeze_count() > walked_before / 2
            assert len(gc.get_objects(generation=2)) < walked_before / 10
        finally:
            gc.unfreeze()
    finally:
        await edge.stop()


def arena_heaps(pid: int) -> int:
    """glibc arenas beyond the main one: anonymous mappings aligned to and spanning 64 MiB (a used part, then a reserved one)."""
    regions = []
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            regions.append((start, end, len(fields) == 5))
    return sum(
        1 for (start, end, anonymous), (_, after, reserved) in zip(regions, regions[1:])
        if anonymous and reserved and start % ARENA_HEAP == 0 and after - start == ARENA_HEAP
    )


def test_a_running_proxy_s_threads_share_one_malloc_arena(tmp_path):
    """
    Disk reads, spills and renders run in threads; each had an arena of its own, keeping
    what it freed: one process soaked with a 64 MiB memory tier held 232 MB of RSS, 163 MB
    with one arena.
    """
    size = (SAMPLES / f"{SAMPLE}.jpg").stat().st_size
    changes = {("resize", "render_mode"): "threads", ("resize", "presets"): "small=64x0", ("cache", "max_object_bytes"): str(size // 2)}
    proxy = Twistd(write_config(tmp_path, changes), tmp_path)
    try:
        for path in (f"/{SAMPLE}.jpg", f"/{SAMPLE}.jpg", f"/{SAMPLE}/small.jpg"):  # spilled, read from disk, rendered
            assert proxy.get(path)[0] == 200
        assert arena_heaps(proxy.process.pid) == 0
    finally:
        proxy.stop()
