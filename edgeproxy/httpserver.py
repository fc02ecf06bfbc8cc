"""
What a request means, whatever carries it: the checks every request passes (method,
Host, canonical path, signature), a memory hit answered at once, a miss handed to
the image service, and each response counted and (when sampled) logged. The
HTTP/1.1 connection (edgeproxy.http1) and HTTP/2 streams (below, over twisted.web)
are two kinds of Exchange.
"""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import Callable, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http

from edgeproxy.accesslog import AccessLog
from edgeproxy.cachedobject import IMMUTABLE, CachedObject
from edgeproxy.errors import EdgeError
from edgeproxy.imageservice import Fetched, ImageService
from edgeproxy.requesthead import canonical_path, split_target
from edgeproxy.requeststats import RequestStats
from edgeproxy.signing import SignaturePolicy
from edgeproxy.urls import AUTO, ImageRequest, UrlGrammar, names_auto, negotiate_format

log = Logger()
ALLOWED = b"GET, HEAD"
HIT_TIMING = b"cache;desc=memory"
PARSED_PATHS = 8192
_NONE = b"NONE"


class Exchange(Protocol):
    """One request and its one response, as the handler sees them."""

    method: bytes
    target: bytes  # as sent: path and query
    started: float  # time.perf_counter() when the request was complete
    vary: bool  # set by the handler: the response depends on Accept
    gone: bool  # the client left before its response

    def header(self, name: bytes) -> bytes | None: ...

    def peer(self) -> str: ...

    def send_object(self, obj: CachedObject, x_cache: bytes, timing: bytes, not_modified: bool) -> int:
        """Send a 200 (or a 304); returns the body bytes sent."""

    def send_error(self, error: EdgeError) -> int:
        """Send a one-line error; returns the body bytes sent."""


class EdgeHandler:
    """Turns one request into one response; knows nothing of sockets."""

    def __init__(
        self,
        grammar: UrlGrammar,
        hostnames: frozenset[bytes],
        images: ImageService,
        signatures: SignaturePolicy,
        access_log: AccessLog | None = None,
        clock: IReactorTime | None = None,
    ):
        from twisted.internet import reactor

        self._grammar = grammar
        self._hostnames = hostnames
        self.images = images
        self._signatures = signatures
        self._access_log = access_log
        self._clock = clock or reactor
        self.stats = RequestStats()
        self._parsed: dict[bytes, tuple[bytes, ImageRequest]] = {}

    def handle(self, exchange: Exchange) -> None:
        try:
            tenant = self._check_request(exchange)
        except EdgeError as error:
            return self.refuse(exchange, error)
        try:
            image = self._image(exchange)
        except EdgeError as error:  # past the method and Host checks, an auto URL's every answer varies
            exchange.vary = names_auto(exchange.target)
            return self.refuse(exchange, error)
        if image.fmt == AUTO:
            image = image.in_format(negotiate_format(exchange.header(b"accept"), self._grammar.formats))
            exchange.vary = True
        obj = self.images.cached(image)
        if obj is not None:
            return self._send(exchange, obj, b"HIT-MEMORY", HIT_TIMING, None)
        self._miss(exchange, image, tenant)

    def _check_request(self, exchange: Exchange) -> bytes:
        """The hostname (the tenant) of a GET or HEAD for a host we serve."""
        if exchange.method not in (b"GET", b"HEAD"):
            raise EdgeError(405, "method not allowed", {b"Allow": ALLOWED})
        host = exchange.header(b"host")
        if host is None:
            raise EdgeError(400, "missing Host header")
        hostname = _hostname(host)
        if hostname not in self._hostnames:
            raise EdgeError(421, "unknown host")
        return hostname

    def _image(self, exchange: Exchange) -> ImageRequest:
        path, query = split_target(exchange.target)
        parsed = self._parsed.get(path)
        if parsed is None:
            parsed = self._parse(path)
        self._signatures.check(parsed[1], parsed[0], query, self._clock.seconds())
        return parsed[1]

    def _parse(self, path: bytes) -> tuple[bytes, ImageRequest]:
        """Canonical path and what it names, remembered for the hot paths (a bounded memo, emptied when full)."""
        canonical = canonical_path(path)
        parsed = canonical, self._grammar.parse(canonical)
        if len(self._parsed) >= PARSED_PATHS:
            self._parsed.clear()
        self._parsed[path] = parsed
        return parsed

    def _miss(self, exchange: Exchange, image: ImageRequest, tenant: bytes) -> None:
        d = self.images.fetch(image, tenant)
        d.addCallbacks(self._fetched, self._failed, (exchange,), None, (exchange,))

    def _fetched(self, fetched: Fetched, exchange: Exchange) -> None:
        if not exchange.gone:
            self._send(exchange, fetched.obj, fetched.x_cache, fetched.timing, fetched)

    def _failed(self, failure: Failure, exchange: Exchange) -> None:
        if failure.check(EdgeError):
            error = failure.value
        else:
            log.failure("bug while serving {target}", failure, target=exchange.target)
            error = EdgeError(500, "internal error")
        if not exchange.gone:
            self.refuse(exchange, error)

    def _send(self, exchange: Exchange, obj: CachedObject, x_cache: bytes, timing: bytes, fetched: Fetched | None) -> None:
        not_modified = _etag_matches(exchange.header(b"if-none-match"), obj.etag)
        sent = exchange.send_object(obj, x_cache, timing, not_modified)
        self._done(exchange, 304 if not_modified else 200, x_cache, sent, fetched)

    def refuse(self, exchange: Exchange, error: EdgeError) -> None:
        """Answer with an error, counted and logged like any response."""
        sent = exchange.send_error(error)
        self._done(exchange, error.status, _NONE, sent, None)

    def _done(self, exchange: Exchange, status: int, x_cache: bytes, sent: int, fetched: Fetched | None) -> None:
        seconds = time.perf_counter() - exchange.started
        self.stats.record(status, x_cache, sent, seconds)
        access_log = self._access_log
        if access_log is not None and access_log.sampler.keep(status):
            access_log.emit(_access_fields(exchange, status, x_cache, sent, seconds, fetched, self._clock))


def _access_fields(
    exchange: Exchange, status: int, x_cache: bytes, sent: int, seconds: float, fetched: Fetched | None, clock: IReactorTime
) -> dict[str, object]:
    """One access-log line; only built for a request the sampler kept."""
    return {
        "time": round(clock.seconds(), 3),
        "client": exchange.peer(),
        "method": exchange.method.decode("ascii", "replace"),
        "host": (exchange.header(b"host") or b"").decode("ascii", "replace"),
        "path": exchange.target.decode("ascii", "replace"),
        "status": status,
        "bytes": sent,
        "cache": x_cache.decode(),
        "origin_ms": None if fetched is None or fetched.origin_ms is None else round(fetched.origin_ms, 1),
        "render_ms": None if fetched is None or fetched.render_ms is None else round(fetched.render_ms, 1),
        "total_ms": round(seconds * 1000, 3),
    }


def reason(status: int) -> bytes:
    """Twisted's table lacks some phrases (421 Misdirected Request); the stdlib has them."""
    return HTTPStatus(status).phrase.encode()


def error_body(error: EdgeError) -> bytes:
    return error.message.encode() + b"\n"


def _hostname(host: bytes) -> bytes:
    """The Host header without its port, lowercased (IPv6 literals keep their brackets)."""
    host = host.strip().lower()
    if host.startswith(b"["):
        return host.partition(b"]")[0] + b"]"
    return host.partition(b":")[0]


def _etag_matches(if_none_match: bytes | None, etag: bytes) -> bool:
    return if_none_match is not None and (if_none_match.strip() == b"*" or etag in if_none_match)


class StreamExchange:
    """An HTTP/2 stream (a twisted.web request) as an Exchange."""

    def __init__(self, request: http.Request, date: Callable[[], bytes]):
        self._request = request
        self._date = date
        self.method = request.method
        self.target = request.uri
        self.started = time.perf_counter()
        self.vary = False
        self.gone = False
        request.notifyFinish().addErrback(self._left)

    def _left(self, _: Failure) -> None:
        self.gone = True

    def header(self, name: bytes) -> bytes | None:
        return self._request.getHeader(name)

    def peer(self) -> str:
        return getattr(self._request.getClientAddress(), "host", "")

    def _headers(self, pairs: list[tuple[bytes, bytes]]) -> None:
        headers = self._request.responseHeaders
        headers.setRawHeaders(b"Date", [self._date()])
        headers.setRawHeaders(b"Server", [b"edgeproxy"])
        if self.vary:
            headers.setRawHeaders(b"Vary", [b"Accept"])
        for name, value in pairs:
            headers.setRawHeaders(name, [value])

    def send_object(self, obj: CachedObject, x_cache: bytes, timing: bytes, not_modified: bool) -> int:
        pairs = [(b"ETag", obj.etag), (b"Cache-Control", IMMUTABLE), (b"X-Cache", x_cache), (b"Server-Timing", timing)]
        if not_modified:
            self._headers(pairs)
            self._request.setResponseCode(304)
            self._request.finish()
            return 0
        self._headers(pairs + [(b"Content-Type", obj.media_type), (b"Content-Length", obj.content_length)])
        return self._finish(obj.body)

    def send_error(self, error: EdgeError) -> int:
        body = error_body(error)
        self._request.setResponseCode(error.status, reason(error.status))
        pairs = [(b"Content-Type", b"text/plain; charset=utf-8"), (b"Content-Length", b"%d" % len(body)), (b"Cache-Control", b"no-store")]
        self._headers(pairs + list(error.headers.items()))
        return self._finish(body)

    def _finish(self, body: bytes) -> int:
        if self.method == b"HEAD":
            self._request.finish()
            return 0
        self._request.write(body)
        self._request.finish()
        return len(body)


class HttpDate:
    """The Date header, formatted once a second rather than once a request."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = http.datetimeToString(second)
        return self._value


class _StreamRequest(http.Request):
    def process(self) -> None:
        site = self.channel.site
        site.handler.handle(StreamExchange(self, site.date.now))


class StreamSite(http.HTTPFactory):
    """twisted.web's HTTP/2 for TLS connections whose ALPN chose h2, with no per-request log line."""

    def __init__(self, handler: EdgeHandler, date: HttpDate, timeout: float):
        super().__init__(timeout=timeout)
        self.handler = handler
        self.date = date

    def buildProtocol(self, addr: object) -> http.HTTPChannel:
        channel = super().buildProtocol(addr)
        channel.requestFactory = _StreamRequest
        channel.site = self
        return channel

    def log(self, request: http.Request) -> None:
        """The access log is ours (edgeproxy.accesslog), sampled before anything is formatted."""
