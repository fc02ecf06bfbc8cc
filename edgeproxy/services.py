"""The pieces every part of the service tree is built from: start/stop hooks and thread pools."""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.python.threadpool import ThreadPool


class HookService(Service):
    """
    Ties a part's start and stop to the service tree: thread pools, the disk index
    rebuild (in the background: serving does not wait), the render processes.
    """

    def __init__(self, start: Callable[[], object] = lambda: None, stop: Callable[[], object] = lambda: None):
        self._start = start
        self._stop = stop

    def startService(self) -> None:
        super().startService()
        self._start()

    def stopService(self) -> None:
        super().stopService()
        self._stop()


def thread_pool(name: str, size: int, top: MultiService) -> ThreadPool:
    """A dedicated thread pool (never the reactor's, which DNS uses), running with the tree."""
    pool = ThreadPool(minthreads=1, maxthreads=size, name=name)
    HookService(pool.start, pool.stop).setServiceParent(top)
    return pool


def cancelling(result: object, call: IDelayedCall) -> object:
    """A callback that cancels a timer (a deadline) once what it guarded is done."""
    if call.active():
        call.cancel()
    return result


class SequentialService(MultiService):
    """
    Stops its children one after another, last added first, each waiting for the one
    before: the public listeners drain before the admin port closes and before the
    thread pools and disk tier that in-flight requests still need are stopped.
    """

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        d: Deferred[None] = succeed(None)
        for child in reversed(list(self)):
            d.addCallback(lambda _, child=child: child.stopService())
        return d
