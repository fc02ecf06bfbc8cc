"""
The render queue: at most `workers` renders run at once, at most `max_waiting` wait,
and beyond that a request is shed at once with 503 and Retry-After, before its
original is even fetched. While others wait, no tenant (hostname) holds more than
its share of the workers: the seed system's per-customer limiter, so one site's
burst of new sizes cannot starve the others.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Callable

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from edgeproxy.errors import EdgeError

Job = Callable[[], Deferred]


class RenderQueue:
    def __init__(self, workers: int, max_waiting: int, tenant_share: float, retry_after: int = 2):
        self.workers = workers
        self.max_waiting = max_waiting
        self.tenant_limit = max(1, int(workers * tenant_share))
        self._retry_after = b"%d" % retry_after
        self._waiting: OrderedDict[bytes, deque[tuple[Job, Deferred]]] = OrderedDict()
        self._running: dict[bytes, int] = {}
        self.waiting = 0
        self.shed = 0

    @property
    def running(self) -> int:
        return sum(self._running.values())

    def check_room(self) -> None:
        """
        Refuse now, before any origin fetch, if a new render could not even wait. A
        worker can be free while renders wait (every waiting tenant at its share): the
        cap holds then too, or the queue would grow without bound.
        """
        if self.waiting >= self.max_waiting and (self.waiting or self.running >= self.workers):
            self.shed += 1
            raise EdgeError(503, "busy rendering, retry shortly", {b"Retry-After": self._retry_after})

    def run(self, tenant: bytes, job: Job) -> Deferred:
        """Run `job` when a worker is free and `tenant` is within its share."""
        self.check_room()
        done: Deferred = Deferred()
        self._waiting.setdefault(tenant, deque()).append((job, done))
        self.waiting += 1
        self._dispatch()
        return done

    def _dispatch(self) -> None:
        while self.running < self.workers:
            tenant = self._next_tenant()
            if tenant is None:
                return
            job, done = self._waiting[tenant].popleft()
            if not self._waiting[tenant]:
                del self._waiting[tenant]
            self.waiting -= 1
            self._running[tenant] = self._running.get(tenant, 0) + 1
            maybeDeferred(job).addBoth(self._finished, tenant, done)

    def _next_tenant(self) -> bytes | None:
        """Round robin over tenants under their share; a lone tenant may use every worker."""
        for tenant in self._waiting:
            if self._running.get(tenant, 0) < self.tenant_limit or len(self._waiting) == 1:
                self._waiting.move_to_end(tenant)
                return tenant
        return None

    def _finished(self, result: object, tenant: bytes, done: Deferred) -> None:
        self._running[tenant] -= 1
        if not self._running[tenant]:
            del self._running[tenant]
        self._dispatch()
        done.callback(result) if not isinstance(result, Failure) else done.errback(result)
