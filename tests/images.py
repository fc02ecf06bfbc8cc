"""Real images generated with pyvips for the tests, named by their SHA-1 as in production."""

from __future__ import annotations

import hashlib

import pyvips


def photo(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    """A photo-like JPEG: gradients plus noise, so each seed gives different bytes."""
    xy = pyvips.Image.xyz(width, height)
    red = ((xy[0] * 255 / width + seed * 37) % 256).cast("uchar")
    green = (xy[1] * 255 / height).cast("uchar")
    blue = (pyvips.Image.gaussnoise(width, height, sigma=20, mean=128 + seed % 64)).cast("uchar")
    image = red.bandjoin([green, blue]).copy(interpretation="srgb")
    return image.jpegsave_buffer(Q=85)


def png(width: int = 64, height: int = 64) -> bytes:
    return pyvips.Image.black(width, height, bands=3).pngsave_buffer()


def name_of(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()
