"""
Sends the warmer's targets to the proxy being warmed: at most `concurrency` requests
in flight (a DeferredSemaphore; the input is pulled only as a slot frees, so memory
is bounded by that window, never by the log), at most `rate` a second (a token
bucket), each under one deadline over headers and body, bodies dropped as they
stream in. Connections are persistent: the pool keeps `concurrency` of them, not
Twisted's default 2, so a warm run does not reconnect for every request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, DeferredSemaphore, ensureDeferred
from twisted.internet.error import ConnectError, ConnectionRefusedError, DNSLookupError
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

from edgeproxy.deadline import with_deadline
from edgeproxy.tokenbucket import TokenBucket
from edgeproxy.warminput import Target
from edgeproxy.warmreport import Tally

_USER_AGENT = b"edgeproxy-warm/0.1"
_CONNECT_FAILURES = ("connection refused", "cannot connect", "DNS lookup failed")


class _TimedOut(Exception):
    pass


class _BodyCut(Exception):
    pass


class Replayer:
    """One proxy to warm; `replay()` may run several passes, `close()` drops the connections."""

    def __init__(self, reactor: IReactorTCP, target: str, host: str | None, concurrency: int, timeout: float, rate: float | None):
        """`target`: the proxy's base URL; `host`: a Host header for every request (else the log's)."""
        self._reactor = reactor
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = concurrency
        self._client = HTTPClient(Agent(reactor, connectTimeout=timeout, pool=self._pool))
        self._base = target.rstrip("/")
        self._host = host
        self._concurrency = concurrency
        self._timeout = timeout
        self._bucket = TokenBucket(rate, reactor) if rate else None

    def replay(self, targets: Iterable[Target], tally: Tally, answered_2xx: Callable[[Target], object] = lambda _: None) -> "Deferred[None]":
        """Every target, counted in `tally`; `answered_2xx` is told of each target answered 2xx."""
        return ensureDeferred(self._replay(targets, tally, answered_2xx))

    async def _replay(self, targets: Iterable[Target], tally: Tally, answered_2xx: Callable[[Target], object]) -> None:
        """
        Stops pulling targets if the proxy cannot be reached before it ever answered:
        replaying a million lines into a closed port would say the same thing a million times.
        """
        slots = DeferredSemaphore(self._concurrency)
        if self._bucket:
            self._bucket.start()
        try:
            for target in targets:
                await slots.acquire()
                if unreachable(tally):
                    slots.release()
                    break
                if self._bucket:
                    await self._bucket.take()
                ensureDeferred(self._send(target, tally, answered_2xx)).addBoth(lambda _: slots.release())
            for _ in range(self._concurrency):
                await slots.acquire()  # every request in flight has landed
        finally:
            if self._bucket:
                self._bucket.stop()

    def close(self) -> "Deferred[None]":
        return self._pool.closeCachedConnections()

    async def _send(self, target: Target, tally: Tally, answered_2xx: Callable[[Target], object]) -> None:
        exchange = ensureDeferred(self._exchange(target))
        try:
            status, x_cache, size = await with_deadline(exchange, self._reactor, self._timeout, _TimedOut)
        except Exception:
            tally.failed(describe(Failure()))
            return
        tally.answered(status, x_cache, size)
        if 200 <= status < 300:
            answered_2xx(target)

    async def _exchange(self, target: Target) -> tuple[int, str | None, int]:
        headers = {b"User-Agent": _USER_AGENT}
        if self._host or target.host:
            headers[b"Host"] = (self._host or target.host).encode("ascii")  # made ASCII when parsed
        response = await self._client.get(self._base + target.path, headers=headers, allow_redirects=False, unbuffered=True)
        size = await discard_body(response)
        x_cache = response.headers.getRawHeaders(b"X-Cache", [b""])[0].decode("latin-1")
        return response.code, x_cache or None, size


def unreachable(tally: Tally) -> bool:
    """The proxy refused or could not be connected to, and has never answered."""
    return not tally.responses and any(tally.errors[reason] for reason in _CONNECT_FAILURES)


def describe(failure: Failure) -> str:
    """A short, bounded reason for the summary (a count per reason, never per URL)."""
    if failure.check(_TimedOut):
        return "timeout"
    if failure.check(ConnectionRefusedError):
        return "connection refused"
    if failure.check(DNSLookupError):
        return "DNS lookup failed"
    if failure.check(ConnectError):
        return "cannot connect"
    if failure.check(ResponseFailed, ResponseNeverReceived, _BodyCut):
        return "connection lost"
    return failure.type.__name__


def discard_body(response: IResponse) -> "Deferred[int]":
    """Read the body to its end (so the connection can be reused) keeping nothing but its length."""
    body = _Discard()
    response.deliverBody(body)
    return body.done


class _Discard(Protocol):
    """Counts a body's bytes and drops them; cancelling `done` aborts the transfer."""

    def __init__(self) -> None:
        self.size = 0
        self.done: Deferred[int] = Deferred(lambda _: self.transport.stopProducing())

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)

    def connectionLost(self, reason: Failure) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(self.size)
        else:
            self.done.errback(_BodyCut(reason.getErrorMessage()))
