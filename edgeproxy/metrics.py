"""
Every Prometheus series edgeproxy exports, defined once so names and labels match the
contract. Labels are bounded: a backend address from the token map or an S3 region
name, a status code — never a URL or a hash.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

if TYPE_CHECKING:
    from edgeproxy.http1 import EdgeSite
    from edgeproxy.imageservice import ImageService

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
RENDER_SECONDS = Histogram("edgeproxy_render_seconds", "Time libvips took for one variant, without the wait for a worker.", buckets=_LATENCY_BUCKETS)


class TrafficHistory:
    """
    Cumulative cache counts sampled every `step` seconds for an hour: the hit ratio of
    the last five minutes (a gauge for people who do not write PromQL) and the status
    page's plot come from it.
    """

    def __init__(self, images: ImageService, clock: IReactorTime, step: float = 10.0, keep: int = 360):
        self._images = images
        self._clock = clock
        self.step = step
        self.samples: deque[tuple[float, int, int]] = deque(maxlen=keep + 1)
        self.loop = LoopingCall(self.sample)
        self.loop.clock = clock

    def now(self) -> tuple[float, int, int]:
        """(time, hits, lookups) where a lookup is a request that looked in the memory tier."""
        counts = self._images.counts
        return self._clock.seconds(), counts.memory_hits + counts.disk_hits, counts.memory_hits + counts.memory_misses

    def sample(self) -> None:
        self.samples.append(self.now())

    def hit_ratio(self, seconds: float = 300.0) -> float:
        """Over the last `seconds` (or since start); 0 before any lookup."""
        now = self.now()
        start = next((s for s in self.samples if s[0] >= now[0] - seconds - self.step / 2), now)
        lookups = now[2] - start[2]
        return (now[1] - start[1]) / lookups if lookups else 0.0

    def ratios(self) -> list[tuple[float, float | None]]:
        """(time, hit ratio during the step ending then) for every step kept; None with no lookups."""
        points = list(self.samples) + [self.now()]
        return [(b[0], (b[1] - a[1]) / (b[2] - a[2]) if b[2] > a[2] else None) for a, b in zip(points, points[1:])]


class EdgeCollector:
    """Reads the tiers, the render queue and the cache counts at scrape time: nothing is counted twice."""

    def __init__(self) -> None:
        self.images: ImageService | None = None
        self.history: TrafficHistory | None = None
        self.site: EdgeSite | None = None

    def collect(self) -> Iterator[Metric]:
        images, history, site = self.images, self.history, self.site
        if images is None or history is None or site is None:
            return
        yield from site.handler.stats.collect()
        yield GaugeMetricFamily("edgeproxy_open_connections", "Client connections open now.", value=site.connections)
        yield CounterMetricFamily(
            "edgeproxy_refused_connections", "Connections closed at once because max_connections were open.", value=site.refused
        )
        counts = images.counts
        lookups = CounterMetricFamily("edgeproxy_cache_requests", "Cache lookups by tier and outcome.", labels=["result", "tier"])
        lookups.add_metric(["hit", "memory"], counts.memory_hits)
        lookups.add_metric(["miss", "memory"], counts.memory_misses)
        lookups.add_metric(["hit", "disk"], counts.disk_hits)
        lookups.add_metric(["miss", "disk"], counts.disk_misses)
        yield lookups
        yield _by_tier(GaugeMetricFamily, "edgeproxy_cache_bytes", "Bytes held by each tier.", images.memory.bytes_used, images.disk.bytes_used)
        yield _by_tier(GaugeMetricFamily, "edgeproxy_cache_objects", "Objects held by each tier.", len(images.memory), len(images.disk))
        yield _by_tier(CounterMetricFamily, "edgeproxy_cache_evictions", "Objects evicted from each tier.", images.memory.evictions, images.disk.evictions)
        yield CounterMetricFamily("edgeproxy_collapsed_requests", "Misses that joined a fetch already in flight.", value=images.flights.collapsed)
        yield GaugeMetricFamily("edgeproxy_cache_hit_ratio", "Hits over lookups in the last 5 minutes.", value=history.hit_ratio())
        yield GaugeMetricFamily("edgeproxy_render_queue", "Renders waiting for a worker.", value=images.queue.waiting)
        yield CounterMetricFamily("edgeproxy_render_shed", "Renders refused with 503 because the queue was full.", value=images.queue.shed)
        yield GaugeMetricFamily("edgeproxy_disk_tier_ready", "1 once the disk index is rebuilt.", value=int(images.disk.ready))
        yield GaugeMetricFamily("edgeproxy_disk_tier_available", "0 while the disk tier is failing.", value=int(images.disk.available))


def _by_tier(family: type, name: str, documentation: str, memory: float, disk: float) -> Metric:
    metric = family(name, documentation, labels=["tier"])
    metric.add_metric(["memory"], memory)
    metric.add_metric(["disk"], disk)
    return metric


COLLECTOR = EdgeCollector()
REGISTRY.register(COLLECTOR)


def track(images: ImageService, history: TrafficHistory, site: EdgeSite) -> None:
    """The service whose state /metrics shows (one per process)."""
    COLLECTOR.images = images
    COLLECTOR.history = history
    COLLECTOR.site = site
