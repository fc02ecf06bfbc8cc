"""
Twisted's epoll reactor without its per-event log context, installed by `twistd
edgeproxy` unless `--reactor` names another.

The stock `doPoll` runs every ready descriptor inside `log.callWithLogger`, which
pushes a context naming the selectable's `logPrefix()` so that legacy `log.msg` calls
made there get a `system` field, and pops it again. py-spy on a worker serving memory
hits under wrk (64 connections) put that wrapping at 15-17 % of the worker's CPU, as
much as parsing and answering the request. Nothing in edgeproxy logs through the
legacy context, so log lines only lose that prefix. What escapes a selectable's
`doRead`/`doWrite` is still logged and disconnects it (`_doReadOrWrite` does that);
what escapes its disconnection is logged here, as `callWithLogger` did, and the loop
goes on.
"""

from __future__ import annotations

import errno
import sys

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import installReactor
from twisted.logger import Logger

log = Logger()


class EdgeReactor(EPollReactor):
    def doPoll(self, timeout: float | None) -> None:
        try:
            events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
        except OSError as error:
            if error.errno == errno.EINTR:
                return
            raise
        selectables, handle = self._selectables, self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                handle(selectable, fd, event)
            except BaseException:
                log.failure("unhandled error on {selectable!r}", selectable=selectable)

    doIteration = doPoll


def install_unless_chosen() -> None:
    """A reactor already installed (`twistd --reactor`, a test runner) is kept."""
    if "twisted.internet.reactor" not in sys.modules:
        installReactor(EdgeReactor())
