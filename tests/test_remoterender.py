"""
A worker's renders over its channel to the supervisor's render processes: a real AMP
connection over a socket pair, real libvips behind it.
"""

import socket

import pytest
import pytest_twisted
import pyvips
from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool

from edgeproxy.diskowner import DiskOwner
from edgeproxy.remoterender import SupervisorRenderer
from edgeproxy.errors import EdgeError
from edgeproxy.render import ProcessRenderer, RenderSettings, ThreadRenderer, Unrenderable, configure_libvips, render
from edgeproxy.supervisor import OwnerProtocol
from edgeproxy.urls import Geometry
from edgeproxy.workerproto import PromptAMP
from tests.images import photo
from tests.test_disktier import pool  # noqa: F401 (a fixture)

THUMB = Geometry(150, 150, "cover")


@pytest.fixture
def render_pool():
    threads = ThreadPool(1, 1, "test-render")
    threads.start()
    configure_libvips()
    yield threads
    threads.stop()


def connected(owner: OwnerProtocol) -> tuple[SupervisorRenderer, PromptAMP]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    worker = PromptAMP()
    for sock, protocol in ((ours, worker), (theirs, owner)):
        reactor.adoptStreamConnection(sock.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda p=protocol: p))
        sock.close()
    renderer = SupervisorRenderer()
    renderer.channel = worker.callRemote
    return renderer, worker


def local_reason(source: bytes) -> str:
    with pytest.raises(Unrenderable) as refused:
        render(source, THUMB, "jpg", RenderSettings())
    return refused.value.reason


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("has_renderer", [True, False])
async def test_a_render_comes_back_over_the_channel_and_an_unrenderable_one_says_why(tmp_path, pool, render_pool, has_renderer):  # noqa: F811
    disk = DiskOwner(str(tmp_path), 1 << 20, reactor, Clock(), pool, "s3fifo")
    renderer = ThreadRenderer(reactor, render_pool, RenderSettings()) if has_renderer else None
    remote, worker = connected(OwnerProtocol(disk, 0, renderer))
    try:
        if has_renderer:
            body = await remote.render(photo(640, 480), THUMB, "webp")
            assert (pyvips.Image.new_from_buffer(body, "").width, body[8:12]) == (150, b"WEBP")
        truncated = photo(800, 600, seed=3)[:-2000]
        with pytest.raises(Unrenderable) as refused:
            await remote.render(truncated, THUMB, "jpg")
        assert refused.value.reason == (local_reason(truncated) if has_renderer else "the supervisor has no render processes")
    finally:
        worker.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_with_no_channel_a_render_fails_at_once():
    with pytest.raises(Unrenderable):
        await SupervisorRenderer().render(photo(64, 48), THUMB, "jpg")


@pytest_twisted.ensureDeferred
async def test_renders_still_waiting_for_a_process_when_the_pool_stops_are_told_so():
    """One process, six renders: the pool takes two, the rest wait and are cancelled by
    stop(). Every caller hears: the two rendered, the others 503 (before, they never did)."""
    renderer = ProcessRenderer(reactor, 1, RenderSettings())
    source = photo(2000, 1500)
    renders = [renderer.render(source, Geometry(100 + i, 0), "jpg") for i in range(6)]
    renderer.stop()
    outcomes = []
    for d in renders:
        d.addTimeout(30, reactor)
        try:
            outcomes.append(pyvips.Image.new_from_buffer(await d, "").width)
        except EdgeError as error:
            outcomes.append(error.status)
    assert outcomes[0] == 100 and 503 in outcomes and set(outcomes[1:]) <= {101, 102, 503}


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("how", ["pool stopped", "channel lost"])
async def test_a_render_the_supervisor_could_not_finish_is_503_for_the_worker(tmp_path, pool, render_pool, how):  # noqa: F811
    """The supervisor's pool refused the render (stopped), or the channel went mid-render:
    503 with Retry-After, where the AMP error or the lost connection had been a 500."""
    disk = DiskOwner(str(tmp_path), 1 << 20, reactor, Clock(), pool, "s3fifo")
    processes = ProcessRenderer(reactor, 1, RenderSettings())
    if how == "pool stopped":
        processes.stop()
    remote, worker = connected(OwnerProtocol(disk, 0, processes if how == "pool stopped" else ThreadRenderer(reactor, render_pool, RenderSettings())))
    try:
        d = remote.render(photo(640, 480), THUMB, "jpg")
        if how == "channel lost":
            worker.transport.loseConnection()
        with pytest.raises(EdgeError) as refused:
            await d.addTimeout(30, reactor)
        assert refused.value.status == 503 and refused.value.headers == {b"Retry-After": b"1"}
    finally:
        processes.stop()
        worker.transport.loseConnection()
