"""
SIGHUP re-reads what can change live (the token maps) without touching a connection.
twistd leaves SIGHUP alone, and its default action would kill the process: every
process that serves or supervises handles it, whatever its chain, for as long as it
runs (`systemctl reload` may come at any time, even during a drain).
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

log = Logger()


class SighupService(Service):
    def __init__(self, reactor: IReactorFromThreads, reload: Callable[[], object]):
        self._reactor = reactor
        self._reload = reload

    def startService(self) -> None:
        super().startService()
        signal.signal(signal.SIGHUP, self._received)

    def stopService(self) -> None:
        """Ignored, not the default: a reload that reaches a process still stopping must not kill it mid-drain."""
        super().stopService()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _received(self, signum: int, frame: object) -> None:
        """A signal handler may interrupt the reactor anywhere: it only schedules the reload."""
        self._reactor.callFromThread(self._reload)


def nothing_to_reload() -> None:
    """The reload of a chain without shards: a log line, so that a `systemctl reload` is seen to have arrived."""
    log.info("SIGHUP: nothing to reload (only [shards] token maps change live, and the chain has no shards)")
