"""
Hostile originals through the whole proxy, from a real loopback backend that labels
everything `image/jpeg`: each answers its contract status, is never cached as a
variant, is logged with its reason, and the proxy goes on serving; in a real twistd,
in both render modes, the process stays up and its memory stays bounded.
"""

from pathlib import Path

import pytest
import pytest_twisted
import pyvips
from twisted.logger import formatEvent, globalLogPublisher

from tests.configs import write_config
from tests.edge import Edge, pair_map
from tests.images import name_of, photo
from tests.test_render import animated_gif, declared_bomb
from tests.twistd import Twistd

NOT_DECODABLE = b"original is not a decodable image\n"
NOT_AN_IMAGE = b"origin sent something that is not an image\n"
ENTITY = b"/entity-must-never-be-fetched"


def hostile_sources(entity_host: str) -> dict[str, tuple[bytes, bytes, str]]:
    """name: (bytes, the variant's 502 body, what the log must say)."""
    svg = (
        b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "http://' + entity_host.encode() + ENTITY + b'">]>'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><text>&x;</text></svg>'
    )
    return {
        "declared 30000x30000 png": (declared_bomb(), NOT_DECODABLE, "30000x30000 is over 50000000 pixels"),
        "truncated jpeg": (photo(800, 600, seed=3)[:6000], NOT_DECODABLE, "cannot render"),
        "html as image/jpeg": (b"<!doctype html><html><body>not an image</body></html>", NOT_AN_IMAGE, "not an allowed image"),
        "svg with an external entity": (svg, NOT_AN_IMAGE, "not an allowed image"),
        "1001-frame gif": (animated_gif(1001), NOT_DECODABLE, "1001 frames is over 1000"),
        "zero bytes": (b"", NOT_AN_IMAGE, "not an allowed image"),
    }


@pytest.fixture
def logged():
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield lambda: [formatEvent(event) for event in events]
    globalLogPublisher.removeObserver(events.append)


@pytest_twisted.ensureDeferred
async def test_each_hostile_source_is_its_status_never_cached_and_logged_with_a_reason(tmp_path, backends, logged):
    primary = backends()
    sources = hostile_sources(primary.address)
    good, animation = photo(640, 480, seed=4), animated_gif(1000)
    primary.resource.files.update({f"/{name_of(data)}.jpg": data for data in [good, animation] + [s[0] for s in sources.values()]})
    edge = Edge(tmp_path, {("resize", "presets"): "small=320x0"}, tokenmap=pair_map(primary))
    images = edge.site.handler.images
    try:
        for label, (data, body, reason) in sources.items():
            name = name_of(data)
            for _ in range(2):  # the second time too: nothing was cached
                response = await edge.get(f"/{name}/small.jpg")
                assert (response.code, await response.content()) == (502, body), label
                assert response.headers.getRawHeaders("Cache-Control") == ["no-store"], label
            assert [line for line in logged() if name in line and reason in line], label
            removed = images.purge(name)
            assert [key for keys in removed.values() for key in keys if "/" in key] == [], label  # no variant kept
        response = await edge.get(f"/{name_of(animation)}/small.jpg")  # at the limit: its first frame
        out = pyvips.Image.new_from_buffer(await response.content(), "")
        assert response.code == 200 and (out.width, out.height) == (64, 64) and out.avg() > 250
        response = await edge.get(f"/{name_of(good)}/small.jpg")  # and serving goes on
        assert response.code == 200 and pyvips.Image.new_from_buffer(await response.content(), "").width == 320
        assert ENTITY.decode() not in [request.path.decode() for request in primary.resource.requests]
    finally:
        await edge.stop()


def memory_kib(pid: int) -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_a_real_twistd_stays_up_with_bounded_memory_under_hostile_sources(tmp_path, mode):
    folder = tmp_path / "originals"
    folder.mkdir()
    sources = hostile_sources("127.0.0.1:9")
    good = photo(1200, 900, seed=6)
    for data in [good] + [s[0] for s in sources.values()]:
        (folder / f"{name_of(data)}.jpg").write_bytes(data)
    changes = {("local", "root"): str(folder), ("resize", "presets"): "small=320x0", ("resize", "render_mode"): mode}
    proxy = Twistd(write_config(tmp_path, changes), tmp_path)
    try:
        assert proxy.get(f"/{name_of(good)}/small.jpg")[0] == 200
        before = memory_kib(proxy.process.pid)
        for _ in range(5):
            for label, (data, body, _) in sources.items():
                status, _, answer = proxy.get(f"/{name_of(data)}/small.jpg")
                assert (status, answer) == (502, body), label
        assert proxy.process.poll() is None
        assert proxy.get(f"/{name_of(good)}/480x0.jpg")[0] == 200
        after = memory_kib(proxy.process.pid)
        assert after["VmHWM"] - before["VmHWM"] < 100_000, (before, after)  # KiB: a decoded bomb would be GBs
        lines = proxy.log.read_text().splitlines()
        for label, (data, _, reason) in sources.items():
            assert [line for line in lines if name_of(data) in line and reason in line], label
    finally:
        proxy.stop()
