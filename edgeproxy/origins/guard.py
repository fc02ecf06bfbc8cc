"""
One backend as the chain sees it: its passive health, a cap on its requests in flight
(a cold POP must not stampede one shard), its recent latency for hedging, and its
metrics. Every request to a shard member or an S3 region goes through one of these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from edgeproxy import metrics
from edgeproxy.errors import FailureKind, OriginFailure, SkippedHop
from edgeproxy.origins import IOrigin
from edgeproxy.origins.health import BackendHealth, HealthPolicy
from edgeproxy.origins.hedging import LatencyWindow

OnHeaders = Callable[[], object]
Request = Callable[[OnHeaders], "Deferred[bytes]"]

_CODES = {FailureKind.NOT_FOUND: "404", FailureKind.TIMEOUT: "timeout", FailureKind.UPSTREAM: "error"}


class GuardedBackend:
    def __init__(self, name: str, clock: IReactorTime, policy: HealthPolicy, max_in_flight: int, latency: LatencyWindow):
        self.name = name
        self.health = BackendHealth(clock, policy)
        self.latency = latency
        self.in_flight = 0
        self._clock = clock
        self._max_in_flight = max_in_flight
        self._seconds = metrics.ORIGIN_SECONDS.labels(name)
        self._up = metrics.BACKEND_UP.labels(name)
        self._up.set(1)
        metrics.ORIGIN_HEDGES.labels(name)  # a series from the start: a dashboard's rate() sees 0, not nothing

    async def call(self, key: str, request: Request, force: bool = False) -> bytes:
        """
        Send `request` unless the backend is resting (down, cooldown running) or full;
        `force` is the panic mode of a pair whose every member is down.
        """
        if self.in_flight >= self._max_in_flight:
            raise OriginFailure(FailureKind.BUSY, self.name, f"{self.in_flight} requests in flight")
        probe = not self.health.up
        if not (self.health.admit() or force):
            raise SkippedHop(self.name)
        self.in_flight += 1
        started = self._clock.seconds()
        try:
            body = await request(lambda: self.latency.add(self._clock.seconds() - started))
        except CancelledError:
            if probe:
                self.health.probe_released()
            raise
        except OriginFailure as failure:
            self._settle(key, started, failure)
            raise
        finally:
            self.in_flight -= 1
        self._settle(key, started, None)
        return body

    def _settle(self, key: str, started: float, failure: OriginFailure | None) -> None:
        self._seconds.observe(self._clock.seconds() - started)
        if failure is None:
            code = "200"
            self.health.succeeded()
        else:
            code = str(failure.status) if failure.status else _CODES.get(failure.kind, "error")
            if failure.kind is FailureKind.NOT_FOUND:
                self.health.succeeded()
            else:
                self.health.failed(key)
        metrics.ORIGIN_REQUESTS.labels(self.name, code).inc()
        self._up.set(1 if self.health.up else 0)


class BackendOrigin(Protocol):
    """
    An origin that is a single backend (an S3 region, a directory): it tells `on_headers`
    when its answer begins, so the status page knows its time to headers.
    """

    name: str

    def fetch(self, image_hash: str, ext: str, until: float | None = None, on_headers: OnHeaders = ...) -> "Deferred[bytes]": ...


@implementer(IOrigin)
class GuardedOrigin:
    """An origin that is a single backend, such as an S3 region: judged and counted like a shard server."""

    def __init__(self, origin: BackendOrigin, guard: GuardedBackend):
        self.name = origin.name
        self._origin = origin
        self._guard = guard

    def fetch(self, image_hash: str, ext: str, until: float | None = None) -> "Deferred[bytes]":
        return ensureDeferred(self._guard.call(image_hash, lambda on_headers: self._origin.fetch(image_hash, ext, until, on_headers)))
