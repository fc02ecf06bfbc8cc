"""
The admin port (loopback by default): health for load balancers and Prometheus
metrics, kept off the public listeners.
"""

from __future__ import annotations

import json
import re

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.twisted import MetricsResource
from twisted.web.resource import Resource
from twisted.web.server import Request

from edgeproxy.imageservice import ImageService

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
    """POST /purge/{hash}: drop the original and every variant of an image from every tier."""

    isLeaf = True

    def __init__(self, images: ImageService):
        super().__init__()
        self._images = images

    def render_POST(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        name = b"/".join(request.postpath).decode("ascii", "replace")
        if not _HASH.fullmatch(name):
            request.setResponseCode(400)
            return b'{"error": "expected /purge/{40 lowercase hex}"}\n'
        return json.dumps({"hash": name, "removed": self._images.purge(name)}).encode() + b"\n"


def make_admin_root(
    health: HealthResource, images: ImageService, status: Resource, registry: CollectorRegistry = REGISTRY
) -> Resource:
    root = Resource()
    root.putChild(b"status", status)
    root.putChild(b"healthz", health)
    root.putChild(b"metrics", MetricsResource(registry))
    root.putChild(b"purge", PurgeResource(images))
    return root
