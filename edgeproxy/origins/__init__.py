"""
Where originals come from. Every origin provides IOrigin, so a shard pair, a local
directory and (later) S3 regions compose into one fallback chain.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IOrigin(Interface):
    """A source of original images, addressed by content hash and stored extension."""

    name = Attribute("A short name for logs and metrics (never a URL or a hash).")

    def fetch(image_hash: str, ext: str) -> "Deferred[bytes]":
        """
        Fire with the stored bytes, or fail with an OriginFailure whose kind says
        whether the object is absent (go on), or the origin broken or too slow.
        """


def render_template(template: str, image_hash: str, ext: str) -> str:
    """Fill a storage layout template such as `{p6}/{hash}.{ext}`."""
    return template.format(hash=image_hash, ext=ext, p2=image_hash[:2], p4=image_hash[:4], p6=image_hash[:6])
