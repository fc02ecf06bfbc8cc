"""Collapsed forwarding and the negative cache, against a loopback origin that counts."""

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.task import deferLater

from tests.edge import Edge, pair_map
from tests.images import name_of, photo

IMAGE = photo(seed=3)
NAME = name_of(IMAGE)
FILES = {f"/{NAME}.jpg": IMAGE}
NO_HEDGING = {("origins", "hedge_after"): "off"}  # a slow primary would be hedged, by design


@pytest.fixture
def slow_pair(backends):
    primary, secondary = backends(FILES), backends(FILES)
    primary.set_mode("slow")
    return primary, secondary


async def fetch_all(edge, path, count):
    async def one():
        response = await edge.get(path)
        return response.code, await response.content()

    results = await DeferredList([ensureDeferred(one()) for _ in range(count)], consumeErrors=True)
    assert all(ok for ok, _ in results)
    return [value for _, value in results]


@pytest_twisted.ensureDeferred
async def test_100_concurrent_misses_make_one_origin_request(tmp_path, slow_pair):
    edge = Edge(tmp_path, NO_HEDGING, tokenmap=pair_map(*slow_pair))
    try:
        results = await fetch_all(edge, f"/{NAME}.jpg", 100)
        assert results == [(200, IMAGE)] * 100
        assert (slow_pair[0].hits, slow_pair[1].hits) == (1, 0)
        assert edge.site.handler.images.flights.collapsed == 99
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_a_failed_fetch_fails_every_waiter_once_and_is_not_remembered(tmp_path, backends):
    primary, secondary = backends(FILES), backends(FILES)
    primary.set_mode("slow")
    primary.resource._serve = lambda request: (request.setResponseCode(500), b"boom")[1]
    secondary.set_mode("500")
    edge = Edge(tmp_path, tokenmap=pair_map(primary, secondary))
    try:
        results = await fetch_all(edge, f"/{NAME}.jpg", 100)
        assert results == [(502, b"origin failed\n")] * 100
        assert (primary.hits, secondary.hits) == (1, 1)
        primary.set_mode("serve")
        primary.resource._serve = type(primary.resource)._serve.__get__(primary.resource)
        assert await fetch_all(edge, f"/{NAME}.jpg", 1) == [(200, IMAGE)]
        assert primary.hits == 2
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_a_client_that_leaves_does_not_cancel_the_fetch_for_the_others(tmp_path, slow_pair):
    edge = Edge(tmp_path, NO_HEDGING, tokenmap=pair_map(*slow_pair))
    try:
        leaver = ensureDeferred(edge.get(f"/{NAME}.jpg"))
        stayer = ensureDeferred(fetch_all(edge, f"/{NAME}.jpg", 1))
        await deferLater(reactor, 0.1, lambda: None)
        leaver.cancel()
        leaver.addErrback(lambda failure: None)
        assert await stayer == [(200, IMAGE)]
        assert slow_pair[0].hits == 1
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_not_found_is_remembered_for_the_negative_ttl(tmp_path, backends):
    primary = backends({})
    edge = Edge(tmp_path, {("cache", "negative_ttl"): "300ms"}, tokenmap=pair_map(primary))
    try:
        missing = f"/{'e' * 40}.jpg"
        assert await fetch_all(edge, missing, 3) == [(404, b"image not found\n")] * 3
        assert await fetch_all(edge, missing, 1) == [(404, b"image not found\n")]
        assert primary.hits == 1
        await deferLater(reactor, 0.4, lambda: None)
        assert await fetch_all(edge, missing, 1) == [(404, b"image not found\n")]
        assert primary.hits == 2
    finally:
        await edge.stop()
