"""The shard pair against real loopback servers that fail for real."""

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError
from twisted.internet.task import deferLater

from edgeproxy.errors import FailureKind, OriginFailure
from edgeproxy.origins.http import HTTPBackend
from tests.images import name_of, photo
from tests.shards import pair_origin

IMAGE = photo(seed=1)
NAME = name_of(IMAGE)
FILES = {f"/{NAME}.jpg": IMAGE}


async def fetch_failure(origin, name=NAME):
    with pytest.raises(OriginFailure) as caught:
        await origin.fetch(name, "jpg")
    return caught.value


@pytest_twisted.ensureDeferred
async def test_primary_serves(backends, clients):
    primary, secondary = backends(FILES), backends(FILES)
    assert await pair_origin(clients, [primary, secondary]).fetch(NAME, "jpg") == IMAGE
    assert (primary.hits, secondary.hits) == (1, 0)


@pytest_twisted.ensureDeferred
async def test_stopped_primary_falls_back_to_secondary(backends, clients):
    primary, secondary = backends(FILES), backends(FILES)
    origin = pair_origin(clients, [primary, secondary])
    assert await origin.fetch(NAME, "jpg") == IMAGE
    await primary.stop()
    assert await origin.fetch(NAME, "jpg") == IMAGE
    assert (primary.hits, secondary.hits) == (1, 1)


@pytest.mark.parametrize("mode", ["404", "500", "truncate"])
@pytest_twisted.ensureDeferred
async def test_failing_primary_falls_back_to_secondary(backends, clients, mode):
    primary, secondary = backends(FILES), backends(FILES)
    primary.set_mode(mode)
    assert await pair_origin(clients, [primary, secondary]).fetch(NAME, "jpg") == IMAGE
    assert (primary.hits, secondary.hits) == (1, 1)


@pytest_twisted.ensureDeferred
async def test_hanging_primary_times_out_then_secondary_serves(backends, clients):
    primary, secondary = backends(FILES), backends(FILES)
    primary.set_mode("hang")
    assert await pair_origin(clients, [primary, secondary], timeout=0.3).fetch(NAME, "jpg") == IMAGE


@pytest_twisted.ensureDeferred
async def test_missing_from_both_is_not_found(backends, clients):
    primary, secondary = backends({}), backends({})
    failure = await fetch_failure(pair_origin(clients, [primary, secondary]))
    assert failure.kind is FailureKind.NOT_FOUND
    assert (primary.hits, secondary.hits) == (1, 1)


@pytest_twisted.ensureDeferred
async def test_both_stopped_is_upstream_failure(backends, clients):
    primary, secondary = backends(FILES), backends(FILES)
    await primary.stop()
    await secondary.stop()
    failure = await fetch_failure(pair_origin(clients, [primary, secondary]))
    assert failure.kind is FailureKind.UPSTREAM
    assert "refused" in failure.reason


@pytest_twisted.ensureDeferred
async def test_both_hanging_is_a_timeout(backends, clients):
    primary, secondary = backends(FILES), backends(FILES)
    primary.set_mode("hang")
    secondary.set_mode("hang")
    failure = await fetch_failure(pair_origin(clients, [primary, secondary], timeout=0.2))
    assert failure.kind is FailureKind.TIMEOUT


@pytest_twisted.ensureDeferred
async def test_one_deadline_covers_a_body_that_stalls(backends, clients):
    """Headers arrive, then the body stops: the deadline still ends the fetch."""
    primary = backends(FILES)
    resource = primary.resource

    def stall(request):
        request.setHeader(b"Content-Length", b"100000")
        request.write(b"\xff\xd8\xff" + b"x" * 100)
        return 1  # NOT_DONE_YET

    resource._serve = stall
    failure = await fetch_failure(pair_origin(clients, [primary], timeout=0.3))
    assert failure.kind is FailureKind.TIMEOUT


@pytest_twisted.ensureDeferred
async def test_body_announced_over_the_cap_is_refused_before_reading(backends, clients):
    big = {f"/{NAME}.jpg": b"\xff\xd8\xff" + b"x" * 300_000}
    primary = backends(big)
    failure = await fetch_failure(pair_origin(clients, [primary], max_body=100_000))
    assert failure.kind is FailureKind.UPSTREAM
    assert "over 100000" in failure.reason


@pytest_twisted.ensureDeferred
async def test_chunked_body_over_the_cap_is_refused(backends, clients):
    """No Content-Length: the cap is enforced on the bytes as they come."""
    primary = backends(FILES)

    def chunked(request):
        for _ in range(40):
            request.write(b"y" * 10_000)
        request.finish()
        return 1

    primary.resource._serve = chunked
    failure = await fetch_failure(pair_origin(clients, [primary], max_body=100_000))
    assert "over 100000" in failure.reason


@pytest_twisted.ensureDeferred
async def test_path_template_and_no_cookie_is_kept_or_sent(backends, clients):
    files = {f"/{NAME[:2]}/{NAME[:6]}/{NAME}.jpg": IMAGE}
    primary = backends(files)
    primary.set_mode("cookie")
    origin = pair_origin(clients, [primary], template="/{p2}/{p6}/{hash}.{ext}")
    assert await origin.fetch(NAME, "jpg") == IMAGE
    assert await origin.fetch(NAME, "jpg") == IMAGE
    assert [r.getHeader(b"cookie") for r in primary.resource.requests] == [None, None]


@pytest_twisted.ensureDeferred
async def test_connections_are_reused(backends, clients):
    primary = backends(FILES)
    origin = pair_origin(clients, [primary])
    for _ in range(5):
        await origin.fetch(NAME, "jpg")
    assert primary.hits == 5
    assert primary.connections == 1


@pytest_twisted.ensureDeferred
async def test_a_dead_backend_is_known_at_once(backends, clients):
    """No 0.3 s wait for Twisted's HostnameEndpoint to notice a refused connection."""
    primary, secondary = backends(FILES), backends(FILES)
    await primary.stop()
    origin = pair_origin(clients, [primary, secondary])
    started = reactor.seconds()
    assert await origin.fetch(NAME, "jpg") == IMAGE
    assert reactor.seconds() - started < 0.25


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
@pytest_twisted.ensureDeferred
async def test_a_cancel_by_the_caller_is_a_cancel_in_every_phase(backends, clients, host):
    """Twisted reports a cancel while resolving or connecting as other errors: none may count against the backend."""
    primary = backends(FILES)
    primary.set_mode("hang")
    backend = HTTPBackend(clients.client, f"{host}:{primary.port.getHost().port}", reactor, 5.0, 1 << 20)
    for delay in (0, 0.001, 0.2):
        request = backend.get(f"/{NAME}.jpg")
        if delay:
            await deferLater(reactor, delay, lambda: None)
        request.cancel()
        with pytest.raises(CancelledError):
            await request


@pytest_twisted.ensureDeferred
async def test_a_broken_hop_is_logged_with_its_reason_and_a_404_hop_is_not(backends, clients):
    from twisted.logger import globalLogPublisher

    lines = []
    observer = lambda event: lines.append(event.get("log_format", "")) if "origin hop" in event.get("log_format", "") else None  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        primary, secondary = backends(FILES), backends(FILES)
        primary.set_mode("404")
        assert await pair_origin(clients, [primary, secondary]).fetch(NAME, "jpg") == IMAGE
        assert lines == []
        primary.set_mode("500")
        assert await pair_origin(clients, [primary, secondary]).fetch(NAME, "jpg") == IMAGE
        assert len(lines) == 1
    finally:
        globalLogPublisher.removeObserver(observer)
