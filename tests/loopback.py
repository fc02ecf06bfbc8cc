"""
Real HTTP servers on 127.0.0.1 port 0 that play image backends, with the failure
modes the proxy must survive, and that count what they were asked.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.ssl import PrivateCertificate
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

MODES = ("serve", "404", "500", "hang", "truncate", "cookie", "slow")


class BackendResource(Resource):
    isLeaf = True

    def __init__(self, files: dict[str, bytes]):
        super().__init__()
        self.files = files
        self.mode = "serve"
        self.slow_seconds = 1.0
        self.requests: list[Request] = []
        self.clients: set[int] = set()

    def render_GET(self, request: Request) -> bytes | int:
        self.requests.append(request)
        self.clients.add(request.getClientAddress().port)
        return getattr(self, "_" + self.mode.replace("404", "not_found").replace("500", "error"))(request)

    def _serve(self, request: Request) -> bytes:
        body = self.files.get(request.path.decode())
        if body is None:
            request.setResponseCode(404)
            return b"<html>no such image</html>"
        request.setHeader(b"Content-Type", b"image/jpeg")
        return body

    def _cookie(self, request: Request) -> bytes:
        request.addCookie(b"session", b"secret-from-origin")
        return self._serve(request)

    def _slow(self, request: Request) -> int:
        """Answer after `slow_seconds` with what it held when asked, so concurrent misses overlap for sure."""
        body = self._serve(request)

        def answer() -> None:
            request.write(body)
            request.finish()

        reactor.callLater(self.slow_seconds, answer)
        return NOT_DONE_YET

    def _not_found(self, request: Request) -> bytes:
        request.setResponseCode(404)
        return b"not here"

    def _error(self, request: Request) -> bytes:
        request.setResponseCode(500)
        return b"internal error"

    def _hang(self, request: Request) -> int:
        return NOT_DONE_YET

    def _truncate(self, request: Request) -> int:
        body = self.files.get(request.path.decode(), b"x" * 1000)
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.write(body[: len(body) // 2])
        request.transport.loseConnection()
        return NOT_DONE_YET


class Backend:
    """One image server; `stop()` kills it: the port closes and open connections drop."""

    def __init__(self, files: dict[str, bytes] | None = None, tls: tuple[Path, Path] | None = None):
        """`tls`: (chain.pem, key.pem) to serve https."""
        self.resource = BackendResource(files if files is not None else {})
        # WrappingFactory keeps the open connections, so stop() can drop them as a dead host would.
        self.factory = WrappingFactory(Site(self.resource))
        if tls is None:
            self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        else:
            certificate = PrivateCertificate.loadPEM(tls[0].read_bytes() + tls[1].read_bytes())
            self.port = reactor.listenSSL(0, self.factory, certificate.options(), interface="127.0.0.1")

        self.address = f"127.0.0.1:{self.port.getHost().port}"
        self.running = True

    @property
    def connections(self) -> int:
        """How many client connections (by source port) have sent requests."""
        return len(self.resource.clients)

    @property
    def hits(self) -> int:
        return len(self.resource.requests)

    def set_mode(self, mode: str) -> None:
        assert mode in MODES
        self.resource.mode = mode

    def stop(self) -> Deferred:
        self.running = False
        for wrapper in list(self.factory.protocols):
            wrapper.transport.abortConnection()
        return self.port.stopListening()
