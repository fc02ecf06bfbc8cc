"""
A cached response body with what never changes about it (media type, ETag,
Content-Length, and those header lines already formatted) computed once, when it
is stored, never on a hit.
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
    validators: bytes  # the header lines a 304 repeats: ETag and Cache-Control
    entity: bytes  # the header lines of a 200: the validators, Content-Type and Content-Length

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
    length = b"%d" % len(body)
    validators = b"ETag: " + etag + b"\r\nCache-Control: " + IMMUTABLE + b"\r\n"
    entity = validators + b"Content-Type: " + media_type + b"\r\nContent-Length: " + length + b"\r\n"
    return CachedObject(body, media_type, etag, length, validators, entity)
