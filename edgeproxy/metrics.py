"""
Every Prometheus series edgeproxy exports, defined once so names and labels match the
contract. Labels are bounded: a backend address from the token map or an S3 region
name, a status code — never a URL or a hash.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

ORIGIN_REQUESTS = Counter(
    "edgeproxy_origin_requests",
    "Requests sent to each origin backend, by outcome (an HTTP status, timeout, error, busy, down).",
    ["backend", "code"],
)
ORIGIN_SECONDS = Histogram(
    "edgeproxy_origin_seconds",
    "Time for each origin backend to deliver a whole answer.",
    ["backend"],
    buckets=_LATENCY_BUCKETS,
)
BACKEND_UP = Gauge("edgeproxy_backend_up", "1 while a backend takes traffic, 0 while it is marked down.", ["backend"])
ORIGIN_HEDGES = Counter(
    "edgeproxy_origin_hedges", "Second requests sent to a secondary because its primary was slow.", ["backend"]
)
