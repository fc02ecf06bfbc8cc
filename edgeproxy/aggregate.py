"""
The supervisor's admin port: one view of all workers. /metrics asks every worker for
its Prometheus text and merges it (counters, gauges and histogram buckets summed;
`edgeproxy_backend_up` and `edgeproxy_disk_tier_available` the minimum, so a backend
any worker sees down shows down;
the hit ratio recomputed from the counts of every worker process), adds the disk tier (owned here) and
each process's own `process_*`/`python_*` series labelled `worker`. POST /purge asks
every worker, then the disk; /status shows the totals and a row per worker.
"""

from __future__ import annotations

import json
from collections import Counter as Tally
from collections.abc import Iterable
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from edgeproxy.admin import HealthResource, PurgeResource, finish_later
from edgeproxy.config import Config
from edgeproxy.diskowner import DiskOwner
from edgeproxy.imageservice import CacheCounts
from edgeproxy.listeners import listen
from edgeproxy.metrics import TrafficHistory
from edgeproxy.services import HookService, cancelling
from edgeproxy.statuspage import StatusResource
from edgeproxy.supervisor import WorkerPool
from edgeproxy.workerproto import Purge, Snapshot

_TIMEOUT = 5.0
_COUNTS = (("hit", "memory"), ("miss", "memory"), ("hit", "disk"), ("miss", "disk"))  # the order of status["counts"]
_MINIMUM = frozenset({"edgeproxy_backend_up", "edgeproxy_disk_tier_available"})
_OURS = frozenset({"edgeproxy_disk_tier_ready", "edgeproxy_cache_hit_ratio"})
_PER_PROCESS = ("process_", "python_")
_OWN = CollectorRegistry()
for _collector in (ProcessCollector, PlatformCollector, GCCollector):
    _collector(registry=_OWN)


class RunningTotals:
    """
    Counts of every worker process since the supervisor started, never going down: a
    replaced worker's counters start from 0 again, and summed as they were, the drop
    made the hit ratio of the next 5 minutes negative or over 1. Only what a process
    counted since it was last seen is added, as Prometheus' rate() treats a reset.
    """

    def __init__(self, width: int):
        self.totals = [0] * width
        self._seen: dict[int, tuple[int, list[int]]] = {}  # worker index: (pid, its counts when last seen)

    def add(self, index: int, pid: int, counts: list[int]) -> None:
        seen_pid, before = self._seen.get(index, (pid, [0] * len(counts)))
        if seen_pid != pid:
            before = [0] * len(counts)
        self.totals = [total + max(0, now - then) for total, now, then in zip(self.totals, counts, before)]
        self._seen[index] = pid, counts


def build_admin(reactor: object, config: Config, pool: WorkerPool, disk: DiskOwner, health: HealthResource, parts: MultiService, top: MultiService) -> None:
    workers = Workers(reactor, pool, disk)
    loop = LoopingCall(workers.sample)
    loop.clock = reactor
    HookService(start=lambda: loop.start(workers.history.step), stop=loop.stop).setServiceParent(parts)
    root = Resource()
    root.putChild(b"healthz", health)
    root.putChild(b"metrics", _Async(workers.metrics_text, b"text/plain; version=0.0.4; charset=utf-8"))
    root.putChild(b"status", _Async(workers.status_page, b"text/html; charset=utf-8"))
    root.putChild(b"purge", PurgeResource(workers.purge))
    listen(reactor, f"{config.path}: [edge] admin_listen", config.edge.admin_listen, Site(root), top)


class Workers:
    """Snapshots of every worker, gathered on demand, and what is computed from them."""

    def __init__(self, reactor: object, pool: WorkerPool, disk: DiskOwner):
        self._reactor = reactor
        self._pool = pool
        self.disk = disk
        self.counts = CacheCounts()
        self._totals = RunningTotals(4)
        self.history = TrafficHistory(self, reactor)
        self.last: list[tuple[int, bytes, dict]] = []

    def gather(self, with_metrics: bool = False) -> Deferred:
        """[(worker index, Prometheus text or b"", status dict)] of every worker that answered in time."""
        calls = []
        for index, channel in self._pool.channels():
            d = channel.callRemote(Snapshot, with_metrics=with_metrics)
            d.addBoth(cancelling, self._reactor.callLater(_TIMEOUT, d.cancel))
            calls.append(d.addCallback(lambda answer, i=index: (i, answer["metrics"], json.loads(answer["status"]))))
        return DeferredList(calls, consumeErrors=True).addCallback(self._gathered)

    def _gathered(self, results: list) -> list:
        self.last = [value for ok, value in results if ok]
        for index, _, status in self.last:
            self._totals.add(index, status["pid"], status["counts"])
        self.counts.memory_hits, self.counts.memory_misses, self.counts.disk_hits, self.counts.disk_misses = self._totals.totals
        return self.last

    def sample(self) -> Deferred:
        return self.gather().addCallback(lambda _: self.history.sample())

    def metrics_text(self, request: Request) -> Deferred:
        return self.gather(with_metrics=True).addCallback(lambda snapshots: generate_latest(_Fixed(self._families(snapshots))))

    def _families(self, snapshots: list) -> list[Metric]:
        families = merge_metrics([(str(i), text) for i, text, _ in snapshots] + [("supervisor", generate_latest(_OWN))])
        _add(families, "edgeproxy_cache_bytes", {"tier": "disk"}, self.disk.bytes_used)
        _add(families, "edgeproxy_cache_objects", {"tier": "disk"}, len(self.disk))
        _add(families, "edgeproxy_cache_evictions_total", {"tier": "disk"}, self.disk.evictions, "edgeproxy_cache_evictions")
        available = families.get("edgeproxy_disk_tier_available")  # 0 if any worker's writes, or our deletes, fail
        if available is not None and not self.disk.available:
            available.samples = [sample._replace(value=0.0) for sample in available.samples]
        lookups = CounterMetricFamily(
            "edgeproxy_worker_cache_requests", "edgeproxy_cache_requests_total of each worker process.", labels=["worker", "result", "tier"]
        )
        for index, _, status in snapshots:
            for value, (result, tier) in zip(status["counts"], _COUNTS):
                lookups.add_metric([str(index), result, tier], value)
        own = [
            GaugeMetricFamily("edgeproxy_cache_hit_ratio", "Hits over lookups in the last 5 minutes.", value=self.history.hit_ratio()),
            GaugeMetricFamily("edgeproxy_disk_tier_ready", "1 once the disk index is rebuilt.", value=int(self.disk.ready)),
            GaugeMetricFamily("edgeproxy_workers", "Worker processes running.", value=len(self._pool.workers)),
            lookups,
        ]
        return list(families.values()) + own

    def status_page(self, request: Request) -> Deferred:
        return self.gather().addCallback(lambda snapshots: self._status(snapshots, request))

    def _status(self, snapshots: list, request: Request) -> bytes:
        statuses = [status for _, _, status in snapshots]
        view = _view(statuses, self.disk, self.counts)
        page = StatusResource(view, self.history, lambda: _backends(statuses), lambda: [_workers_table(snapshots, self._pool.count)])
        return page.render_GET(request)

    def purge(self, image_hash: str) -> Deferred:
        """Every worker first (so none spills the image again), then the disk."""
        calls = [channel.callRemote(Purge, image_hash=image_hash) for _, channel in self._pool.channels()]
        return DeferredList(calls, consumeErrors=True).addCallback(self._purged, image_hash)

    def _purged(self, results: list, image_hash: str) -> dict:
        memory = sorted({key for ok, answer in results if ok for key in json.loads(answer["removed"])})
        disk = [key.decode() for key in self.disk.purge(image_hash.encode())]
        return {"hash": image_hash, "removed": {"memory": memory, "disk": disk}, "workers": sum(ok for ok, _ in results)}


def merge_metrics(texts: Iterable[tuple[str, bytes]]) -> dict[str, Metric]:
    """Families by name, every sample summed across workers (min for _MINIMUM); per-process series kept apart."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple, float]] = {}
    for worker, text in texts:
        for family in text_string_to_metric_families(text.decode()):
            if family.name in _OURS:
                continue
            families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            table = values.setdefault(family.name, {})
            for sample in family.samples:
                labels = dict(sample.labels, worker=worker) if family.name.startswith(_PER_PROCESS) else sample.labels
                key = (sample.name, tuple(sorted(labels.items())))
                if key not in table:
                    table[key] = sample.value
                elif family.name in _MINIMUM:
                    table[key] = min(table[key], sample.value)
                else:
                    table[key] += sample.value
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    return families


def _add(families: dict[str, Metric], sample_name: str, labels: dict, value: float, family_name: str | None = None) -> None:
    family = families.get(family_name or sample_name)
    if family is None:
        return
    for index, sample in enumerate(family.samples):
        if sample.name == sample_name and sample.labels == labels:
            family.samples[index] = sample._replace(value=sample.value + value)
            return
    family.add_sample(sample_name, labels, value)


class _Fixed:
    """A registry-like object for generate_latest: these families, once."""

    def __init__(self, families: list[Metric]):
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


class _Tier:
    def __init__(self, bytes_used: int, budget: int, objects: int, evictions: int):
        self.bytes_used, self.budget, self.objects, self.evictions = bytes_used, budget, objects, evictions

    def __len__(self) -> int:
        return self.objects


class _Top:
    def __init__(self, tally: Tally):
        self._tally = tally

    def top(self, n: int) -> list[tuple[str, int]]:
        return self._tally.most_common(n)


def _view(statuses: list[dict], disk: DiskOwner, counts: CacheCounts) -> SimpleNamespace:
    """What StatusResource reads of an ImageService, summed over the workers."""
    memory = [sum(s["memory"][i] for s in statuses) for i in range(4)]
    queue = [sum(s["queue"][i] for s in statuses) for i in range(3)]
    misses: Tally = Tally()
    for status in statuses:
        misses.update(dict(status["top_misses"]))
    return SimpleNamespace(
        memory=_Tier(*memory) if memory[1] else _Tier(0, 1, 0, 0),
        disk=disk,
        queue=SimpleNamespace(running=queue[0], waiting=queue[1], shed=queue[2]),
        top_misses=_Top(misses),
        counts=counts,
    )


def _backends(statuses: list[dict]) -> list[SimpleNamespace]:
    """One row per backend: down if any worker has it down, in flight summed, the slowest worker's p95."""
    merged: dict[str, SimpleNamespace] = {}
    for status in statuses:
        for name, up, in_flight, latency in status["backends"]:
            row = merged.setdefault(name, SimpleNamespace(name=name, health=SimpleNamespace(up=True), in_flight=0, latency=SimpleNamespace(value=0.0, measured=False)))
            row.health.up = row.health.up and up
            row.in_flight += in_flight
            if latency is not None:
                row.latency.value, row.latency.measured = max(row.latency.value, latency), True
    return list(merged.values())


def _workers_table(snapshots: list, count: int) -> str:
    rows = "".join(
        f"<tr><td>{i}</td><td>{s['pid']}</td><td>{s['counts'][0] + s['counts'][1]}</td><td>{s['memory'][0]}</td></tr>" for i, _, s in snapshots
    )
    head = "<tr><th>worker</th><th>pid</th><th>lookups</th><th>memory bytes</th></tr>"
    return f"<h2>Workers</h2><p>{len(snapshots)} of {count} answering.</p><table>{head}{rows}</table>"


class _Async(Resource):
    """GET answered from a Deferred of the body."""

    isLeaf = True

    def __init__(self, render, content_type: bytes):
        super().__init__()
        self._render = render
        self._content_type = content_type

    def render_GET(self, request: Request) -> object:
        request.setHeader(b"Content-Type", self._content_type)
        request.setHeader(b"Cache-Control", b"no-store")
        finish_later(self._render(request), request)
        return NOT_DONE_YET


