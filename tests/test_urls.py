import pytest

from edgeproxy.errors import EdgeError
from edgeproxy.urls import Geometry, UrlGrammar, negotiate_format

H = "0123456789abcdef0123456789abcdef01234567"
GRAMMAR = UrlGrammar(
    extensions=frozenset({"jpg", "png"}),
    formats=frozenset({"jpg", "png", "webp", "avif"}),
    presets={"thumb": Geometry(150, 150, "cover"), "small": Geometry(320, 0)},
    allowed_sizes=frozenset({Geometry(480, 0), Geometry(100, 100, "cover")}),
    max_dimension=4096,
)


@pytest.mark.parametrize(
    "path, key, geometry, fmt",
    [
        (f"/{H}.jpg", f"{H}.jpg", None, None),
        (f"/{H}.png", f"{H}.png", None, None),
        (f"/{H}/thumb.webp", f"{H}/150x150-cover.webp", Geometry(150, 150, "cover"), "webp"),
        (f"/{H}/small.jpg", f"{H}/320x0-inside.jpg", Geometry(320, 0), "jpg"),
        (f"/{H}/small/a-nice_photo.v2.jpg", f"{H}/320x0-inside.jpg", Geometry(320, 0), "jpg"),
        (f"/{H}/480x0.avif", f"{H}/480x0-inside.avif", Geometry(480, 0), "avif"),
        (f"/{H}/480x0-inside.png", f"{H}/480x0-inside.png", Geometry(480, 0), "png"),
        (f"/{H}/100x100-cover/slug.jpg", f"{H}/100x100-cover.jpg", Geometry(100, 100, "cover"), "jpg"),
    ],
)
def test_valid_paths(path, key, geometry, fmt):
    request = GRAMMAR.parse(path.encode())
    assert request.key == key.encode()
    assert request.image_hash == H
    assert request.geometry == geometry
    assert request.fmt == fmt


@pytest.mark.parametrize(
    "path, status",
    [
        ("/", 404),
        ("/favicon.ico", 404),
        (f"/{H.upper()}.jpg", 404),
        (f"/{H[:-1]}.jpg", 404),
        (f"/{H}0.jpg", 404),
        (f"/{H}", 404),
        (f"/{H}.gif", 404),
        (f"/{H}.jpg/", 404),
        (f"//{H}.jpg", 404),
        (f"/x/{H}.jpg", 404),
        (f"/{H}.jpg%00", 404),
        (f"/{H}%2ejpg", 404),
        (f"/../{H}.jpg", 404),
        (f"/{H}/small.bmp", 404),
        (f"/{H}/huge.jpg", 404),
        (f"/{H}/small/../x.jpg", 404),
        (f"/{H}/small/.jpg", 404),
        (f"/{H}/0x0.jpg", 400),
        (f"/{H}/0480x0.jpg", 400),
        (f"/{H}/480x0-fill.jpg", 400),
        (f"/{H}/5000x0.jpg", 400),
    ],
)
def test_refused_paths(path, status):
    with pytest.raises(EdgeError) as caught:
        GRAMMAR.parse(path.encode())
    assert caught.value.status == status
    assert "\n" not in caught.value.message


def test_explicit_sizes_off_the_allow_list_are_marked_for_a_signature():
    assert GRAMMAR.parse(f"/{H}/480x0.jpg".encode()).unlisted is False
    assert GRAMMAR.parse(f"/{H}/small.jpg".encode()).unlisted is False
    assert GRAMMAR.parse(f"/{H}/481x0.jpg".encode()).unlisted is True
    assert GRAMMAR.parse(f"/{H}/100x100.jpg".encode()).unlisted is True  # inside, not the listed cover
    assert GRAMMAR.parse(f"/{H}/481x0.auto".encode()).in_format("webp").unlisted is True


ALL_FORMATS = frozenset({"jpg", "png", "webp", "avif"})


@pytest.mark.parametrize(
    "accept, formats, chosen",
    [
        (b"image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8", ALL_FORMATS, "avif"),
        (b"image/webp,*/*", ALL_FORMATS, "webp"),
        (b"image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5", ALL_FORMATS, "jpg"),
        (b"*/*", ALL_FORMATS, "jpg"),
        (None, ALL_FORMATS, "jpg"),
        (b"image/avif;q=0, image/webp", ALL_FORMATS, "webp"),
        (b"image/AVIF ; q=0.9", ALL_FORMATS, "avif"),
        (b"image/avif;q=0.0,image/webp;q=0", ALL_FORMATS, "jpg"),
        (b"image/avif;q=bogus", ALL_FORMATS, "jpg"),
        (b"image/avif;q=0.9;ext=1, image/webp;q=0.8", ALL_FORMATS, "avif"),  # a parameter after the weight
        (b"image/avif;seq=0, image/webp", ALL_FORMATS, "avif"),  # a parameter whose name ends in q
        (b"image/avif;q=0;ext=1, image/webp", ALL_FORMATS, "webp"),
        (b"image/avif; Q = 0.5", ALL_FORMATS, "avif"),
        (b"image/avif,image/webp", frozenset({"jpg", "png", "webp"}), "webp"),
    ],
)
def test_auto_format_negotiation(accept, formats, chosen):
    assert negotiate_format(accept, formats) == chosen


def test_auto_is_a_format_in_variant_urls_only():
    request = GRAMMAR.parse(f"/{H}/small.auto".encode())
    assert request.fmt == "auto"
    assert request.in_format("webp").key == f"{H}/320x0-inside.webp".encode()
    with pytest.raises(EdgeError):
        GRAMMAR.parse(f"/{H}.auto".encode())
