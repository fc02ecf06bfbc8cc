"""Rendering with real pyvips on images generated here, and hostile sources."""

import struct
import zlib

import pytest
import pyvips

from edgeproxy.render import RenderSettings, Unrenderable, configure_libvips, render
from edgeproxy.urls import Geometry
from tests.images import photo

configure_libvips()
SETTINGS = RenderSettings(quality=80)


def load(data: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(data, "")


def exif_rotated() -> bytes:
    """A 400x200 landscape whose EXIF says "rotate 90°": it displays as 200x400."""
    image = pyvips.Image.new_from_buffer(photo(400, 200), "").copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", 6)
    return image.jpegsave_buffer(keep="all")


def png_with_alpha() -> bytes:
    rgb = pyvips.Image.black(64, 48, bands=3) + [200, 10, 10]
    return rgb.bandjoin(pyvips.Image.black(64, 48) + 0).cast("uchar").pngsave_buffer()


def declared_bomb() -> bytes:
    """A tiny PNG whose header claims 30000x30000 pixels."""
    small = pyvips.Image.black(8, 8).pngsave_buffer()
    ihdr = b"IHDR" + struct.pack(">II", 30000, 30000) + small[24:29]
    return small[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + small[33:]


@pytest.mark.parametrize(
    "source, geometry, fmt, size",
    [
        (photo(2000, 1500), Geometry(320, 0), "jpg", (320, 240)),
        (photo(1500, 2000), Geometry(320, 0), "webp", (320, 427)),
        (photo(1500, 2000), Geometry(0, 100), "png", (75, 100)),
        (photo(2000, 1500), Geometry(150, 150, "cover"), "jpg", (150, 150)),
        (photo(2000, 1500), Geometry(150, 150, "inside"), "jpg", (150, 113)),
        (photo(200, 100), Geometry(640, 0), "jpg", (200, 100)),
        (exif_rotated(), Geometry(100, 0), "jpg", (100, 200)),
        (photo(2000, 1500), Geometry(160, 0), "avif", (160, 120)),
    ],
    ids=["landscape", "portrait-webp", "height-only", "cover", "inside", "no-upscale", "exif-rotated", "avif"],
)
def test_sizes_formats_and_orientation(source, geometry, fmt, size):
    out = load(render(source, geometry, fmt, SETTINGS))
    assert (out.width, out.height) == size
    assert out.get("vips-loader").startswith({"jpg": "jpeg", "png": "png", "webp": "webp", "avif": "heif"}[fmt])


def test_metadata_is_stripped_and_output_is_srgb():
    out = load(render(exif_rotated(), Geometry(100, 0), "jpg", SETTINGS))
    assert out.get_typeof("exif-data") == 0 and out.get_typeof("orientation") == 0
    assert out.interpretation == "srgb"


def test_alpha_is_flattened_for_jpeg_and_kept_for_png():
    assert load(render(png_with_alpha(), Geometry(32, 0), "jpg", SETTINGS)).bands == 3
    assert load(render(png_with_alpha(), Geometry(32, 0), "png", SETTINGS)).bands == 4


def test_upscale_only_when_configured_and_background_is_configurable():
    small = photo(200, 100)
    assert load(render(small, Geometry(400, 0), "jpg", RenderSettings(upscale=True))).width == 400
    assert load(render(small, Geometry(400, 0), "jpg", SETTINGS)).width == 200
    black = load(render(png_with_alpha(), Geometry(32, 0), "jpg", RenderSettings(background=(0, 0, 0))))
    white = load(render(png_with_alpha(), Geometry(32, 0), "jpg", SETTINGS))
    assert black.avg() < 20 < 235 < white.avg()


def test_grayscale_and_sixteen_bit_sources():
    gray = (pyvips.Image.black(100, 80) + 128).cast("uchar").copy(interpretation="b-w").jpegsave_buffer()
    assert load(render(gray, Geometry(50, 0), "jpg", SETTINGS)).width == 50
    deep = (pyvips.Image.black(100, 80, bands=3) + 30000).cast("ushort").copy(interpretation="rgb16").pngsave_buffer()
    out = load(render(deep, Geometry(50, 0), "png", SETTINGS))
    assert (out.width, out.format) == (50, "uchar")


HOSTILE = {
    "declared 30000x30000 png": (declared_bomb(), "over 50000000 pixels"),
    "truncated jpeg": (photo(400, 300)[:2000], ""),
    "html": (b"<html><body>not an image</body></html>", "not an allowed image format"),
    "svg with external entity": (
        b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]><svg>&x;</svg>',
        "not an allowed",
    ),
    "zero bytes": (b"", "not an allowed image format"),
}


@pytest.mark.parametrize("source, reason", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_sources_are_refused_with_a_reason(source, reason):
    with pytest.raises(Unrenderable) as caught:
        render(source, Geometry(100, 0), "jpg", SETTINGS)
    assert caught.value.status == 502
    assert reason in caught.value.reason


def test_a_long_animation_is_refused():
    frames = [pyvips.Image.black(4, 4) + i * 12 for i in range(20)]
    gif = pyvips.Image.arrayjoin(frames, across=1).copy()
    gif.set_type(pyvips.GValue.gint_type, "page-height", 4)
    data = gif.cast("uchar").gifsave_buffer()
    with pytest.raises(Unrenderable) as caught:
        render(data, Geometry(4, 0), "jpg", RenderSettings(max_frames=2))
    assert caught.value.reason == "20 frames is over 2"
    assert load(render(data, Geometry(4, 0), "png", RenderSettings(max_frames=100))).height == 4


SIZES = [(2000, 1500), (1500, 2000), (1999, 1333), (4032, 3024), (1234, 567), (801, 601), (3000, 2001)]
BOXES = [Geometry(320, 0), Geometry(0, 100), Geometry(150, 150), Geometry(97, 0), Geometry(333, 0), Geometry(0, 777)]


@pytest.mark.parametrize("width, height", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_jpeg_shrink_on_load_gives_the_geometric_size_for_every_box(width, height):
    """Whatever decode shrink is used, the size is the original's scaled, halves rounded up."""
    source = pyvips.Image.black(width, height, bands=3).jpegsave_buffer()
    for box in BOXES:
        out = load(render(source, box, "jpg", SETTINGS))
        shrink = max(side / b for side, b in ((width, box.width), (height, box.height)) if b)
        expected = (int(width / max(shrink, 1) + 0.5), int(height / max(shrink, 1) + 0.5))
        assert (out.width, out.height) == expected, box
        cover = load(render(source, Geometry(120, 90, "cover"), "jpg", SETTINGS))
        assert (cover.width, cover.height) == (120, 90)
