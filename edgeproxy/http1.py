"""
The public HTTP/1.1 server, written for the cache hit: a hit costs one parse of
the head, one lookup and one write of prebuilt header lines and the body. It keeps
the edge's rules on every connection: requests are answered one at a time in the
order they came (pipelining), a head must arrive within `header_timeout` of its
first byte (slowloris) and a keep-alive connection may idle for `idle_timeout`,
what the socket does not take of a response at once is sent as the client reads it
(a slow reader holds one chunk, not a copy of the image; over TLS, what the socket
under TLS holds past its buffer) and a client that stops
reading for `send_timeout` is cut off, and past `max_connections` a new connection
is closed at once. TLS connections whose ALPN chose h2 go to twisted.web's HTTP/2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from twisted.internet.interfaces import IAddress, IDelayedCall, IPullProducer, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from edgeproxy.cachedobject import CachedObject
from edgeproxy.errors import EdgeError
from edgeproxy.httpserver import EdgeHandler, HttpDate, StreamSite, error_body, reason
from edgeproxy.promptwrite import PromptWriter, unsent
from edgeproxy.requesthead import MAX_HEAD, MAX_LINE, BadFraming, RequestHead, parse_head

CHUNK = 64 * 1024
_OK = b"HTTP/1.1 200 OK\r\nServer: edgeproxy\r\nDate: "
_NOT_MODIFIED = b"HTTP/1.1 304 Not Modified\r\nServer: edgeproxy\r\nDate: "
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_VARY = b"Vary: Accept\r\n"
_ERROR_HEADERS = b"Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n"


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    send_timeout: float = 30.0
    max_connections: int = 10_000


class Http1Exchange:
    """One request of a connection; answers it through the connection."""

    __slots__ = ("_connection", "_head", "method", "target", "started", "vary", "gone")

    def __init__(self, connection: Http1Connection, head: RequestHead):
        self._connection = connection
        self._head = head
        self.method = head.method
        self.target = head.target
        self.started = time.perf_counter()
        self.vary = False
        self.gone = False

    def header(self, name: bytes) -> bytes | None:
        return self._head.headers.get(name)

    def peer(self) -> str:
        return getattr(self._connection.transport.getPeer(), "host", "")

    def send_object(self, obj: CachedObject, x_cache: bytes, timing: bytes, not_modified: bool) -> int:
        if not_modified:
            head = [_NOT_MODIFIED, self._connection.date(), b"\r\n", obj.validators]
        else:
            head = [_OK, self._connection.date(), b"\r\n", obj.entity]
        head += (b"X-Cache: ", x_cache, b"\r\nServer-Timing: ", timing, b"\r\n")
        body = b"" if not_modified or self.method == b"HEAD" else obj.body
        return self._connection.respond(self._end(head), body, self._head.keep_alive)

    def send_error(self, error: EdgeError) -> int:
        body = error_body(error)
        status = b"HTTP/1.1 %d %s\r\nServer: edgeproxy\r\nDate: " % (error.status, reason(error.status))
        head = [status, self._connection.date(), b"\r\n", _ERROR_HEADERS, b"Content-Length: %d\r\n" % len(body)]
        head += (b"%s: %s\r\n" % item for item in error.headers.items())
        return self._connection.respond(self._end(head), b"" if self.method == b"HEAD" else body, self._head.keep_alive)

    def _end(self, head: list[bytes]) -> bytes:
        if self.vary:
            head.append(_VARY)
        if not self._head.keep_alive:
            head.append(_CLOSE)
        elif self._head.http10:
            head.append(_KEEP_ALIVE)
        head.append(b"\r\n")
        return b"".join(head)


class Http1Connection(Protocol):
    def __init__(self, site: EdgeSite):
        self._site = site
        self._handler = site.handler
        self._limits = site.limits
        self._clock = site.clock
        self.date = site.date.now
        self._buffer = b""
        self._current: Http1Exchange | None = None
        self._serving = False
        self._head_clock = False  # the deadline is a partial head's
        self._closing = False
        self._paused = False
        self._body: _BodySender | None = None
        self._flow: _TLSFlow | None = None
        self._deadline = 0.0
        self._timer: IDelayedCall | None = None
        self._abort_timer: IDelayedCall | None = None

    @property
    def sending(self) -> bool:
        """A response is still on its way out of the process (what a drain waits for)."""
        return self._body is not None or (self._flow is not None and self._flow.paused)

    def connectionMade(self) -> None:
        self._site.open.add(self)
        # A response on a plain socket goes out in one sendmsg(): through the transport
        # it would cost two epoll registrations.
        self._writer = PromptWriter(self.transport)
        if not self._writer.direct:
            self._flow = _TLSFlow(self)
            self.transport.registerProducer(self._flow, True)
        self._expect(self._limits.header_timeout)

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self._buffer = self._buffer + data if self._buffer else data
        if self._current is None:
            self._serve()
        elif len(self._buffer) > MAX_HEAD and not self._paused:
            self._paused = True  # pipelined requests pile up behind a slow one: stop reading
            self.transport.pauseProducing()

    def _serve(self) -> None:
        """Answer every complete head in the buffer, in order; a miss stops the loop until it is answered."""
        if self._serving:
            return
        self._serving = True
        try:
            while self._current is None and not self._closing and self._buffer:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    self._check_partial()
                    break
                head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
                self._start(head)
        finally:
            self._serving = False
        if self._current is None and not self._closing:
            self._await_next()

    def _await_next(self) -> None:
        """Idle until the next head starts; from its first byte it has `header_timeout` to complete."""
        if not self._buffer:
            self._expect(self._limits.idle_timeout)
        elif not self._head_clock:
            self._head_clock = True
            self._expect(self._limits.header_timeout)

    def _check_partial(self) -> None:
        buffer = self._buffer
        if b"\n\n" in buffer or b"\r\n\n" in buffer:
            self._refuse(BadFraming(400, "line ends must be CRLF"), buffer)
        elif b"\r\n" not in buffer[: MAX_LINE + 2] and len(buffer) > MAX_LINE:
            self._refuse(BadFraming(414, "request line too long"), buffer)
        elif len(buffer) > MAX_HEAD:
            self._refuse(BadFraming(431, "request head too large"), buffer)

    def _start(self, raw: bytes) -> None:
        self._head_clock = False
        if len(raw) > MAX_HEAD:
            return self._refuse(BadFraming(431, "request head too large"), raw)
        try:
            head = parse_head(raw)
        except BadFraming as error:
            return self._refuse(error, raw)
        self._current = Http1Exchange(self, head)
        self._handler.handle(self._current)

    def _refuse(self, error: BadFraming, raw: bytes) -> None:
        """
        A head we cannot trust: answer it, then close (its end, and the next request's
        start, are unknown). A HEAD still gets headers only.
        """
        method = b"HEAD" if raw.startswith(b"HEAD ") else b"GET"
        self._current = Http1Exchange(self, RequestHead(method, b"", {}, False, False))
        self._handler.refuse(self._current, error)

    def respond(self, head: bytes, body: bytes, keep_alive: bool) -> int:
        """
        Write one response; the next request is read once it is on its way. On a plain
        socket it goes out in one sendmsg(); what the socket does not take then is sent a
        chunk at a time as the client reads it, after which writes go straight out again.
        """
        if self._flow is not None:
            self._respond_tls(head, body, keep_alive)
            return len(body)
        writer = self._writer
        sent = writer.send_now((head, body))
        if sent == len(head) + len(body):
            self._finished(keep_alive)
        else:
            writer.hand_over()
            self._body = _BodySender(self, unsent((head, body), sent), keep_alive)
            self.transport.registerProducer(self._body, False)
        return len(body)

    def _respond_tls(self, head: bytes, body: bytes, keep_alive: bool) -> None:
        """
        Over TLS a response of a chunk or less is written at once, head and body as one
        record, while the socket under TLS has room; past its buffer the response waits
        whole, and is sent a chunk at a time as the client reads. Written at once every
        time, a client that pipelined hits and never read made the edge hold every answer
        (28 MB for 3000 of them); sent through a pull producer, each answer cost two more
        reactor turns (a 9 KB hit took 2x as long pipelined).
        """
        if len(body) <= CHUNK and not self._flow.paused:
            self.transport.write(head + body)
            return self._finished(keep_alive)
        self._body = _BodySender(self, [memoryview(head + body)] if len(body) <= CHUNK else [memoryview(head), memoryview(body)], keep_alive)
        self.drained()

    def drained(self) -> None:
        """TLS: write what is left of the response while the socket under TLS has room."""
        while self._body is not None and not self._flow.paused:
            self._body.resumeProducing()

    def body_sent(self, keep_alive: bool) -> None:
        if self._flow is None:
            self.transport.unregisterProducer()
            self._writer.take_back()
        self._body = None
        self._finished(keep_alive)

    def _finished(self, keep_alive: bool) -> None:
        self._current = None
        if not keep_alive:
            return self._close()
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        self._serve()

    def _expect(self, seconds: float) -> None:
        """Move the one deadline of this connection; its timer wakes up early at worst, then sleeps again."""
        self._deadline = deadline = self._clock.seconds() + seconds
        timer = self._timer
        if timer is None:
            self._timer = self._clock.callLater(seconds, self._check_deadline)
        elif timer.getTime() > deadline:
            timer.reset(seconds)

    def _check_deadline(self) -> None:
        self._timer = None
        if self._current is not None and self._body is None:
            return  # a fill in flight has deadlines of its own; a new one is set when it is answered
        remaining = self._deadline - self._clock.seconds()
        if remaining > 0:
            self._timer = self._clock.callLater(remaining, self._check_deadline)
        elif self._body is not None:
            self.transport.abortConnection()  # the client stopped reading
        else:
            self._close()

    def _close(self) -> None:
        """Close once what was written is sent; a client that never reads it is cut off."""
        if self._closing:
            return
        self._closing = True
        self._buffer = b""
        if self._flow is not None:
            self.transport.unregisterProducer()  # TLS closes once its producer is gone
        self.transport.loseConnection()
        self._abort_timer = self._clock.callLater(self._limits.send_timeout, self.transport.abortConnection)

    def send_progress(self) -> None:
        self._expect(self._limits.send_timeout)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._site.open.discard(self)
        self._closing = True
        if self._current is not None:
            self._current.gone = True
        for timer in (self._timer, self._abort_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._abort_timer = None


@implementer(IPushProducer)
class _TLSFlow:
    """
    Whether the socket under a TLS connection has room. Registered for the connection's
    life, it is paused when the TCP transport holds more than its buffer size (64 KiB)
    and resumed when that has been sent.
    """

    def __init__(self, connection: Http1Connection):
        self._connection = connection
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._connection.drained()

    def stopProducing(self) -> None:
        self.paused = True


@implementer(IPullProducer)
class _BodySender:
    """Writes what the socket did not take at once, a chunk at a time as the transport drains."""

    def __init__(self, connection: Http1Connection, pieces: list[memoryview], keep_alive: bool):
        self._connection = connection
        self._pieces = pieces
        self._keep_alive = keep_alive
        connection.send_progress()

    def resumeProducing(self) -> None:
        """Called at once on registration, then each time the transport has sent everything."""
        if not self._pieces:
            return self._connection.body_sent(self._keep_alive)
        piece = self._pieces[0]
        if len(piece) > CHUNK:
            self._pieces[0], piece = piece[CHUNK:], piece[:CHUNK]
        else:
            del self._pieces[0]
        self._connection.send_progress()
        self._connection.transport.write(bytes(piece))

    def stopProducing(self) -> None:
        self._pieces = []


class EdgeSite(Factory):
    """The public listeners' factory: HTTP/1.1 here, HTTP/2 (TLS with ALPN h2) through `streams`."""

    def __init__(self, handler: EdgeHandler, clock: IReactorTime, limits: ConnectionLimits):
        self.handler = handler
        self.clock = clock
        self.limits = limits
        self.date = HttpDate()
        self.streams = StreamSite(handler, self.date, limits.idle_timeout)
        self.connections = 0
        self.refused = 0
        self.open: set[Http1Connection] = set()

    def sending(self) -> int:
        """HTTP/1.1 connections whose response is still on its way: a drain lets them finish."""
        return sum(1 for connection in self.open if connection.sending)

    def buildProtocol(self, addr: IAddress) -> Protocol | None:
        if self.connections >= self.limits.max_connections:
            self.refused += 1
            return None
        return _ChooseByALPN(self, addr)


class _ChooseByALPN(Protocol):
    """
    Plain TCP connections are HTTP/1.1 at once; on TLS the choice waits for the first
    bytes, when ALPN has been negotiated. Until then the header deadline applies, so a
    handshake that never completes does not hold a connection. Every connection counts
    against max_connections from its start, handshake and HTTP/2 included.
    """

    def __init__(self, site: EdgeSite, addr: IAddress):
        self._site = site
        self._addr = addr
        self._inner: Protocol | None = None
        self._timer = None

    def makeConnection(self, transport: object) -> None:
        self._site.connections += 1
        super().makeConnection(transport)
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)  # a response is written whole: Nagle would only hold its last segment back
        if not hasattr(transport, "negotiatedProtocol"):
            self._choose(None)
        else:
            self._timer = self._site.clock.callLater(self._site.limits.header_timeout, transport.abortConnection)

    def _choose(self, protocol: bytes | None) -> None:
        if protocol == b"h2":
            self._inner = self._site.streams.buildProtocol(self._addr)
        else:
            self._inner = Http1Connection(self._site)
        self._inner.makeConnection(self.transport)
        self.dataReceived = self._inner.dataReceived  # type: ignore[method-assign]

    def dataReceived(self, data: bytes) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._choose(self.transport.negotiatedProtocol)
        self._inner.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._site.connections -= 1
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._inner is not None:
            self._inner.connectionLost(reason)
