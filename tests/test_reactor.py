"""The reactor `twistd edgeproxy` installs: epoll dispatch without the log context, and
one descriptor's failure never stops the loop for the others."""

import socket

import pytest
from twisted.logger import globalLogPublisher

from twisted.internet.protocol import Factory, Protocol

from edgeproxy.reactor import ACCEPTS_PER_TURN, EdgeReactor
from tests.configs import write_config
from tests.twistd import Twistd


class Reader:
    """A read descriptor on one end of a socket pair; `b"boom"` makes its doRead raise."""

    def __init__(self, sock: socket.socket, lost_raises: bool = False):
        self.sock, self.lost_raises = sock, lost_raises
        self.data, self.lost = b"", []

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "Reader"

    def doRead(self):
        self.data += self.sock.recv(100)
        if self.data == b"boom":
            raise ValueError("boom")

    def connectionLost(self, reason) -> None:
        self.lost.append(reason)
        if self.lost_raises:
            raise RuntimeError("connectionLost failed too")


@pytest.fixture
def logged():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def pair():
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    return ours, theirs


def test_a_failing_descriptor_is_logged_and_dropped_and_the_others_are_still_served(logged):
    reactor = EdgeReactor()
    (bad, bad_peer), (good, good_peer) = pair(), pair()
    broken, healthy = Reader(bad, lost_raises=True), Reader(good)
    try:
        reactor.addReader(broken)
        reactor.addReader(healthy)
        bad_peer.send(b"boom")
        good_peer.send(b"hello")
        reactor.doIteration(1)
        assert healthy.data == b"hello" and not healthy.lost
        assert broken.lost[0].check(ValueError)
        assert broken not in reactor.getReaders() and healthy in reactor.getReaders()
        failures = {type((e.get("log_failure") or e["failure"]).value) for e in logged if "log_failure" in e or "failure" in e}
        assert failures == {ValueError, RuntimeError}  # doRead's error, then connectionLost's
        good_peer.send(b" again")
        reactor.doIteration(1)
        assert healthy.data == b"hello again"
    finally:
        reactor.removeAll()
        for s in (bad, bad_peer, good, good_peer):
            s.close()
        reactor._poller.close()


class Counted(Factory):
    protocol = Protocol

    def __init__(self):
        self.built = 0

    def buildProtocol(self, addr):
        self.built += 1
        return super().buildProtocol(addr)


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    return sock


@pytest.mark.parametrize("how", ["listenTCP", "adoptStreamPort"])
def test_a_burst_of_connections_is_accepted_a_few_per_turn(how):
    """So that the first requests are read (and a cold image fetched) before the burst is all accepted."""
    reactor, factory = EdgeReactor(), Counted()
    held = listening_socket()
    if how == "listenTCP":
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    else:
        port = reactor.adoptStreamPort(held.fileno(), socket.AF_INET, factory)
    clients = [socket.create_connection(("127.0.0.1", port.getHost().port)) for _ in range(3 * ACCEPTS_PER_TURN + 1)]
    try:
        seen = []
        for _ in range(4):
            reactor.doIteration(1)
            seen.append(factory.built)
        assert seen == [ACCEPTS_PER_TURN * n for n in (1, 2, 3)] + [3 * ACCEPTS_PER_TURN + 1]
    finally:
        for client in clients:
            client.close()
        port.stopListening()
        reactor.removeAll()
        held.close()
        reactor._poller.close()


def test_twistd_edgeproxy_runs_on_it_unless_told_otherwise(tmp_path):
    twistd = Twistd(write_config(tmp_path), tmp_path)
    try:
        assert "reactor class: edgeproxy.reactor.EdgeReactor" in twistd.log.read_text()
        assert twistd.get("/healthz", admin=True)[0] == 200
    finally:
        twistd.stop()
