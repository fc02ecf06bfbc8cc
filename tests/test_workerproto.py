"""The supervisor-worker channel: AMP boxes leave at once (tests/test_promptwrite.py has the rest)."""

import socket

import pytest
from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.protocols import amp

from edgeproxy.workerproto import PromptAMP, Release


@pytest.mark.parametrize("protocol_class, sent_at_once", [(PromptAMP, True), (amp.AMP, False)])
def test_a_box_is_on_the_socket_before_the_reactor_turns(protocol_class, sent_at_once):
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    protocol = protocol_class()
    reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: protocol))
    ours.close()  # the reactor holds its own copy, a unix transport as the supervisor's and workers' are
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
