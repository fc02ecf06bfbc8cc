"""
The admin port (loopback by default): health for load balancers and Prometheus
metrics, kept off the public listeners.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.twisted import MetricsResource
from twisted.web.resource import Resource
from twisted.web.server import Request


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


def make_admin_root(health: HealthResource, registry: CollectorRegistry = REGISTRY) -> Resource:
    root = Resource()
    root.putChild(b"healthz", health)
    root.putChild(b"metrics", MetricsResource(registry))
    return root
