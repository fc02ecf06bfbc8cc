"""Passive health, panic mode, the concurrency cap and hedging, against loopback servers that fail for real."""

import pytest
import pytest_twisted
from prometheus_client import REGISTRY
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, DeferredList, ensureDeferred
from twisted.internet.task import deferLater

from edgeproxy.errors import FailureKind, OriginFailure
from edgeproxy.origins.hedging import HedgePolicy
from tests.images import name_of, photo
from tests.shards import one_pair, pair_origin

IMAGES = [photo(64, 48, seed=40 + i) for i in range(6)]
NAMES = [name_of(i) for i in IMAGES]
FILES = {f"/{n}.jpg": i for n, i in zip(NAMES, IMAGES)}


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def outcome(origin, name):
    try:
        return await origin.fetch(name, "jpg")
    except OriginFailure as failure:
        return failure.kind


async def pause(seconds):
    await deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_failures_on_different_keys_mark_a_backend_down_then_a_probe_brings_it_back(backends, clients):
    primary, secondary = backends(FILES), backends(FILES)
    primary.set_mode("500")
    origin = pair_origin(clients, [primary, secondary])
    for name in NAMES[:3]:
        assert await origin.fetch(name, "jpg") == FILES[f"/{name}.jpg"]
    assert primary.hits == 3
    assert sample("edgeproxy_backend_up", backend=primary.address) == 0
    assert await origin.fetch(NAMES[3], "jpg") == IMAGES[3]
    assert primary.hits == 3, "a down backend is skipped"
    primary.set_mode("serve")
    await pause(0.35)  # past the 0.3 s cooldown: the next request is the probe
    assert await origin.fetch(NAMES[4], "jpg") == IMAGES[4]
    assert (primary.hits, sample("edgeproxy_backend_up", backend=primary.address)) == (4, 1)


@pytest_twisted.ensureDeferred
async def test_a_failed_probe_doubles_the_cooldown(backends, clients):
    primary, secondary = backends(FILES), backends(FILES)
    primary.set_mode("500")
    origin = pair_origin(clients, [primary, secondary])
    for name in NAMES[:3]:
        await origin.fetch(name, "jpg")
    await pause(0.35)
    await origin.fetch(NAMES[3], "jpg")
    assert primary.hits == 4, "one probe after the first cooldown"
    await pause(0.35)
    await origin.fetch(NAMES[4], "jpg")
    assert primary.hits == 4, "the second cooldown is 0.6 s"
    await pause(0.35)
    await origin.fetch(NAMES[5], "jpg")
    assert primary.hits == 5


@pytest_twisted.ensureDeferred
async def test_one_key_failing_again_and_again_does_not_mark_a_backend_down(backends, clients):
    primary, secondary = backends(FILES), backends(FILES)
    corrupt = {**FILES, f"/{NAMES[0]}.jpg": b"\xff\xd8\xff not the bytes of its name"}
    primary.resource.files = corrupt
    origin = pair_origin(clients, [primary, secondary])
    for _ in range(5):
        assert await origin.fetch(NAMES[0], "jpg") == IMAGES[0]
    assert await origin.fetch(NAMES[1], "jpg") == IMAGES[1]
    assert (primary.hits, secondary.hits) == (6, 5)


@pytest_twisted.ensureDeferred
async def test_404s_never_mark_a_backend_down(backends, clients):
    primary, secondary = backends({}), backends(FILES)
    origin = pair_origin(clients, [primary, secondary])
    for name in NAMES:
        await origin.fetch(name, "jpg")
    assert primary.hits == len(NAMES)


@pytest_twisted.ensureDeferred
async def test_a_pair_whose_members_are_all_down_is_tried_anyway(backends, clients):
    primary, secondary = backends(FILES), backends(FILES)
    primary.set_mode("500")
    secondary.set_mode("500")
    origin = pair_origin(clients, [primary, secondary])
    for name in NAMES[:3]:
        assert await outcome(origin, name) is FailureKind.UPSTREAM
    primary.set_mode("serve")
    assert await origin.fetch(NAMES[3], "jpg") == IMAGES[3], "panic mode: down members are asked"
    assert primary.hits == 4


@pytest_twisted.ensureDeferred
async def test_a_backend_at_its_cap_is_passed_over_and_a_full_pair_is_a_fast_503(backends, clients):
    primary, secondary = backends(FILES), backends(FILES)
    primary.set_mode("slow")
    secondary.set_mode("slow")
    primary.resource.slow_seconds = secondary.resource.slow_seconds = 0.5
    origin = pair_origin(clients, [primary, secondary], max_in_flight=1)
    fetches = [ensureDeferred(outcome(origin, name)) for name in NAMES[:3]]
    results = [value for _, value in await DeferredList(fetches)]
    assert results[0] == IMAGES[0]
    assert results[1] == IMAGES[1], "the busy primary is passed over for the secondary"
    assert results[2] is FailureKind.BUSY
    assert (primary.hits, secondary.hits) == (1, 1)
    assert OriginFailure(FailureKind.BUSY, "x", "y").to_edge_error().headers == {b"Retry-After": b"1"}


HEDGE = HedgePolicy(after=0.05, percentile=0.95, share=0.5, floor=0.01, initial=0.1)


@pytest_twisted.ensureDeferred
async def test_a_slow_primary_is_hedged_and_the_secondary_answer_wins(backends, clients):
    primary, secondary = backends(FILES), backends(FILES)
    primary.set_mode("slow")
    origin = pair_origin(clients, [primary, secondary], hedge=HEDGE)
    before = sample("edgeproxy_origin_hedges_total", backend=secondary.address)
    started = reactor.seconds()
    assert await origin.fetch(NAMES[0], "jpg") == IMAGES[0]
    assert reactor.seconds() - started < 0.9, "the answer did not wait for the 1 s primary"
    assert (primary.hits, secondary.hits) == (1, 1)
    assert sample("edgeproxy_origin_hedges_total", backend=secondary.address) == before + 1


@pytest_twisted.ensureDeferred
async def test_a_fast_primary_is_not_hedged(backends, clients):
    primary, secondary = backends(FILES), backends(FILES)
    origin = pair_origin(clients, [primary, secondary], hedge=HEDGE)
    for name in NAMES:
        await origin.fetch(name, "jpg")
    assert (primary.hits, secondary.hits, origin.budget.hedged) == (len(NAMES), 0, 0)


@pytest_twisted.ensureDeferred
async def test_hedges_are_bounded_by_the_budget(backends, clients):
    primary, secondary = backends(FILES), backends(FILES)
    primary.set_mode("slow")
    primary.resource.slow_seconds = 0.2
    stingy = HedgePolicy(after=0.02, percentile=0.95, share=0.05, floor=0.01, initial=0.1)
    origin = pair_origin(clients, [primary, secondary], hedge=stingy)
    for _ in range(4):
        for name in NAMES:
            await origin.fetch(name, "jpg")
    assert origin.budget.hedged <= 5 + 0.05 * 24, "the burst plus 5 % of the fetches"
    assert secondary.hits == origin.budget.hedged


@pytest_twisted.ensureDeferred
async def test_a_hedge_that_also_fails_gives_one_combined_failure(backends, clients):
    primary, secondary = backends(FILES), backends(FILES)
    primary.set_mode("hang")
    secondary.set_mode("500")
    origin = pair_origin(clients, [primary, secondary], hedge=HEDGE, timeout=0.3)
    failure = await outcome(origin, NAMES[0])
    assert failure is FailureKind.UPSTREAM


@pytest_twisted.ensureDeferred
async def test_a_fetch_cancelled_during_the_hedge_delay_cancels_the_primarys_request(backends, clients):
    """
    The chain's deadline cancelled the fetch (504) while the pair waited for the hedge
    delay, yet the hung primary's request stayed in the air until its own 3 s timeout:
    its connection and in-flight slot held, its timeout then counted against it.
    """
    primary, secondary = backends(FILES), backends(FILES)
    primary.set_mode("hang")
    patient = HedgePolicy(after=1.0, percentile=0.95, share=0.5, floor=0.01, initial=0.1)
    shards = pair_origin(clients, [primary, secondary], timeout=3.0, hedge=patient)
    fetch = shards.fetch(NAMES[0], "jpg")
    await pause(0.1)
    fetch.cancel()
    with pytest.raises(CancelledError):
        await fetch
    await pause(0.2)
    guard = shards._member(primary.address).guard
    assert (guard.in_flight, len(primary.factory.protocols), secondary.hits) == (0, 0, 0)


@pytest_twisted.ensureDeferred
async def test_the_previous_owner_is_asked_when_the_new_owner_misses(backends, clients):
    old_primary, old_secondary = backends(FILES), backends(FILES)
    new_primary, new_secondary = backends({}), backends({})
    origin = pair_origin(clients, [new_primary, new_secondary], previous=one_pair(old_primary, old_secondary))
    assert await origin.fetch(NAMES[0], "jpg") == IMAGES[0]
    assert (new_primary.hits, new_secondary.hits, old_primary.hits) == (1, 1, 1)
    missing = "f" * 40
    assert await outcome(origin, missing) is FailureKind.NOT_FOUND
    assert (old_primary.hits, old_secondary.hits) == (2, 1)
