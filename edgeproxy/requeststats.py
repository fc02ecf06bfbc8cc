"""
What every response adds to /metrics: requests by status, and by cache result their
latency (a histogram) and body bytes. Kept as plain integers and read at scrape
time, because prometheus_client's children take a lock per update and a hit is
worth a few microseconds in all.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CACHE_RESULTS = (b"HIT-MEMORY", b"HIT-DISK", b"MISS", b"RENDERED", b"NONE")  # NONE: an error, no object sent


class _ByCache:
    __slots__ = ("buckets", "total", "count", "bytes")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0
        self.count = 0
        self.bytes = 0


class RequestStats:
    def __init__(self) -> None:
        self.codes: dict[int, int] = {}
        self._by_cache = {result: _ByCache() for result in CACHE_RESULTS}

    def record(self, status: int, cache: bytes, body_bytes: int, seconds: float) -> None:
        codes = self.codes
        codes[status] = codes.get(status, 0) + 1
        entry = self._by_cache[cache]
        entry.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        entry.total += seconds
        entry.count += 1
        entry.bytes += body_bytes

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("edgeproxy_requests", "Responses sent, by HTTP status.", labels=["code"])
        for code, count in sorted(self.codes.items()):
            requests.add_metric([str(code)], count)
        yield requests
        seconds = HistogramMetricFamily(
            "edgeproxy_response_seconds", "Time from a request's head to its response, by cache result.", labels=["cache"]
        )
        sent = CounterMetricFamily("edgeproxy_response_bytes", "Body bytes sent, by cache result.", labels=["cache"])
        for result, entry in self._by_cache.items():
            label = result.decode().lower()
            seconds.add_metric([label], _cumulative(entry.buckets), entry.total)
            sent.add_metric([label], entry.bytes)
        yield seconds
        yield sent


def _cumulative(buckets: list[int]) -> list[tuple[str, int]]:
    bounds = [str(bound) for bound in LATENCY_BUCKETS] + ["+Inf"]
    running, out = 0, []
    for bound, count in zip(bounds, buckets):
        running += count
        out.append((bound, running))
    return out
