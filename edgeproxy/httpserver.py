"""
The client-facing HTTP layer: a twisted.web HTTP/1.1 (and h2) request that skips
resource traversal and goes straight to the image service, answering hits
synchronously from prebuilt parts of the cached object.
"""

from __future__ import annotations

import time
from http import HTTPStatus

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http

from edgeproxy.cachedobject import IMMUTABLE, CachedObject
from edgeproxy.errors import EdgeError
from edgeproxy.imageservice import Fetched, ImageService
from edgeproxy.urls import AUTO, ImageRequest, UrlGrammar, negotiate_format

log = Logger()
_ALLOWED = b"GET, HEAD"
_TEXT = b"text/plain; charset=utf-8"
_SERVER = b"edgeproxy"


class _HttpDate:
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


class EdgeHandler:
    """Turns one request into one response; knows nothing of sockets."""

    def __init__(self, grammar: UrlGrammar, hostnames: frozenset[bytes], images: ImageService):
        self._grammar = grammar
        self._hostnames = hostnames
        self.images = images
        self._date = _HttpDate()

    def handle(self, request: http.Request) -> None:
        try:
            tenant = self._check_request(request)
            image = self._grammar.parse(request.path)
        except EdgeError as error:
            return self._send_error(request, error)
        if image.fmt == AUTO:
            image = image.in_format(negotiate_format(request.getHeader(b"accept"), self._grammar.formats))
            request.responseHeaders.setRawHeaders(b"Vary", [b"Accept"])
        obj = self.images.cached(image)
        if obj is not None:
            return self._send_object(request, obj, b"HIT-MEMORY", b"cache;desc=memory")
        self._miss(request, image, tenant)

    def _check_request(self, request: http.Request) -> bytes:
        """The hostname (the tenant) of a GET or HEAD for a host we serve."""
        if request.method not in (b"GET", b"HEAD"):
            raise EdgeError(405, "method not allowed", {b"Allow": _ALLOWED})
        host = request.getHeader(b"host")
        if host is None:
            raise EdgeError(400, "missing Host header")
        hostname = _hostname(host)
        if hostname not in self._hostnames:
            raise EdgeError(421, "unknown host")
        return hostname

    def _miss(self, request: http.Request, image: ImageRequest, tenant: bytes) -> None:
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        d = self.images.fetch(image, tenant)
        d.addCallback(self._fetched, request, gone).addErrback(self._failed, request, gone)

    def _fetched(self, fetched: Fetched, request: http.Request, gone: list[Failure]) -> None:
        if not gone:
            self._send_object(request, fetched.obj, fetched.x_cache, fetched.timing)

    def _failed(self, failure: Failure, request: http.Request, gone: list[Failure]) -> None:
        if failure.check(EdgeError):
            error = failure.value
        else:
            log.failure("bug while serving {path}", failure, path=request.path)
            error = EdgeError(500, "internal error")
        if not gone:
            self._send_error(request, error)

    def _send_object(self, request: http.Request, obj: CachedObject, x_cache: bytes, timing: bytes) -> None:
        headers = request.responseHeaders
        headers.setRawHeaders(b"Date", [self._date.now()])
        headers.setRawHeaders(b"Server", [_SERVER])
        headers.setRawHeaders(b"ETag", [obj.etag])
        headers.setRawHeaders(b"Cache-Control", [IMMUTABLE])
        headers.setRawHeaders(b"X-Cache", [x_cache])
        headers.setRawHeaders(b"Server-Timing", [timing])
        if _etag_matches(request.getHeader(b"if-none-match"), obj.etag):
            request.setResponseCode(304)
            request.finish()
            return
        headers.setRawHeaders(b"Content-Type", [obj.media_type])
        headers.setRawHeaders(b"Content-Length", [obj.content_length])
        request.write(obj.body)
        request.finish()

    def _send_error(self, request: http.Request, error: EdgeError) -> None:
        body = error.message.encode() + b"\n"
        request.setResponseCode(error.status, _reason(error.status))
        headers = request.responseHeaders
        headers.setRawHeaders(b"Date", [self._date.now()])
        headers.setRawHeaders(b"Server", [_SERVER])
        headers.setRawHeaders(b"Content-Type", [_TEXT])
        headers.setRawHeaders(b"Content-Length", [b"%d" % len(body)])
        headers.setRawHeaders(b"Cache-Control", [b"no-store"])
        for name, value in error.headers.items():
            headers.setRawHeaders(name, [value])
        request.write(body)
        request.finish()


def _reason(status: int) -> bytes:
    """Twisted's table lacks some phrases (421 Misdirected Request); the stdlib has them."""
    return HTTPStatus(status).phrase.encode()


def _hostname(host: bytes) -> bytes:
    """The Host header without its port, lowercased (IPv6 literals keep their brackets)."""
    host = host.strip().lower()
    if host.startswith(b"["):
        return host.partition(b"]")[0] + b"]"
    return host.partition(b":")[0]


def _etag_matches(if_none_match: bytes | None, etag: bytes) -> bool:
    return if_none_match is not None and (if_none_match.strip() == b"*" or etag in if_none_match)


class EdgeRequest(http.Request):
    def process(self) -> None:
        self.channel.site.handler.handle(self)


class EdgeSite(http.HTTPFactory):
    """An HTTP factory whose requests go to one EdgeHandler, with no per-request log line."""

    def __init__(self, handler: EdgeHandler, timeout: float = 60.0):
        super().__init__(timeout=timeout)
        self.handler = handler

    def buildProtocol(self, addr: object) -> http.HTTPChannel:
        channel = super().buildProtocol(addr)
        channel.requestFactory = EdgeRequest
        channel.site = self
        return channel

    def log(self, request: http.Request) -> None:
        """No combined-format line per request: formatting it would cost every hit."""
