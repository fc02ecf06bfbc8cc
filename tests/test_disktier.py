"""The disk tier on real files, with a real thread pool; corruption and failures done for real."""

import os
import random
import threading

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from twisted.python.threadpool import ThreadPool

from edgeproxy import diskentry
from edgeproxy.claims import FETCH, STORED
from edgeproxy.disktier import RETRY_SECONDS, DiskTier


@pytest.fixture
def pool():
    threads = ThreadPool(minthreads=1, maxthreads=4, name="test-disk")
    threads.start()
    yield threads
    threads.stop()


def tier(root, pool, budget=1 << 20, clock=None) -> DiskTier:
    return DiskTier(str(root), budget, reactor, clock or Clock(), pool, "s3fifo")


async def settle(disk: DiskTier) -> None:
    """Wait for spills to land (they run in the pool)."""
    for _ in range(500):
        if disk.writes_in_flight == 0:
            await deferLater(reactor, 0.01, lambda: None)
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("writes did not finish")


def files_on_disk(root) -> dict[str, int]:
    found = {}
    for folder, _, names in os.walk(os.path.join(root, "objects")):
        for name in names:
            path = os.path.join(folder, name)
            try:
                if not os.path.islink(path):
                    found[path] = os.path.getsize(path)
            except FileNotFoundError:
                pass  # deleted by the disk pool while we walked
    return found


def path_of(root, key: bytes) -> str:
    name = diskentry.file_name(key)
    return os.path.join(root, "objects", name[:2], name)


@pytest_twisted.ensureDeferred
async def test_put_get_and_a_restart_serves_what_was_written(tmp_path, pool):
    disk = tier(tmp_path, pool)
    await disk.start()
    disk.put(b"k1.jpg", b"body one")
    assert await disk.get(b"k1.jpg") == b"body one"  # answered while the write is in flight
    await settle(disk)
    assert await disk.get(b"k1.jpg") == b"body one"
    assert os.path.exists(path_of(tmp_path, b"k1.jpg"))
    again = tier(tmp_path, pool)
    await again.start()
    assert b"k1.jpg" in again
    assert await again.get(b"k1.jpg") == b"body one"
    assert await again.claim(b"k1.jpg") == (STORED, None) and await again.claim(b"k2.jpg") == (FETCH, None)


@pytest_twisted.ensureDeferred
async def test_budget_is_never_exceeded_over_a_long_random_workload(tmp_path, pool):
    budget = 200_000
    disk = tier(tmp_path, pool, budget)
    await disk.start()
    rng = random.Random(7)
    largest = 0
    for i in range(600):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(100, 9000)))
        largest = max(largest, diskentry.entry_size(b"k%d" % i, len(body)))
        disk.put(b"k%d" % rng.randrange(300), body)
        assert disk.bytes_used <= budget
        if i % 50 == 0:
            while disk.writes_in_flight:  # watch the files while the queued writes and deletes land
                assert sum(files_on_disk(tmp_path).values()) <= budget + largest
                await deferLater(reactor, 0.001, lambda: None)
    await settle(disk)
    await deferLater(reactor, 0.2, lambda: None)
    assert sum(files_on_disk(tmp_path).values()) <= budget
    assert sum(files_on_disk(tmp_path).values()) == disk.bytes_used
    assert disk.spilled > len(disk)


@pytest.mark.parametrize("damage", ["truncate", "flip", "swap", "empty", "symlink"])
@pytest_twisted.ensureDeferred
async def test_a_damaged_entry_is_a_miss_and_is_deleted(tmp_path, pool, damage):
    disk = tier(tmp_path, pool)
    await disk.start()
    disk.put(b"a.jpg", b"A" * 5000)
    disk.put(b"b.jpg", b"B" * 5000)
    await settle(disk)
    a, b = path_of(tmp_path, b"a.jpg"), path_of(tmp_path, b"b.jpg")
    if damage == "truncate":
        os.truncate(a, 3000)
    elif damage == "flip":
        data = bytearray(open(a, "rb").read())
        data[-100] ^= 0x01
        open(a, "wb").write(bytes(data))
    elif damage == "swap":
        os.rename(a, a + ".x")
        os.rename(b, a)
        os.rename(a + ".x", b)
    elif damage == "empty":
        open(a, "wb").close()
    else:
        target = tmp_path / "secret"
        target.write_bytes(open(a, "rb").read())
        os.unlink(a)
        os.symlink(target, a)
    assert await disk.get(b"a.jpg") is None
    assert b"a.jpg" not in disk
    assert not os.path.lexists(a) or damage == "symlink"


@pytest_twisted.ensureDeferred
async def test_restart_removes_temp_files_and_torn_entries_and_ignores_foreign_files(tmp_path, pool):
    disk = tier(tmp_path, pool)
    await disk.start()
    disk.put(b"good.jpg", b"G" * 1000)
    disk.put(b"torn.jpg", b"T" * 1000)
    await settle(disk)
    os.truncate(path_of(tmp_path, b"torn.jpg"), 500)
    leftover = tmp_path / "tmp" / "deadbeef.123.tmp"
    leftover.write_bytes(b"half a write")
    foreign = tmp_path / "objects" / "README"
    foreign.write_text("not ours")
    link = tmp_path / "objects" / "ab"
    os.symlink("/etc", link)
    again = tier(tmp_path, pool)
    await again.start()
    assert b"good.jpg" in again and b"torn.jpg" not in again
    assert not leftover.exists()
    assert not os.path.exists(path_of(tmp_path, b"torn.jpg"))
    assert foreign.exists() and os.path.islink(link)
    assert len(again) == 1


@pytest_twisted.ensureDeferred
async def test_purge_removes_every_key_of_a_hash(tmp_path, pool):
    disk = tier(tmp_path, pool)
    await disk.start()
    for key in (b"abc.jpg", b"abc/320x0-inside.webp", b"abd.jpg"):
        disk.put(key, b"x" * 100)
    await settle(disk)
    assert sorted(disk.purge(b"abc")) == [b"abc.jpg", b"abc/320x0-inside.webp"]
    await deferLater(reactor, 0.1, lambda: None)
    assert list(disk._index) == [b"abd.jpg"]
    assert len(files_on_disk(tmp_path)) == 1


@pytest_twisted.ensureDeferred
async def test_write_failures_degrade_to_memory_only_and_recover(tmp_path, pool):
    clock = Clock()
    disk = tier(tmp_path, pool, clock=clock)
    await disk.start()
    os.rmdir(tmp_path / "tmp")
    (tmp_path / "tmp").write_text("a file where the temp folder should be")  # every write now fails
    disk.put(b"a.jpg", b"A" * 100)
    await settle(disk)
    assert b"a.jpg" not in disk and not disk.available
    disk.put(b"b.jpg", b"B" * 100)
    assert b"b.jpg" not in disk and disk.writes_in_flight == 0
    os.unlink(tmp_path / "tmp")
    os.mkdir(tmp_path / "tmp")
    clock.advance(RETRY_SECONDS)
    assert disk.available
    disk.put(b"c.jpg", b"C" * 100)
    await settle(disk)
    assert await disk.get(b"c.jpg") == b"C" * 100


@pytest_twisted.ensureDeferred
async def test_evicted_then_spilled_again_while_its_write_is_in_flight(tmp_path, pool):
    """The in-flight write is reused: index and files agree, no error, nothing untracked."""
    failures = []
    observer = lambda event: failures.append(event) if "log_failure" in event else None  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        disk = tier(tmp_path, pool, budget=3 * (diskentry.HEADER.size + 6 + 40_000))
        await disk.start()
        for round in range(30):
            disk.put(b"k1.jpg", b"1" * 40_000)
            for other in range(3):
                disk.put(b"o%d-%d.jpg" % (round, other), b"o" * 40_000)  # evicts k1, maybe mid-write
            disk.put(b"k1.jpg", b"1" * 40_000)
        await settle(disk)
        await deferLater(reactor, 0.2, lambda: None)
        on_disk = {os.path.basename(p) for p in files_on_disk(tmp_path)}
        assert on_disk == {diskentry.file_name(k) for k in disk._index}
        assert sum(files_on_disk(tmp_path).values()) == disk.bytes_used
        assert failures == []
    finally:
        globalLogPublisher.removeObserver(observer)


@pytest_twisted.ensureDeferred
async def test_a_failed_write_leaves_the_index_entry_of_a_newer_spill_of_the_same_key(tmp_path, pool):
    """
    k1 is spilled, evicted and spilled again while its first write still waits, and that
    first write fails (its temp path is a directory; in production, a full disk the
    eviction's delete then relieves). The failure dropped the index entry of the second
    spill, whose file then landed uncounted: the disk held more than its budget.
    """
    size = diskentry.entry_size(b"k1.jpg", 40_000)
    disk = tier(tmp_path, pool, budget=3 * size)
    await disk.start()
    os.mkdir(tmp_path / "tmp" / f"{diskentry.file_name(b'k1.jpg')}.{os.getpid()}.0.tmp")  # the first write's temp file
    gate = threading.Event()
    try:
        for _ in range(4):  # every disk pool thread busy: the writes queue up
            pool.callInThread(gate.wait)
        disk.put(b"k1.jpg", b"1" * 40_000)
        for other in range(3):
            disk.put(b"o%d.jpg" % other, b"o" * 40_000)  # evicts k1 while its write is queued
        disk.put(b"k1.jpg", b"1" * 40_000)
    finally:
        gate.set()
    await settle(disk)
    await deferLater(reactor, 0.2, lambda: None)
    assert b"k1.jpg" in disk
    assert {os.path.basename(p) for p in files_on_disk(tmp_path)} == {diskentry.file_name(k) for k in disk._index}
    assert sum(files_on_disk(tmp_path).values()) == disk.bytes_used


@pytest_twisted.ensureDeferred
async def test_no_spill_before_the_scan_and_a_purge_during_the_scan_holds(tmp_path, pool):
    first = tier(tmp_path, pool)
    await first.start()
    first.put(b"abc.jpg", b"x" * 100)
    await settle(first)
    again = tier(tmp_path, pool)
    again.put(b"early.jpg", b"y" * 100)  # before start(): the scan would delete its temp file
    scan = again.start()
    assert again.purge(b"abc") == []
    await scan
    assert b"abc.jpg" not in again and b"early.jpg" not in again
    await deferLater(reactor, 0.1, lambda: None)
    assert files_on_disk(tmp_path) == {}


@pytest_twisted.ensureDeferred
async def test_a_fifo_planted_as_an_entry_does_not_block_the_pool(tmp_path, pool):
    disk = tier(tmp_path, pool)
    await disk.start()
    disk.put(b"a.jpg", b"A" * 100)
    await settle(disk)
    path = path_of(tmp_path, b"a.jpg")
    os.unlink(path)
    os.mkfifo(path)
    assert await disk.get(b"a.jpg") is None
