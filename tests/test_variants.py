"""Variants through the HTTP layer: rendered once, cached, and sharing one fetch of their original."""

import os
import signal
from pathlib import Path

import pytest
import pyvips
import pytest_twisted
from prometheus_client import REGISTRY
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.task import deferLater

from tests.edge import Edge, pair_map
from tests.images import name_of, photo

IMAGE = photo(1200, 900, seed=5)
NAME = name_of(IMAGE)
VARIANTS = {"thumb.jpg": (150, 150), "480x0.webp": (480, 360), "small/seo-slug.png": (320, 240), "small.jpg": (320, 240)}


def threads(pid: str = "self") -> list[tuple[str, int, int]]:
    """The name, scheduling policy and nice value of every thread of a process."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name, stat = (task / "comm").read_text().strip(), (task / "stat").read_text()
            found.append((name, os.sched_getscheduler(int(task.name)), int(stat.rsplit(")", 1)[1].split()[16])))
        except OSError:
            continue  # a thread that just ended
    return found


def renders_done() -> float:
    """Renders finished in this process so far (each observed once in edgeproxy_render_seconds)."""
    return REGISTRY.get_sample_value("edgeproxy_render_seconds_count")


async def get(edge, path):
    response = await edge.get(path)
    return response.code, response.headers.getRawHeaders("X-Cache", [""])[0], await response.content()


@pytest_twisted.ensureDeferred
async def test_different_variants_of_one_image_share_one_origin_fetch(tmp_path, backends):
    primary = backends({f"/{NAME}.jpg": IMAGE})
    primary.set_mode("slow")
    primary.resource.slow_seconds = 0.5
    edge = Edge(tmp_path, {("resize", "presets"): "thumb=150x150-cover small=320x0"}, tokenmap=pair_map(primary))
    try:
        renders = renders_done()
        paths = [f"/{NAME}/{variant}" for variant in VARIANTS] * 5
        results = await DeferredList([ensureDeferred(get(edge, p)) for p in paths], consumeErrors=True)
        assert primary.hits == 1
        assert renders_done() - renders == len(VARIANTS)  # 20 requests, one render per variant
        for (ok, (status, x_cache, body)), path in zip(results, paths):
            assert ok and status == 200 and x_cache == "MISS"
            image = pyvips.Image.new_from_buffer(body, "")
            assert (image.width, image.height) == VARIANTS[path.split("/", 2)[2]]
        assert {policy for name, policy, _ in threads() if name == "libvips worker"} == {os.SCHED_IDLE}  # renders yield to hits
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the reactor's thread does not
        for variant in VARIANTS:
            assert (await get(edge, f"/{NAME}/{variant}"))[:2] == (200, "HIT-MEMORY")
        assert (await get(edge, f"/{NAME}.jpg"))[1] == "HIT-MEMORY"  # the original is an object of its own
        assert primary.hits == 1
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_an_original_that_cannot_be_rendered_is_502_and_no_variant_is_cached(tmp_path, backends):
    truncated = IMAGE[: len(IMAGE) // 2]
    primary = backends({f"/{name_of(truncated)}.jpg": truncated})
    edge = Edge(tmp_path, {("resize", "presets"): "small=320x0"}, tokenmap=pair_map(primary))
    try:
        for _ in range(2):
            status, _, body = await get(edge, f"/{name_of(truncated)}/small.jpg")
            assert (status, body) == (502, b"original is not a decodable image\n")
        assert len(edge.site.handler.images.memory) == 1  # only the original
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_purge_drops_the_original_and_every_variant_from_both_tiers(tmp_path, backends):
    primary = backends({f"/{NAME}.jpg": IMAGE})
    edge = Edge(tmp_path, {("resize", "presets"): "small=320x0", ("cache", "max_object_bytes"): "20KiB"}, tokenmap=pair_map(primary))
    images = edge.site.handler.images
    try:
        for path in (f"/{NAME}.jpg", f"/{NAME}/small.jpg", f"/{NAME}/480x0.webp"):
            assert (await get(edge, path))[0] == 200
        while images.disk.writes_in_flight:
            await deferLater(reactor, 0.01, lambda: None)
        removed = images.purge(NAME)
        assert removed["disk"] == [f"{NAME}.jpg"]  # the 1200x900 original is over 20KiB: disk only
        assert sorted(removed["memory"]) == sorted([f"{NAME}/320x0-inside.jpg", f"{NAME}/480x0-inside.webp"])
        for path, x_cache in ((f"/{NAME}.jpg", "MISS"), (f"/{NAME}/small.jpg", "RENDERED")):
            assert (await get(edge, path))[:2] == (200, x_cache)
        assert primary.hits == 2
    finally:
        await edge.stop()


async def while_the_original_is_on_its_way(edge, primary, action) -> list[tuple]:
    """Ask for a variant, do `action` once its original's fetch has reached the (slow) origin, then ask for another."""
    while not edge.site.handler.images.disk.ready:
        await deferLater(reactor, 0.005, lambda: None)
    before = ensureDeferred(get(edge, f"/{NAME}/small.jpg"))
    while primary.hits == 0:
        await deferLater(reactor, 0.01, lambda: None)
    action()
    after = ensureDeferred(get(edge, f"/{NAME}/480x0.webp"))
    return [(await before)[:2], (await after)[:2]]


@pytest_twisted.ensureDeferred
async def test_a_variant_asked_after_a_purge_is_not_rendered_from_an_original_fetched_before_it(tmp_path, backends):
    """A takedown: purged while its original was on its way, and gone from the origin. A
    variant asked after the purge had joined that fetch, and been cached and served on."""
    primary = backends({f"/{NAME}.jpg": IMAGE})
    primary.set_mode("slow")
    primary.resource.slow_seconds = 0.5
    edge = Edge(tmp_path, {("resize", "presets"): "small=320x0", ("origins", "hedge_after"): "off"}, tokenmap=pair_map(primary))
    images = edge.site.handler.images

    def take_down() -> None:
        images.purge(NAME)
        primary.resource.files.clear()

    try:
        answers = await while_the_original_is_on_its_way(edge, primary, take_down)
        assert answers == [(200, "MISS"), (404, "")]
        assert images.memory.get(f"{NAME}/480x0-inside.webp".encode()) is None and len(images.memory) == 0
        assert (await get(edge, f"/{NAME}/480x0.webp"))[0] == 404
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_a_purge_of_another_image_leaves_a_fill_in_the_air_alone(tmp_path, backends):
    """One counter for every purge: purging any image kept this one's original, in flight, from being stored."""
    other = photo(300, 200, seed=8)
    primary = backends({f"/{NAME}.jpg": IMAGE, f"/{name_of(other)}.jpg": other})
    primary.set_mode("slow")
    primary.resource.slow_seconds = 0.5
    edge = Edge(tmp_path, {("resize", "presets"): "small=320x0", ("origins", "hedge_after"): "off"}, tokenmap=pair_map(primary))
    try:
        answers = await while_the_original_is_on_its_way(edge, primary, lambda: edge.site.handler.images.purge(name_of(other)))
        assert answers == [(200, "MISS"), (200, "MISS")]  # the second joined the first's fetch
        assert (await get(edge, f"/{NAME}.jpg"))[:2] == (200, "HIT-MEMORY")
        assert primary.hits == 1
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_a_full_render_queue_sheds_with_retry_after_and_hits_are_still_served(tmp_path, backends):
    big = photo(2400, 1800, seed=9)
    primary = backends({f"/{name_of(big)}.jpg": big})
    sizes = [f"{w}x0" for w in range(300, 1100, 100)]
    changes = {("resize", "allowed_sizes"): " ".join(sizes), ("resize", "render_workers"): "1", ("resize", "render_queue"): "1"}
    edge = Edge(tmp_path, changes, tokenmap=pair_map(primary))
    try:
        assert (await get(edge, f"/{name_of(big)}.jpg"))[0] == 200
        renders = [ensureDeferred(edge.get(f"/{name_of(big)}/{size}.jpg")) for size in sizes]
        hit = await get(edge, f"/{name_of(big)}.jpg")  # while the render worker is busy
        responses = await DeferredList(renders)
        codes = [response.code for _, response in responses]
        for _, response in responses:
            await response.content()
        assert hit[:2] == (200, "HIT-MEMORY")
        assert codes.count(200) >= 2 and codes.count(503) >= 1 and set(codes) == {200, 503}
        shed = next(response for _, response in responses if response.code == 503)
        assert shed.headers.getRawHeaders("Retry-After") == ["2"]
        assert primary.hits == 1
        assert edge.site.handler.images.queue.shed == codes.count(503)
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_auto_format_follows_accept_with_vary_on_every_response(tmp_path, backends):
    primary = backends({f"/{NAME}.jpg": IMAGE})
    edge = Edge(tmp_path, {("resize", "presets"): "small=320x0"}, tokenmap=pair_map(primary))
    browsers = {
        "image/avif,image/webp,image/apng,*/*;q=0.8": "image/avif",
        "image/webp,*/*": "image/webp",
        "image/webp": "image/webp",
        "*/*": "image/jpeg",
    }
    try:
        seen = []
        for _ in range(2):
            for accept, media_type in browsers.items():
                response = await edge.get(f"/{NAME}/small/a-slug.auto", headers={"Accept": accept})
                await response.content()
                assert response.code == 200
                assert response.headers.getRawHeaders("Content-Type") == [media_type]
                assert response.headers.getRawHeaders("Vary") == ["Accept"]
                seen.append(response.headers.getRawHeaders("X-Cache")[0])
        assert seen == ["MISS", "RENDERED", "HIT-MEMORY", "RENDERED"] + ["HIT-MEMORY"] * 4
        assert len(edge.site.handler.images.memory) == 4  # the original and three variants
        missing = await edge.get(f"/{'d' * 40}/small.auto")
        assert (missing.code, missing.headers.getRawHeaders("Vary")) == (404, ["Accept"])
        await missing.content()
        # refused from the URL (an unknown preset, a size off the allow-list, one too large): still Vary
        asked = primary.hits
        for path, status in ((f"/{NAME}/nosuch.auto", 404), (f"/{NAME}/300x0.auto", 403), (f"/{NAME}/99999x0.auto", 400),
                             (f"/{NAME}/nosuch.%61uto", 404), (f"/{NAME}/300x0.%61ut%6F", 403),
                             (f"/{NAME}/nosuch.webp", 404), (f"/{NAME}/300x0.webp", 403)):
            refused = await edge.get(path, headers={"Accept": "image/webp"})
            await refused.content()
            vary = None if path.endswith(".webp") else ["Accept"]
            assert (refused.code, refused.headers.getRawHeaders("Vary")) == (status, vary), path
        assert primary.hits == asked
    finally:
        await edge.stop()


@pytest.mark.parametrize("priority", ["idle", "low"])
@pytest_twisted.ensureDeferred
async def test_render_processes_serve_variants_and_survive_a_dead_worker(tmp_path, backends, priority):
    truncated = IMAGE[: len(IMAGE) // 2]
    primary = backends({f"/{NAME}.jpg": IMAGE, f"/{name_of(truncated)}.jpg": truncated})
    changes = {("resize", "presets"): "small=320x0", ("resize", "render_mode"): "processes", ("resize", "render_workers"): "2",
               ("resize", "render_priority"): priority}
    edge = Edge(tmp_path, changes, tokenmap=pair_map(primary))
    try:
        status, _, body = await get(edge, f"/{NAME}/small.webp")
        assert status == 200 and pyvips.Image.new_from_buffer(body, "").width == 320
        assert (await get(edge, f"/{name_of(truncated)}/small.jpg"))[0] == 502
        renderer = edge.site.handler.images._renderer
        ours = os.getpriority(os.PRIO_PROCESS, os.getpid())
        expected = (os.SCHED_IDLE, ours) if priority == "idle" else (os.SCHED_OTHER, min(19, ours + 10))
        for pid in renderer._executor._processes:  # every thread of a render process yields the CPU to hits
            assert {(policy, nice) for _, policy, nice in threads(str(pid))} == {expected}
        for pid in list(renderer._executor._processes):
            os.kill(pid, signal.SIGKILL)
        await deferLater(reactor, 0.2, lambda: None)
        statuses = [(await get(edge, f"/{NAME}/480x0.jpg"))[0] for _ in range(2)]
        assert statuses[-1] == 200 and set(statuses) <= {200, 502}
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_a_hit_is_served_while_renders_saturate_the_pool(tmp_path, backends):
    """Both workers busy with ~1 s renders and more waiting: a hit on the original and on a
    rendered variant are answered before any render finishes, so neither waited for a worker."""
    big = photo(2400, 1800, seed=11)
    primary = backends({f"/{name_of(big)}.jpg": big})
    sizes = [f"{w}x0" for w in (320, 1500, 1600, 1700, 1800, 1900)]
    changes = {("resize", "allowed_sizes"): " ".join(sizes), ("resize", "render_workers"): "2", ("resize", "render_queue"): "8"}
    edge = Edge(tmp_path, changes, tokenmap=pair_map(primary))
    queue = edge.site.handler.images.queue
    try:
        assert (await get(edge, f"/{name_of(big)}.jpg"))[0] == 200
        assert (await get(edge, f"/{name_of(big)}/320x0.jpg"))[0] == 200
        renders = [ensureDeferred(get(edge, f"/{name_of(big)}/{size}.png")) for size in sizes[1:]]
        while queue.running < 2 or queue.waiting < 3:
            await deferLater(reactor, 0.002, lambda: None)
        finished = renders_done()
        hits = [await get(edge, f"/{name_of(big)}.jpg"), await get(edge, f"/{name_of(big)}/320x0.jpg")]
        assert [hit[:2] for hit in hits] == [(200, "HIT-MEMORY")] * 2
        assert hits[0][2] == big
        assert renders_done() == finished and queue.running == 2  # the pool was saturated throughout
        assert [(ok, result[0]) for ok, result in await DeferredList(renders)] == [(True, 200)] * len(renders)
    finally:
        await edge.stop()
