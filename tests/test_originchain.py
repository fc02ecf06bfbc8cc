"""The whole chain through a real in-process edge: one deadline, cached originals while origins are dead, failover under load."""

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, ensureDeferred

from tests.edge import Edge, pair_map
from tests.images import name_of, photo

IMAGES = [photo(48, 32, seed=100 + i) for i in range(160)]
FILES = {f"/{name_of(i)}.jpg": i for i in IMAGES}


async def status_and_cache(edge, path):
    response = await edge.get(path)
    await response.content()
    return response.code, response.headers.getRawHeaders("X-Cache", [""])[0]


@pytest_twisted.ensureDeferred
async def test_one_deadline_covers_the_whole_chain(tmp_path, backends):
    primary, secondary = backends(FILES), backends(FILES)
    primary.set_mode("hang")
    secondary.set_mode("hang")
    changes = {("origins", "timeout"): "5s", ("origins", "deadline"): "300ms", ("origins", "hedge_after"): "off"}
    edge = Edge(tmp_path, changes, tokenmap=pair_map(primary, secondary))
    try:
        started = reactor.seconds()
        assert await status_and_cache(edge, f"/{name_of(IMAGES[0])}.jpg") == (504, "")
        assert reactor.seconds() - started < 3, "the chain deadline, not the 5 s hop timeouts"
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_a_hung_primary_leaves_its_secondary_a_share_of_the_deadline(tmp_path, backends):
    """The primary, hung, used the whole deadline under its longer hop timeout: 504, the secondary never asked."""
    primary, secondary = backends(FILES), backends(FILES)
    primary.set_mode("hang")
    changes = {("origins", "timeout"): "5s", ("origins", "deadline"): "600ms", ("origins", "hedge_after"): "off"}
    edge = Edge(tmp_path, changes, tokenmap=pair_map(primary, secondary))
    try:
        assert await status_and_cache(edge, f"/{name_of(IMAGES[0])}.jpg") == (200, "MISS")
        assert (primary.hits, secondary.hits) == (1, 1)
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_with_every_origin_dead_a_cached_original_still_serves_all_its_variants(tmp_path, backends):
    primary, secondary = backends(FILES), backends(FILES)
    edge = Edge(tmp_path, {("resize", "presets"): "thumb=40x40-cover small=24x0"}, tokenmap=pair_map(primary, secondary))
    name = name_of(IMAGES[0])
    try:
        assert await status_and_cache(edge, f"/{name}.jpg") == (200, "MISS")
        await primary.stop()
        await secondary.stop()
        for variant in ("thumb.jpg", "small.webp", "480x0.png"):
            assert await status_and_cache(edge, f"/{name}/{variant}") == (200, "RENDERED")
        assert await status_and_cache(edge, f"/{name_of(IMAGES[1])}/thumb.jpg") == (502, "")
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_killing_the_primary_halfway_through_a_load_costs_no_client_an_error(tmp_path, backends):
    primary, secondary = backends(FILES), backends(FILES)
    edge = Edge(tmp_path, tokenmap=pair_map(primary, secondary))
    paths = [f"/{name_of(image)}.jpg" for image in IMAGES]
    try:
        results = []
        for start in range(0, len(paths), 20):
            if start == len(paths) // 2:
                await primary.stop()
                served_by_primary = primary.hits
            wave = [ensureDeferred(status_and_cache(edge, p)) for p in paths[start : start + 20]]
            results += [value for _, value in await DeferredList(wave)]
        assert results == [(200, "MISS")] * len(paths)
        assert served_by_primary >= len(paths) // 4, "hedging under load may send some to the secondary"
        assert secondary.hits >= len(paths) // 2
    finally:
        await edge.stop()
