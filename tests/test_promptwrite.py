"""Writes that leave at once, in order, even past a full socket, over a real TCP connection."""

import socket

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from edgeproxy.promptwrite import PromptEndpoint


async def connected(prompt: bool):
    """A client protocol connected through the endpoint, and the server's end as a raw socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", listener.getsockname()[1])
        protocol = await (PromptEndpoint(endpoint) if prompt else endpoint).connect(Factory.forProtocol(Protocol))
        server, _ = listener.accept()
    finally:
        listener.close()
    server.setblocking(False)
    return protocol, server


def waiting(server: socket.socket) -> bytes:
    try:
        return server.recv(1 << 20)
    except BlockingIOError:
        return b""


@pytest.mark.parametrize("prompt", [True, False])
@pytest_twisted.ensureDeferred
async def test_a_write_is_on_the_wire_before_the_reactor_turns(prompt):
    protocol, server = await connected(prompt)
    try:
        protocol.transport.writeSequence([b"GET / HTTP/1.1\r\n", b"\r\n"])
        assert (waiting(server) == b"GET / HTTP/1.1\r\n\r\n") is prompt
    finally:
        protocol.transport.loseConnection()
        server.close()


@pytest_twisted.ensureDeferred
async def test_writes_past_a_full_socket_arrive_whole_and_in_order():
    protocol, server = await connected(True)
    try:
        chunks = [b"%06d" % i + b"x" * 65530 for i in range(200)]  # 13 MB: far more than the socket buffers hold
        for chunk in chunks:  # as two parts, like a response's head and body: a send may stop inside either
            protocol.transport.writeSequence([chunk[:6], chunk[6:]])
        assert not protocol.transport.writer.direct  # the transport took over the rest
        received = b""
        for _ in range(1000):
            received += waiting(server)
            if len(received) >= len(chunks) * 65536:
                break
            await deferLater(reactor, 0.005, lambda: None)
        assert received == b"".join(chunks)
    finally:
        protocol.transport.loseConnection()
        server.close()
