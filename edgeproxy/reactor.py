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

Its TCP listeners accept at most `ACCEPTS_PER_TURN` connections per turn of the loop,
where Twisted's grow to 100 and more, like nginx without `multi_accept`. In a burst of
new connections all asking for one cold image (a page's worth of browsers) the stock
port builds every connection before any request is read, so the one origin request
waits 3-8 ms; a few per turn let the first request through at once, and the rest are
accepted while the origin works (100-way cold miss, one process: p50 over the
origin 7.7 and 8.0 ms in two runs of 12 rounds, against 10.2 and 8.8).
Against a storm of one-request connections it costs about 5 %; accepting one per turn
cost 13 %.
"""

from __future__ import annotations

import errno
import socket
import sys

from twisted.internet import tcp
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.interfaces import IListeningPort
from twisted.internet.main import installReactor
from twisted.internet.protocol import Factory
from twisted.logger import Logger

log = Logger()
ACCEPTS_PER_TURN = 4


class FewAcceptsPort(tcp.Port):
    def doRead(self) -> None:
        self.numberAccepts = ACCEPTS_PER_TURN  # Twisted raises it after a full turn
        super().doRead()


class EdgeReactor(EPollReactor):
    def listenTCP(self, port: int, factory: Factory, backlog: int = 50, interface: str = "") -> FewAcceptsPort:
        listening = FewAcceptsPort(port, factory, backlog, interface, self)
        listening.startListening()
        return listening

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: socket.AddressFamily, factory: Factory) -> IListeningPort:
        """A worker's listener and a systemd socket come this way; a Unix socket stays Twisted's."""
        if addressFamily not in (socket.AF_INET, socket.AF_INET6):
            return super().adoptStreamPort(fileDescriptor, addressFamily, factory)
        listening = FewAcceptsPort._fromListeningDescriptor(self, fileDescriptor, addressFamily, factory)
        listening.startListening()
        return listening

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
