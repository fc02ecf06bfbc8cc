"""
The disk tier shared by workers, in one process on real files: a supervisor-side
DiskOwner that indexes and evicts, and SharedDisk clients that ask it, write and read.
The AMP channel is replaced by direct calls to the owner's responders.
"""

import os
import threading

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from edgeproxy import diskentry
from edgeproxy.diskowner import DiskOwner
from edgeproxy.errors import EdgeError
from edgeproxy.imageservice import AbsentImages, ImageService
from edgeproxy.memorytier import MemoryTier
from edgeproxy.remoterender import SupervisorRenderer
from edgeproxy.renderqueue import RenderQueue
from edgeproxy.shareddisk import SharedDisk
from edgeproxy.supervisor import OwnerProtocol
from edgeproxy.claims import FETCH, STORED
from edgeproxy.workerproto import Claim, Forget, Release, Reserve, Touch, Written
from edgeproxy.urls import Geometry, ImageRequest
from tests.images import name_of, photo
from tests.shards import pair_origin
from tests.test_disktier import files_on_disk, path_of, pool  # noqa: F401 (a fixture)


def channel(owner: OwnerProtocol):
    """callRemote, straight into the owner's responders."""
    responders = {Reserve: owner.reserve, Written: owner.written, Touch: owner.touch, Forget: owner.forget,
                  Claim: owner.claim, Release: owner.release}

    def call(command, **arguments):
        d = maybeDeferred(responders[command], **arguments)
        return d if command.requiresAnswer else None

    return call


async def started(root, pool, budget):  # noqa: F811
    owner = DiskOwner(str(root), budget, reactor, Clock(), pool, "s3fifo")
    await owner.start()
    workers = []
    for index in range(2):
        worker = SharedDisk(str(root), budget, reactor, Clock(), pool, claim_timeout=5.0)
        protocol = OwnerProtocol(owner, index)
        protocol.makeConnection(StringTransport())
        worker.channel = channel(protocol)
        workers.append((worker, protocol))
    return owner, workers


async def landed(*workers) -> None:
    from twisted.internet.task import deferLater

    for _ in range(500):
        await deferLater(reactor, 0.01, lambda: None)
        if not any(w.writes_in_flight for w in workers):
            await deferLater(reactor, 0.05, lambda: None)  # the owner's deletes
            return
    raise AssertionError("writes did not land")


@pytest_twisted.ensureDeferred
async def test_one_workers_spill_is_the_others_hit_and_is_counted_once(tmp_path, pool):  # noqa: F811
    owner, [(a, _), (b, _)] = await started(tmp_path, pool, 1 << 20)
    a.put(b"k.jpg", b"body")
    b.put(b"k.jpg", b"body")  # both spill it at once: one writes, the other is told it is there
    await landed(a, b)
    assert await b.get(b"k.jpg") == b"body"
    assert (len(owner), owner.bytes_used) == (1, diskentry.entry_size(b"k.jpg", 4))
    assert list(files_on_disk(tmp_path).values()) == [owner.bytes_used]


@pytest_twisted.ensureDeferred
async def test_the_budget_holds_for_everything_both_write(tmp_path, pool):  # noqa: F811
    budget = 10 * diskentry.entry_size(b"k00.jpg", 100)
    owner, [(a, _), (b, _)] = await started(tmp_path, pool, budget)
    for n in range(40):
        (a if n % 2 else b).put(b"k%02d.jpg" % n, bytes([n]) * 100)
    await landed(a, b)
    files = files_on_disk(tmp_path)
    assert sum(files.values()) == owner.bytes_used <= budget
    assert len(files) == len(owner) and owner.evictions == 30


@pytest_twisted.ensureDeferred
async def test_a_worker_dying_mid_write_loses_the_entry_and_its_file(tmp_path, pool):  # noqa: F811
    owner, [(a, protocol), _] = await started(tmp_path, pool, 1 << 20)
    assert await owner.reserve(b"k.jpg", 50) is True
    protocol._pending.add(b"k.jpg")
    os.makedirs(os.path.dirname(path_of(tmp_path, b"k.jpg")), exist_ok=True)
    open(path_of(tmp_path, b"k.jpg"), "wb").write(b"x" * 50)  # it renamed, then died before saying so
    protocol.connectionLost(Failure(ConnectionDone()))
    await landed(a)
    assert len(owner) == 0 and files_on_disk(tmp_path) == {}


@pytest_twisted.ensureDeferred
async def test_the_claim_says_an_original_is_stored_once_it_has_landed(tmp_path, pool):  # noqa: F811
    """A worker learns it from the owner's index, without reading the disk first; nothing stays claimed."""
    owner, [(a, _), (b, _)] = await started(tmp_path, pool, 1 << 20)
    assert await a.claim(b"k.jpg") == (FETCH, None)
    a.share(b"k.jpg", b"body")  # written through, then released
    await landed(a)
    assert await b.claim(b"k.jpg") == (STORED, None) and len(owner.claims) == 0
    assert await b.get(b"k.jpg") == b"body"
    assert await owner.reserve(b"w.jpg", 10) is True  # being written: not stored yet, so it is claimed
    assert await b.claim(b"w.jpg") == (FETCH, None) and len(owner.claims) == 1


@pytest_twisted.ensureDeferred
async def test_with_no_supervisor_a_worker_looks_on_disk_itself(tmp_path, pool):  # noqa: F811
    worker = SharedDisk(str(tmp_path), 1 << 20, reactor, Clock(), pool, claim_timeout=5.0)
    assert await worker.claim(b"k.jpg") == (STORED, None)


@pytest_twisted.ensureDeferred
async def test_a_corrupt_entry_is_a_miss_and_forgotten(tmp_path, pool):  # noqa: F811
    owner, [(a, _), (b, _)] = await started(tmp_path, pool, 1 << 20)
    a.put(b"k.jpg", b"body")
    await landed(a)
    flip_last_byte(path_of(tmp_path, b"k.jpg"))
    assert await b.get(b"k.jpg") is None
    assert len(owner) == 0 and files_on_disk(tmp_path) == {}
    assert await b.get(b"missing.jpg") is None


def flip_last_byte(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        handle.write(b"X")


async def stored_original(tmp_path, pool, backends):  # noqa: F811
    """An original on the shared disk and on a loopback shard: the owner, its two workers' disks, the request, the shard, the image."""
    image = photo(seed=5)
    request = ImageRequest(name_of(image), "jpg", None, None, f"{name_of(image)}.jpg".encode())
    shard = backends({f"/{request.key.decode()}": image})
    owner, [(a, _), (b, _)] = await started(tmp_path, pool, 1 << 20)
    a.put(request.key, image)
    await landed(a)
    return owner, a, b, request, shard, image


def worker_images(disk: SharedDisk, clients, shard, absent: AbsentImages | None = None) -> ImageService:
    """A worker's image service over `disk`, with an empty memory tier and the shard as its origin."""
    absent = AbsentImages(60.0, reactor) if absent is None else absent  # an empty one is falsy
    return ImageService(MemoryTier(1 << 20, 1 << 20, "s3fifo", lambda *_: None), disk, pair_origin(clients, [shard]),
                        reactor, SupervisorRenderer(), RenderQueue(1, 1, 1.0), absent)


@pytest_twisted.ensureDeferred
async def test_two_workers_told_a_corrupt_original_is_stored_fetch_it_once(tmp_path, pool, backends, clients):  # noqa: F811
    """Both read the bad file at once; their second claims, not a race, decide which one asks the origin."""
    owner, a, b, request, shard, image = await stored_original(tmp_path, pool, backends)
    flip_last_byte(path_of(tmp_path, request.key))
    fetched = await gatherResults([ensureDeferred(worker_images(disk, clients, shard).fetch(request)) for disk in (a, b)])
    assert [f.obj.body for f in fetched] == [image, image]
    assert shard.hits == 1 and len(owner.claims) == 0
    await landed(a, b)
    assert await b.get(request.key) == image  # the fetched original replaced the corrupt file


@pytest_twisted.ensureDeferred
async def test_an_original_whose_file_is_gone_is_claimed_fetched_and_written_again(tmp_path, pool, backends, clients):  # noqa: F811
    owner, a, b, request, shard, image = await stored_original(tmp_path, pool, backends)
    os.unlink(path_of(tmp_path, request.key))  # an operator or a cleaner removed it; the index still has it
    assert (await worker_images(b, clients, shard).fetch(request)).obj.body == image and shard.hits == 1
    await landed(b)
    assert await a.get(request.key) == image and len(owner) == 1


@pytest_twisted.ensureDeferred
async def test_an_original_purged_while_it_was_on_its_way_never_reaches_the_shared_disk(tmp_path, pool, backends, clients):  # noqa: F811
    """A takedown during the fetch, as the supervisor does it (every worker, then the disk):
    the fetch, landing after, had still been written to the disk and served from it."""
    image = photo(seed=6)
    request = ImageRequest(name_of(image), "jpg", None, None, f"{name_of(image)}.jpg".encode())
    shard = backends({f"/{request.key.decode()}": image})
    shard.set_mode("slow")
    shard.resource.slow_seconds = 0.3
    owner, [(a, _), (b, _)] = await started(tmp_path, pool, 1 << 20)
    first, second = worker_images(a, clients, shard), worker_images(b, clients, shard)
    fetching = ensureDeferred(first.fetch(request))
    waiting = ensureDeferred(second.fetch(request))  # claims behind the first: waits for how it goes
    while shard.hits == 0:
        await deferLater(reactor, 0.01, lambda: None)
    for images in (first, second):
        images.purge(request.image_hash)
    owner.purge(request.image_hash.encode())
    shard.resource.files.clear()  # gone from the origin too
    assert (await fetching).obj.body == image  # its own waiters still get their answer
    with pytest.raises(EdgeError) as refused:
        await waiting  # told to fetch for itself, it finds nothing
    assert refused.value.status == 404
    await landed(a, b)
    assert len(owner) == 0 and not os.path.exists(path_of(tmp_path, request.key))
    assert (await first.fetch(request).addErrback(lambda f: f.value.status)) == 404


@pytest_twisted.ensureDeferred
async def test_an_original_read_from_disk_as_it_is_purged_is_not_kept_in_memory(tmp_path, pool, backends, clients):  # noqa: F811
    """The read waits for a disk pool thread; the purge comes meanwhile. Its waiter still
    gets the image, but memory must not keep what the purge dropped."""
    owner, a, b, request, shard, image = await stored_original(tmp_path, pool, backends)
    images = worker_images(b, clients, shard)
    gate = threading.Event()
    try:
        for _ in range(4):  # every thread of the disk pool busy
            pool.callInThread(gate.wait)
        fetching = ensureDeferred(images.fetch(request))  # told STORED; its read waits for a thread
        await deferLater(reactor, 0.05, lambda: None)
        images.purge(request.image_hash)
    finally:
        gate.set()
    fetched = await fetching
    assert (fetched.x_cache, fetched.obj.body) == (b"HIT-DISK", image)
    assert images.memory.get(request.key) is None and shard.hits == 0


@pytest_twisted.ensureDeferred
async def test_a_variant_being_spilled_when_it_is_purged_is_not_served_after_the_purge(tmp_path, pool, backends, clients):  # noqa: F811
    """
    Worker a spills a variant, and the image is purged (every worker, then the disk, as
    the supervisor does) while the write waits for the disk pool. a's next request for it
    was answered HIT-DISK from the write's buffer and put back in memory: the taken-down
    variant served on. Its write is dropped too, so nothing reaches the disk.
    """
    original = photo(seed=42)
    name = name_of(original)
    geometry = Geometry(64, 0)
    request = ImageRequest(name, "jpg", geometry, "jpg", f"{name}/{geometry}.jpg".encode())
    shard = backends({})  # taken down at the origin too
    owner, [(a, _), (b, _)] = await started(tmp_path, pool, 1 << 20)
    images = worker_images(a, clients, shard)
    gate = threading.Event()
    try:
        for _ in range(4):  # every disk pool thread busy: the spill's reservation waits
            pool.callInThread(gate.wait)
        a.put(request.key, photo(64, 48, seed=43))
        images.purge(name)
        owner.purge(name.encode())
        answer = await ensureDeferred(images.fetch(request)).addErrback(lambda f: f.value)
    finally:
        gate.set()
    await landed(a, b)
    assert isinstance(answer, EdgeError) and answer.status == 404
    assert images.memory.get(request.key) is None
    assert not os.path.exists(path_of(tmp_path, request.key)) and len(owner) == 0


@pytest_twisted.ensureDeferred
async def test_a_worker_told_absent_by_the_claim_remembers_it(tmp_path, pool, backends, clients):  # noqa: F811
    """
    Two workers miss on a bogus name at once: one fetches it (404), the other waits on its
    claim and is told it is absent. The waiter did not remember it, so its next request a
    moment later asked the origin again, within the negative TTL.
    """
    name = "ab" * 20
    request = ImageRequest(name, "jpg", None, None, f"{name}.jpg".encode())
    shard = backends({})
    shard.set_mode("slow")
    shard.resource.slow_seconds = 0.3
    owner, [(a, _), (b, _)] = await started(tmp_path, pool, 1 << 20)
    first, second = worker_images(a, clients, shard), worker_images(b, clients, shard)

    def status(images: ImageService):
        return images.fetch(request).addErrback(lambda f: f.trap(EdgeError) and f.value.status)

    at_once = [status(first), status(second)]
    assert [await at_once[0], await at_once[1]] == [404, 404] and shard.hits == 1
    assert [await status(first), await status(second)] == [404, 404]
    assert shard.hits == 1


@pytest_twisted.ensureDeferred
async def test_a_404_asked_for_under_maps_a_reload_replaced_is_no_answer_for_a_waiting_worker(tmp_path, pool, backends, clients):  # noqa: F811
    """
    Worker a asks the old pair, which lacks the image; a reload puts new maps in force in
    both workers, and b, asking under them, waits on a's claim. a's 404 was handed to b as
    ABSENT, and b answered 404 (and remembered it for negative_ttl) for an image the new
    maps' pair holds.
    """
    image = photo(seed=44)
    name = name_of(image)
    request = ImageRequest(name, "jpg", None, None, f"{name}.jpg".encode())
    shard = backends({})
    shard.set_mode("slow")
    shard.resource.slow_seconds = 0.3
    owner, [(a, _), (b, _)] = await started(tmp_path, pool, 1 << 20)
    absent = [AbsentImages(60.0, reactor), AbsentImages(60.0, reactor)]
    first, second = worker_images(a, clients, shard, absent[0]), worker_images(b, clients, shard, absent[1])
    old = first.fetch(request).addErrback(lambda f: f.trap(EdgeError) and f.value.status)
    await deferLater(reactor, 0.1, lambda: None)  # a's request is at the origin, which will say 404
    for cache in absent:
        cache.forget_all()  # the reload, in each worker
    shard.resource.files[f"/{name}.jpg"] = image  # where the new maps send b
    new = second.fetch(request).addErrback(lambda f: f.trap(EdgeError) and f.value.status)
    assert await old == 404
    answer = await new
    assert getattr(answer, "obj", None) is not None and answer.obj.body == image, answer
    assert request.key not in absent[0] and request.key not in absent[1]


@pytest_twisted.ensureDeferred
async def test_a_forget_while_the_entry_is_being_written_keeps_it(tmp_path, pool):  # noqa: F811
    """A reader that finds no file yet (it is not renamed into place) must not drop the write's entry."""
    owner, _ = await started(tmp_path, pool, 1 << 20)
    size = diskentry.entry_size(b"k.jpg", 4)
    assert await owner.reserve(b"k.jpg", size) is True
    owner.forget(b"k.jpg")
    os.makedirs(os.path.dirname(path_of(tmp_path, b"k.jpg")), exist_ok=True)
    open(path_of(tmp_path, b"k.jpg"), "wb").write(diskentry.encode(b"k.jpg", b"body"))
    owner.reserved_written(b"k.jpg", True)
    await landed()
    assert (len(owner), owner.bytes_used) == (1, size) and list(files_on_disk(tmp_path).values()) == [size]


@pytest_twisted.ensureDeferred
async def test_nothing_is_reserved_before_the_index_is_rebuilt(tmp_path, pool):  # noqa: F811
    owner = DiskOwner(str(tmp_path), 1 << 20, reactor, Clock(), pool, "s3fifo")
    assert await owner.reserve(b"k.jpg", 10) is False
