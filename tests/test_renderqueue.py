"""The render queue with plain Deferreds as renders: no reactor, no threads."""

import pytest
from twisted.internet.defer import Deferred

from edgeproxy.errors import EdgeError
from edgeproxy.renderqueue import RenderQueue


class Renders:
    """Jobs that finish when the test says so, recording which tenant started when."""

    def __init__(self):
        self.started: list[tuple[bytes, Deferred]] = []

    def job(self, tenant: bytes):
        def start() -> Deferred:
            d = Deferred()
            self.started.append((tenant, d))
            return d

        return start

    def running(self) -> list[bytes]:
        return [tenant for tenant, d in self.started if not d.called]


def test_at_most_workers_run_and_the_rest_wait_then_run_in_turn():
    queue, renders = RenderQueue(workers=2, max_waiting=10, tenant_share=1.0), Renders()
    results = [queue.run(b"a", renders.job(b"a")) for _ in range(5)]
    assert len(renders.running()) == 2 and queue.waiting == 3
    renders.started[0][1].callback(b"one")
    assert results[0].result == b"one"
    assert len(renders.running()) == 2 and queue.waiting == 2


def test_beyond_the_cap_a_request_is_shed_at_once_with_retry_after():
    queue, renders = RenderQueue(workers=1, max_waiting=2, tenant_share=1.0), Renders()
    for _ in range(3):
        queue.run(b"a", renders.job(b"a"))
    with pytest.raises(EdgeError) as caught:
        queue.run(b"a", renders.job(b"a"))
    assert caught.value.status == 503 and caught.value.headers == {b"Retry-After": b"2"}
    assert queue.shed == 1 and len(renders.started) == 1
    renders.started[0][1].callback(None)
    queue.check_room()  # room again


def test_the_cap_holds_while_tenant_shares_leave_a_worker_free():
    """3 workers at share 0.5 (1 each while others wait): two busy tenants hold one worker
    each and the third stays free, so `running < workers`; the queue grew to 52 unshed."""
    queue, renders = RenderQueue(workers=3, max_waiting=2, tenant_share=0.5), Renders()
    for tenant in (b"a", b"b", b"b", b"a", b"b"):
        queue.run(tenant, renders.job(tenant))
    renders.started[2][1].callback(None)  # b's second ends: a and b at their share, both waiting
    assert (queue.running, queue.waiting) == (2, 2)
    for _ in range(5):
        with pytest.raises(EdgeError) as caught:
            queue.run(b"a", renders.job(b"a"))
        assert caught.value.status == 503
    assert queue.waiting == 2 and queue.shed == 5


def test_no_tenant_holds_more_than_its_share_while_others_wait():
    queue, renders = RenderQueue(workers=4, max_waiting=100, tenant_share=0.5), Renders()
    for _ in range(10):
        queue.run(b"busy.example", renders.job(b"busy.example"))
    assert renders.running() == [b"busy.example"] * 4  # alone, it may use every worker
    for _ in range(3):
        queue.run(b"quiet.example", renders.job(b"quiet.example"))
    for _ in range(4):
        renders.started[[d.called for _, d in renders.started].index(False)][1].callback(None)
    running = renders.running()
    assert running.count(b"busy.example") <= 2 and running.count(b"quiet.example") == 2


def test_a_failed_render_frees_its_worker_and_fails_only_its_caller():
    queue, renders = RenderQueue(workers=1, max_waiting=5, tenant_share=1.0), Renders()
    first, second = queue.run(b"a", renders.job(b"a")), queue.run(b"a", renders.job(b"a"))
    renders.started[0][1].errback(RuntimeError("libvips said no"))
    assert first.result.check(RuntimeError)
    first.addErrback(lambda _: None)
    assert not second.called and len(renders.running()) == 1


def test_a_job_that_raises_at_once_frees_its_worker():
    queue = RenderQueue(workers=1, max_waiting=5, tenant_share=1.0)

    def broken() -> Deferred:
        raise RuntimeError("pool is gone")

    failed = queue.run(b"a", broken)
    assert failed.result.check(RuntimeError) and queue.running == 0
    failed.addErrback(lambda _: None)
    assert queue.run(b"a", lambda: Deferred()) is not None and queue.running == 1
