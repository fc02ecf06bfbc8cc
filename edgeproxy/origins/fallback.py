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

from edgeproxy.deadline import share, with_deadline
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
    """
    An ordered chain of origins, e.g. a shard pair, then S3 in two regions, under one
    deadline. Each origin gets at most an equal share of the time the deadline has left
    (a third of it for a pair before two regions): a hung pair would otherwise use it all,
    and S3, which may well have the image, would never be asked.
    """

    def __init__(self, origins: Sequence[IOrigin], clock: IReactorTime, deadline: float):
        self.origins = tuple(origins)
        self.name = "chain"
        self._clock = clock
        self._deadline = deadline

    def fetch(self, image_hash: str, ext: str, until: float | None = None) -> "Deferred[bytes]":
        now = self._clock.seconds()
        end = now + self._deadline if until is None else min(until, now + self._deadline)
        count = len(self.origins)
        attempts = [(o.name, self._bind(o, image_hash, ext, end, count - i)) for i, o in enumerate(self.origins)]
        d = ensureDeferred(first_success(self.name, attempts))
        reason = f"no origin delivered within {end - now:g}s"
        return with_deadline(d, self._clock, end - now, partial(OriginFailure, FailureKind.TIMEOUT, self.name, reason))

    def _bind(self, origin: IOrigin, image_hash: str, ext: str, end: float, left: int) -> Attempt:
        """`left`: this origin and those after it, which share the time until `end`."""
        return lambda: origin.fetch(image_hash, ext, share(self._clock, end, left))
