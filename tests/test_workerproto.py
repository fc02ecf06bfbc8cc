"""The supervisor-worker channel: AMP boxes leave at once, in order, even past a full socket."""

import socket

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.protocols import amp

from edgeproxy.workerproto import PromptAMP, Release


class Recorder(amp.AMP):
    def __init__(self):
        super().__init__()
        self.released = []

    @Release.responder
    def release(self, key, outcome):
        self.released.append((key, outcome))
        return {}


def channel(protocol_class):
    """One end adopted by the reactor (a unix transport, as the supervisor and workers use), the other returned raw."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    protocol = protocol_class()
    port = reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: protocol))
    ours.close()
    return protocol, theirs, port


@pytest.mark.parametrize("protocol_class, sent_at_once", [(PromptAMP, True), (amp.AMP, False)])
def test_a_box_is_on_the_socket_before_the_reactor_turns(protocol_class, sent_at_once):
    protocol, peer, _ = channel(protocol_class)
    try:
        protocol.callRemote(Release, key=b"k", outcome="disk")
        try:
            received = peer.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            received = b""
        assert (b"Release" in received) is sent_at_once
    finally:
        protocol.transport.loseConnection()
        peer.close()


@pytest_twisted.ensureDeferred
async def test_boxes_past_a_full_socket_arrive_whole_and_in_order():
    protocol, peer, _ = channel(PromptAMP)
    peer.setblocking(False)
    receiver = Recorder()
    reactor.adoptStreamConnection(peer.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: receiver))
    try:
        keys = [b"%05d" % i + b"x" * 40000 for i in range(40)]  # far more than a socket buffer holds
        for key in keys:
            protocol.callRemote(Release, key=key, outcome="disk")
        assert not protocol._direct  # the transport took over the rest
        for _ in range(200):
            if len(receiver.released) == len(keys):
                break
            await deferLater(reactor, 0.01, lambda: None)
        assert [key for key, _ in receiver.released] == keys
    finally:
        protocol.transport.loseConnection()
        receiver.transport.loseConnection()
        peer.close()
