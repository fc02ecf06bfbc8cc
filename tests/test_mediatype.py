import pyvips
import pytest

from edgeproxy.mediatype import sniff_media_type
from tests.images import photo, png

IMAGE = pyvips.Image.black(8, 8, bands=3)


@pytest.mark.parametrize(
    "data, expected",
    [
        (photo(16, 16), b"image/jpeg"),
        (png(), b"image/png"),
        (IMAGE.gifsave_buffer(), b"image/gif"),
        (IMAGE.webpsave_buffer(), b"image/webp"),
        (IMAGE.heifsave_buffer(compression="av1"), b"image/avif"),
        (b"", None),
        (b"<html><body>Not found</body></html>", None),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', None),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", None),
    ],
)
def test_sniff(data, expected):
    assert sniff_media_type(data) == expected
