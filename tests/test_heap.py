"""The start-up heap is frozen: later full collections walk only what was made since."""

import gc

import pytest_twisted

from edgeproxy.heap import freeze_startup_heap
from tests.edge import Edge


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
