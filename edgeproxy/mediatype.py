"""
The media type of an image from its first bytes: a response's Content-Type must
say what the bytes are, not what the URL or an origin claims.
"""

from __future__ import annotations

_AVIF_BRANDS = (b"avif", b"avis")


def sniff_media_type(data: bytes) -> bytes | None:
    """The image type of `data` by its magic bytes, or None if it is not an allowed image."""
    if data.startswith(b"\xff\xd8\xff"):
        return b"image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return b"image/png"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return b"image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return b"image/webp"
    if data[4:8] == b"ftyp" and (data[8:12] in _AVIF_BRANDS or _has_avif_brand(data)):
        return b"image/avif"
    return None


def _has_avif_brand(data: bytes) -> bool:
    """AVIF files may list their brand among the compatible brands of the ftyp box."""
    box_size = int.from_bytes(data[:4], "big")
    brands = data[16:min(box_size, 64)]
    return any(brands[i : i + 4] in _AVIF_BRANDS for i in range(0, len(brands) - 3, 4))
