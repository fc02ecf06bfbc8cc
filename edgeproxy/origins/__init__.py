"""
Where originals come from. Every origin provides IOrigin, so a shard pair, a local
directory and (later) S3 regions compose into one fallback chain.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

from edgeproxy.errors import FailureKind, OriginFailure

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred


class IOrigin(Interface):
    """A source of original images, addressed by content hash and stored extension."""

    name = Attribute("A short name for logs and metrics (never a URL or a hash).")

    def fetch(image_hash: str, ext: str, until: float | None = None) -> "Deferred[bytes]":
        """
        Fire with the stored bytes, or fail with an OriginFailure whose kind says
        whether the object is absent (go on), or the origin broken or too slow.
        `until` (reactor time) is when a chain needs the origin to be done, so that
        the origins after it still get their share of its deadline.
        """


def check_content(body: bytes, image_hash: str, where: str) -> bytes:
    """
    Names are SHA-1 hashes of the content, so a body that does not hash to its name is
    corrupt (cut short without a Content-Length, bit rot, the wrong file): a failed hop,
    never an object to cache as immutable.
    """
    if hashlib.sha1(body).hexdigest() != image_hash:
        raise OriginFailure(FailureKind.UPSTREAM, where, "content does not match its SHA-1 name")
    return body


def render_template(template: str, image_hash: str, ext: str) -> str:
    """Fill a storage layout template such as `{p6}/{hash}.{ext}`."""
    return template.format(hash=image_hash, ext=ext, p2=image_hash[:2], p4=image_hash[:4], p6=image_hash[:6])
