"""
Writes that leave at once. Twisted's transport.write() queues the bytes and sends
them on the reactor's next turn, after every other event of this one; in a burst of
100 new client connections a turn took 5-10 ms, and whatever was queued waited
through it: an origin request (9 ms between asking for it and the origin hearing it),
a box between the supervisor and a worker (3-13 ms a step of a cold miss). A
PromptWriter sends straight to the socket while nothing of ours is queued in the
transport; what the socket does not take goes to the transport, which from then on
owns the order of every write of that connection, until its owner knows the transport
has sent it all (`take_back`: the HTTP/1.1 server's pull producer is asked for more).
A response's head and body go out in one sendmsg(), without being joined first.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint, ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import implementer


class PromptWriter:
    def __init__(self, transport: ITransport):
        self._transport = transport
        handle = getattr(transport, "getHandle", lambda: None)()
        self._own = handle if isinstance(handle, socket.socket) else None  # never a TLS connection's handle
        self._socket = self._own

    @property
    def direct(self) -> bool:
        return self._socket is not None

    def hand_over(self) -> None:
        """From now on every write goes through the transport (a producer is about to use it)."""
        self._socket = None

    def take_back(self) -> None:
        """The transport has sent all it was given (it asked its pull producer for more): write straight to the socket again."""
        self._socket = self._own

    def write(self, data: bytes) -> None:
        self.write_parts((data,))

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write_parts(tuple(data))

    def write_parts(self, parts: tuple[bytes, ...]) -> None:
        sent = self.send_now(parts)
        if sent == sum(map(len, parts)):
            return
        self._socket = None
        self._transport.writeSequence([bytes(rest) for rest in unsent(parts, sent)] if sent else parts)

    def send_now(self, parts: tuple[bytes, ...]) -> int:
        """
        Send what the socket takes of `parts` at once and say how much that was: 0 while
        the transport owns the writes; all of it when the socket is broken (the transport
        sees that on its own, so nothing is queued for a dead connection).
        """
        sock = self._socket
        if sock is None:
            return 0
        try:
            return sock.sendmsg(parts)
        except BlockingIOError:
            return 0
        except OSError:
            self._socket = self._own = None
            return sum(map(len, parts))


def unsent(parts: tuple[bytes, ...], sent: int) -> list[memoryview]:
    """What is left of `parts` once their first `sent` bytes are sent, without copying it."""
    rest = []
    for part in parts:
        if sent >= len(part):
            sent -= len(part)
        else:
            rest.append(memoryview(part)[sent:])
            sent = 0
    return rest


class _PromptProtocol(ProtocolWrapper):
    def makeConnection(self, transport: ITransport) -> None:
        self.writer = PromptWriter(transport)
        super().makeConnection(transport)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.writer.writeSequence(data)


class _PromptFactory(WrappingFactory):
    protocol = _PromptProtocol


@implementer(IStreamClientEndpoint)
class PromptEndpoint:
    """A client endpoint whose connections write at once; wrap the TCP one, under any TLS."""

    def __init__(self, endpoint: IStreamClientEndpoint):
        self._endpoint = endpoint

    def connect(self, factory: Factory) -> "Deferred[Protocol]":
        return self._endpoint.connect(_PromptFactory(factory)).addCallback(lambda wrapper: wrapper.wrappedProtocol)
