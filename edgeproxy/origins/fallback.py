"""
Trying sources in order until one delivers: the one rule shared by a shard pair
(primary, then secondary) and the whole origin chain (pair, then S3 regions).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from edgeproxy.deadline import with_deadline
from edgeproxy.errors import FailureKind, OriginFailure, SkippedHop, combine_kinds
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
            log_hop(name, failure)
            failures.append(failure)
    raise combine_failures(where, failures)


def log_hop(name: str, failure: OriginFailure) -> None:
    """
    A broken hop is logged with its reason. A 404 is an answer, not a failure: a name
    that exists nowhere (a bogus URL, a scan) would log a line per hop per request;
    edgeproxy_origin_requests_total{code="404"} counts them.
    """
    if isinstance(failure, SkippedHop) or failure.kind is FailureKind.NOT_FOUND:
        return
    log.info("origin hop {name} failed: {reason}", name=name, reason=failure.reason)


def combine_failures(where: str, failures: Sequence[OriginFailure]) -> OriginFailure:
    reasons = "; ".join(f"{f.where}: {f.reason}" for f in failures)
    return OriginFailure(combine_kinds([f.kind for f in failures]), where, reasons)


@implementer(IOrigin)
class FallbackOrigin:
    """An ordered chain of origins, e.g. a shard pair, then S3 in two regions, under one deadline."""

    def __init__(self, origins: Sequence[IOrigin], clock: IReactorTime, deadline: float):
        self.origins = tuple(origins)
        self.name = "chain"
        self._clock = clock
        self._deadline = deadline

    def fetch(self, image_hash: str, ext: str) -> "Deferred[bytes]":
        attempts = [(o.name, _bind(o, image_hash, ext)) for o in self.origins]
        d = ensureDeferred(first_success(self.name, attempts))
        reason = f"no origin delivered within {self._deadline:g}s"
        return with_deadline(d, self._clock, self._deadline, partial(OriginFailure, FailureKind.TIMEOUT, self.name, reason))


def _bind(origin: IOrigin, image_hash: str, ext: str) -> Attempt:
    return lambda: origin.fetch(image_hash, ext)
