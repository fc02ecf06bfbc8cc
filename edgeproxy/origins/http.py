"""
One HTTP backend: a GET over our own persistent connection pool, bounded by one
deadline that covers headers and body, and by a maximum body size enforced while
the bytes stream in (cancelling a collect would not stop them).
"""

from __future__ import annotations

import re
from functools import partial
from http.cookiejar import DefaultCookiePolicy
from typing import TYPE_CHECKING, Callable

from treq.client import HTTPClient
from treq.cookies import IndexableCookieJar
from twisted.application.service import Service
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust, trustRootFromCertificates
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, HTTPConnectionPool, ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IAgentEndpointFactory, IResponse
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.internet._sslverify import IOpenSSLTrustRoot

from edgeproxy.deadline import cancel_stays_cancel, with_deadline
from edgeproxy.errors import FailureKind, OriginFailure
from edgeproxy.promptwrite import PromptEndpoint

log = Logger()
_USER_AGENT = b"edgeproxy/0.1"
_ERROR_BODY_LIMIT = 64 * 1024


class ClientService(Service):
    """
    Our own HTTP client for origins: a persistent pool with room for `per_host` idle
    connections per backend (Twisted keeps 2 by default), closed when the service
    stops, and a cookie jar that never keeps a cookie, so no cookie ever travels
    from an origin's response into another request.
    """

    def __init__(self, reactor: IReactorTime, connect_timeout: float, per_host: int, trust: IOpenSSLTrustRoot | None = None):
        """`trust`: the CAs an https backend's chain must lead to (None: the platform's)."""
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = per_host
        endpoints = _BackendEndpoints(reactor, connect_timeout, trust or platformTrust())
        agent = Agent.usingEndpointFactory(reactor, endpoints, pool=self.pool)
        jar = IndexableCookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        self.client = HTTPClient(agent, cookiejar=jar)

    def stopService(self) -> "Deferred[None]":
        super().stopService()
        return self.pool.closeCachedConnections()


def trust_bundle(path: str) -> IOpenSSLTrustRoot:
    """The CA certificates of a PEM bundle, as the only roots https backends may chain to."""
    with open(path, "rb") as handle:
        blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", handle.read(), re.DOTALL)
    if not blocks:
        raise ValueError(f"{path} holds no PEM certificate")
    return trustRootFromCertificates([Certificate.loadPEM(block) for block in blocks])


@implementer(IAgentEndpointFactory)
class _BackendEndpoints:
    """
    A dead backend must be known at once. Twisted's HostnameEndpoint reports a refused
    connection only at its next attempt tick (0.3 s), and resolves even an IP literal in
    a thread: so IP literals connect directly, and names tick every 20 ms. An https
    backend's certificate is verified (service_identity) for the name in the URL.
    """

    def __init__(self, reactor: IReactorTime, connect_timeout: float, trust: IOpenSSLTrustRoot):
        self._reactor = reactor
        self._timeout = connect_timeout
        self._trust = trust

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        endpoint = PromptEndpoint(self._tcp(uri.host.decode("ascii"), uri.port))
        if uri.scheme != b"https":
            return endpoint
        return wrapClientTLS(optionsForClientTLS(uri.host.decode("ascii"), trustRoot=self._trust), endpoint)

    def _tcp(self, host: str, port: int) -> IStreamClientEndpoint:
        if isIPAddress(host):
            return TCP4ClientEndpoint(self._reactor, host, port, timeout=self._timeout)
        if isIPv6Address(host):
            return TCP6ClientEndpoint(self._reactor, host, port, timeout=self._timeout)
        return HostnameEndpoint(self._reactor, host.encode("ascii"), port, timeout=self._timeout, attemptDelay=0.02)


class HTTPBackend:
    """A server that answers GET {path} with the bytes of an image."""

    def __init__(
        self, client: HTTPClient, address: str, clock: IReactorTime, timeout: float, max_body: int, scheme: str = "http"
    ):
        self.address = address
        self._origin = f"{scheme}://{address}"
        self._client = client
        self._clock = clock
        self._timeout = timeout
        self._max_body = max_body

    def get(self, path: str, on_headers: Callable[[], object] = lambda: None, until: float | None = None) -> "Deferred[bytes]":
        """
        The body of a 200, or an OriginFailure; one deadline covers the whole exchange:
        the timeout, or less if the chain needs the answer `until` (reactor time) to leave
        time to the origins after this one. `on_headers` is told when the status line
        arrives (hedging waits for that); a cancel by the caller stays a CancelledError,
        which is no failure of the backend.
        """
        timeout = self._timeout if until is None else max(0.0, min(self._timeout, until - self._clock.seconds()))
        d = ensureDeferred(self._get(self._origin + path, on_headers))
        timed_out = partial(OriginFailure, FailureKind.TIMEOUT, self.address, f"no complete answer in {timeout:g}s")
        return cancel_stays_cancel(with_deadline(d, self._clock, timeout, timed_out)).addErrback(self._as_origin_failure)

    async def _get(self, url: str, on_headers: Callable[[], object]) -> bytes:
        response = await self._client.get(
            url, headers={b"User-Agent": _USER_AGENT}, allow_redirects=False, unbuffered=True
        )
        on_headers()
        if response.code == 200:
            return await read_body(response, self.address, self._max_body)
        kind = FailureKind.NOT_FOUND if response.code in (404, 410) else FailureKind.UPSTREAM
        try:
            await read_body(response, self.address, _ERROR_BODY_LIMIT)
        except OriginFailure:
            pass  # the status decides; a long or cut error page only costs the connection
        raise OriginFailure(kind, self.address, f"HTTP {response.code}", response.code)

    def _as_origin_failure(self, failure: Failure) -> Failure:
        if failure.check(OriginFailure, CancelledError):
            return failure
        if failure.check(ConnectTimeout):
            return Failure(OriginFailure(FailureKind.TIMEOUT, self.address, "connect timed out"))
        if not failure.check(ConnectError, DNSLookupError, ResponseFailed):
            log.failure("unexpected failure from {address}", failure, address=self.address)
        return Failure(OriginFailure(FailureKind.UPSTREAM, self.address, _describe(failure)))


def read_body(response: IResponse, where: str, limit: int) -> "Deferred[bytes]":
    """
    The whole body, or an OriginFailure naming `where` if it is over `limit` bytes or cut
    short. Cancelling aborts the connection, so a body that stalls cannot hold it.
    """
    body = _CappedBody(where, limit)
    response.deliverBody(body)
    if response.length is not UNKNOWN_LENGTH and response.length > limit:
        body.fail(f"body of {response.length} bytes is over {limit}")
    return body.done


def _describe(failure: Failure) -> str:
    if failure.check(ResponseFailed):
        reasons = failure.value.reasons
        return "response failed: " + ", ".join(r.getErrorMessage() or r.type.__name__ for r in reasons)
    return failure.getErrorMessage() or failure.type.__name__


class _CappedBody(Protocol):
    """Collects a body; aborts the connection once it passes `limit` or is cancelled."""

    def __init__(self, address: str, limit: int):
        self._address = address
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self.done: Deferred[bytes] = Deferred(self._abort)

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size <= self._limit:
            self._chunks.append(data)
        else:
            self.fail(f"body over {self._limit} bytes")

    def fail(self, reason: str) -> None:
        if not self.done.called:
            self.done.errback(OriginFailure(FailureKind.UPSTREAM, self._address, reason))
            self._abort(self.done)

    def connectionLost(self, reason: Failure) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(OriginFailure(FailureKind.UPSTREAM, self._address, "body cut short"))

    def _abort(self, _: object) -> None:
        self._chunks.clear()
        self.transport.stopProducing()
