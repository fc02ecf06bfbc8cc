"""
The admin port (loopback by default): health for load balancers and Prometheus
metrics, kept off the public listeners.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.twisted import MetricsResource
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from edgeproxy.imageservice import ImageService

log = Logger()
_HASH = re.compile(r"[0-9a-f]{40}")


class HealthResource(Resource):
    """200 while serving; 503 once draining, so a balancer stops sending traffic first."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.draining = False

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        if self.draining:
            request.setResponseCode(503)
            return b"draining\n"
        return b"ok\n"


class PurgeResource(Resource):
    """POST /purge/{hash}: drop the original and every variant of an image from every tier (of every worker)."""

    isLeaf = True

    def __init__(self, purge: Callable[[str], object]):
        """`purge(hash)` returns the JSON-able report of what went, or a Deferred of it."""
        super().__init__()
        self._purge = purge

    def render_POST(self, request: Request) -> object:
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        name = b"/".join(request.postpath).decode("ascii", "replace")
        if not _HASH.fullmatch(name):
            request.setResponseCode(400)
            return b'{"error": "expected /purge/{40 lowercase hex}"}\n'
        d = maybeDeferred(self._purge, name).addCallback(lambda report: json.dumps(report).encode() + b"\n")
        finish_later(d, request)
        return NOT_DONE_YET


def finish_later(body: "Deferred[bytes]", request: Request) -> None:
    """Answer `request` with the body once it is ready (a 500 if it failed), unless the client left."""
    body.addErrback(_broken, request).addCallback(_finish, request)


def _broken(failure: Failure, request: Request) -> bytes:
    log.failure("admin request failed", failure)
    request.setResponseCode(500)
    return b"internal error\n"


def _finish(body: bytes, request: Request) -> None:
    if not request.finished and not request._disconnected:
        request.write(body)
        request.finish()


def make_admin_root(
    health: HealthResource, images: ImageService, status: Resource, registry: CollectorRegistry = REGISTRY
) -> Resource:
    root = Resource()
    root.putChild(b"status", status)
    root.putChild(b"healthz", health)
    root.putChild(b"metrics", MetricsResource(registry))
    root.putChild(b"purge", PurgeResource(lambda name: {"hash": name, "removed": images.purge(name)}))
    return root
