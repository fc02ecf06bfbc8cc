"""
SIGHUP re-reads what can change live (the token maps) without touching a connection.
twistd leaves SIGHUP alone, and its default action would kill the process.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorFromThreads


class SighupService(Service):
    def __init__(self, reactor: IReactorFromThreads, reload: Callable[[], object]):
        self._reactor = reactor
        self._reload = reload
        self._previous: object = signal.SIG_DFL

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._received)

    def stopService(self) -> None:
        super().stopService()
        signal.signal(signal.SIGHUP, self._previous)

    def _received(self, signum: int, frame: object) -> None:
        """A signal handler may interrupt the reactor anywhere: it only schedules the reload."""
        self._reactor.callFromThread(self._reload)
