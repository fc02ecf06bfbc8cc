import pytest

from edgeproxy.errors import EdgeError
from edgeproxy.urls import Geometry, UrlGrammar

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
        (f"/{H}/481x0.jpg", 403),
        (f"/{H}/100x100.jpg", 403),
    ],
)
def test_refused_paths(path, status):
    with pytest.raises(EdgeError) as caught:
        GRAMMAR.parse(path.encode())
    assert caught.value.status == status
    assert "\n" not in caught.value.message
