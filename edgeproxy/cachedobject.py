"""
A cached response body with what never changes about it (media type, ETag,
Content-Length) computed once, when it is stored, never on a hit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from edgeproxy.mediatype import sniff_media_type

IMMUTABLE = b"public, max-age=31536000, immutable"


@dataclass(frozen=True, slots=True)
class CachedObject:
    body: bytes
    media_type: bytes
    etag: bytes
    content_length: bytes

    @property
    def size(self) -> int:
        """What the object costs against a byte budget: its body plus a fixed overhead."""
        return len(self.body) + 256


def make_cached_object(body: bytes) -> CachedObject:
    """Build the stored form of an image; raises ValueError if the bytes are not an image."""
    media_type = sniff_media_type(body)
    if media_type is None:
        raise ValueError("not an image")
    etag = b'"' + hashlib.blake2b(body, digest_size=16).hexdigest().encode() + b'"'
    return CachedObject(body, media_type, etag, str(len(body)).encode())
