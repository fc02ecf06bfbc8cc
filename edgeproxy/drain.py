"""
SIGTERM drains: /healthz answers 503 at once (the balancer stops sending traffic), the
public listeners close, and the fills already in flight (origin fetches, renders) and
the responses still being sent get up to `timeout` seconds to reach their clients
before the process exits: waiting for the fills alone, a slow reader of a large image
got its first 3.6 MB of 12.5 MB.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from edgeproxy.admin import HealthResource

log = Logger()
_POLL = 0.05


class DrainService(MultiService):
    """Its children are the public listeners."""

    def __init__(self, health: HealthResource, busy: Callable[[], int], clock: IReactorTime, timeout: float):
        super().__init__()
        self._health = health
        self._busy = busy
        self._clock = clock
        self._timeout = timeout

    def stopService(self) -> Deferred[None]:
        self._health.draining = True
        log.info("draining: {n} fills or responses in flight, waiting up to {t:g}s", n=self._busy(), t=self._timeout)
        d = super().stopService()
        return d.addCallback(lambda _: ensureDeferred(self._wait(self._clock.seconds() + self._timeout)))

    async def _wait(self, deadline: float) -> None:
        while self._busy() and self._clock.seconds() < deadline:
            await deferLater(self._clock, _POLL, lambda: None)
        if self._busy():
            log.warn("drain timed out with {n} fills or responses in flight", n=self._busy())
