"""
Trying sources in order until one delivers: the one rule shared by a shard pair
(primary, then secondary) and the whole origin chain (pair, then S3 regions).
"""

from __future__ import annotations

from typing import Awaitable, Callable, Sequence

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from zope.interface import implementer

from edgeproxy.errors import OriginFailure, combine_kinds
from edgeproxy.origins import IOrigin

log = Logger()
Attempt = Callable[[], Awaitable[bytes]]


async def first_success(where: str, attempts: Sequence[tuple[str, Attempt]]) -> bytes:
    """Run attempts in order; the first body wins, else one failure combining them all."""
    failures: list[OriginFailure] = []
    for name, attempt in attempts:
        try:
            return await attempt()
        except OriginFailure as failure:
            log.info("origin hop {name} failed: {reason}", name=name, reason=failure.reason)
            failures.append(failure)
    reasons = "; ".join(f"{f.where}: {f.reason}" for f in failures)
    raise OriginFailure(combine_kinds([f.kind for f in failures]), where, reasons)


@implementer(IOrigin)
class FallbackOrigin:
    """An ordered chain of origins, e.g. a shard pair, then S3 in two regions."""

    def __init__(self, origins: Sequence[IOrigin]):
        self.origins = tuple(origins)
        self.name = "chain"

    def fetch(self, image_hash: str, ext: str) -> "Deferred[bytes]":
        attempts = [(o.name, _bind(o, image_hash, ext)) for o in self.origins]
        return ensureDeferred(first_success(self.name, attempts))


def _bind(origin: IOrigin, image_hash: str, ext: str) -> Attempt:
    return lambda: origin.fetch(image_hash, ext)
