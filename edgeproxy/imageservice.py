"""
What a parsed request turns into: a memory hit at once, or on a miss one fill (from
disk, from the origin, or by rendering) whose result is checked, stored and handed
back with where it came from and how long it took.
"""

from __future__ import annotations

from dataclasses import dataclass

from cachetools import TTLCache
from prometheus_client import Histogram
from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from edgeproxy import metrics
from edgeproxy.cachedobject import CachedObject, make_cached_object
from edgeproxy.claims import ABSENT, FETCH, ON_DISK, STORED
from edgeproxy.disktier import DiskTier
from edgeproxy.errors import EdgeError, FailureKind, OriginFailure
from edgeproxy.memorytier import MemoryTier
from edgeproxy.origins import IOrigin
from edgeproxy.render import IRenderer, Unrenderable
from edgeproxy.renderqueue import RenderQueue
from edgeproxy.singleflight import SingleFlight
from edgeproxy.topkeys import TopKeys
from edgeproxy.urls import ImageRequest

log = Logger()


@dataclass(frozen=True, slots=True)
class Fetched:
    """An object found after a memory miss, with where it came from (X-Cache) and how long it took."""

    obj: CachedObject
    x_cache: bytes
    timing: bytes
    origin_ms: float | None = None
    render_ms: float | None = None


class CacheCounts:
    """Lookups by tier and outcome, as plain integers: the hit path pays an add, and
    the metrics collector reads them when Prometheus scrapes."""

    __slots__ = ("memory_hits", "memory_misses", "disk_hits", "disk_misses")

    def __init__(self) -> None:
        self.memory_hits = self.memory_misses = self.disk_hits = self.disk_misses = 0


class AbsentImages:
    """
    Originals every origin said were absent, each remembered for `ttl` seconds so a
    bogus name cannot hammer the origins. A new token map makes every such answer stale
    (the image may be on its new pair): `forget_all` drops them, and a 404 asked for
    under the old map that lands after it is not remembered, so the new map's images
    are served as soon as it is in force.
    """

    def __init__(self, ttl: float, clock: IReactorTime):
        self._keys: TTLCache[bytes, bool] = TTLCache(maxsize=100_000, ttl=ttl, timer=clock.seconds)
        self.era = 0  # counts forget_all: a 404 is remembered only in the era it was asked in

    def __contains__(self, key: bytes) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: bytes, era: int) -> None:
        if era == self.era:
            self._keys[key] = True

    def forget(self, prefix: bytes) -> None:
        for key in [k for k in self._keys if k.startswith(prefix)]:
            self._keys.pop(key, None)

    def forget_all(self) -> None:
        self._keys.clear()
        self.era += 1


_NOT_A_REQUEST = CacheCounts()  # where a variant's own lookups of its original go: counted as no request's


class ImageService:
    """
    Misses on one object are collapsed into one origin fetch; an object absent from
    every origin is remembered in `absent`.
    """

    def __init__(
        self,
        memory: MemoryTier,
        disk: DiskTier,
        origin: IOrigin,
        clock: IReactorTime,
        renderer: IRenderer,
        queue: RenderQueue,
        absent: AbsentImages,
    ):
        self.memory = memory
        self.disk = disk
        self._renderer = renderer
        self.queue = queue
        self.flights: SingleFlight[Fetched] = SingleFlight()
        self._origin = origin
        self._clock = clock
        self._absent = absent
        self.counts = CacheCounts()
        self.top_misses = TopKeys(64)

    def cached(self, request: ImageRequest) -> CachedObject | None:
        obj = self.memory.get(request.key)
        if obj is None:
            self.counts.memory_misses += 1
            self.top_misses.add(request.key)
        else:
            self.counts.memory_hits += 1
        return obj

    def fetch(self, request: ImageRequest, tenant: bytes = b"", counts: CacheCounts | None = None) -> "Deferred[Fetched]":
        """
        Fill a memory miss: from disk, else from the origin (an original) or by
        rendering (a variant) for `tenant` (the hostname). Concurrent misses on one
        key share one fill, every variant of an image shares the one fill of its
        original, and a variant that could not even wait for a render worker is
        refused before anything is fetched. Its disk lookup counts in `counts`
        (the service's own by default).
        """
        if request.original().key in self._absent:
            return fail(EdgeError(404, "image not found"))
        if not request.is_original and request.key not in self.flights:
            try:
                self.queue.check_room()
            except EdgeError as error:
                return fail(error)
        flights = self.flights
        counts = counts or self.counts
        return flights.run(request.key, lambda: ensureDeferred(self._fill(request, tenant, flights.flight(request.key), counts)))

    async def _fill(self, request: ImageRequest, tenant: bytes, fill: object, counts: CacheCounts) -> Fetched:
        """`fill` is its flight: while a purge has not detached it, what it fills is stored."""
        started = self._clock.seconds()
        if request.is_original:
            return await self._fill_original(request, started, fill, counts)
        body = await self.disk.get(request.key) if request.key in self.disk else None
        if body is not None:
            return self._disk_hit(request, body, started, fill, counts)
        counts.disk_misses += 1
        return await self._render(request, tenant, fill)

    def _disk_hit(self, request: ImageRequest, body: bytes, started: float, fill: object, counts: CacheCounts) -> Fetched:
        counts.disk_hits += 1
        obj = make_cached_object(body)
        if self.flights.attached(request.key, fill):
            self.disk.promoted += self.memory.put(request.key, obj)
        return Fetched(obj, b"HIT-DISK", b"cache;desc=disk;dur=%.1f" % self._ms_since(started))

    async def _render(self, request: ImageRequest, tenant: bytes, fill: object) -> Fetched:
        """
        A variant is MISS when its original had to come from an origin, and RENDERED when
        the cached original sufficed: then no origin was asked, and it is served so even
        while every origin is down. Neither is a hit, so the original's own lookup on
        disk is not counted as one of a request's (a hit ratio of 0.5 with no hit served).
        """
        original = self.memory.get(request.original().key)
        x_cache, origin_ms = b"RENDERED", None
        if original is None:
            fetched = await self.fetch(request.original(), tenant, _NOT_A_REQUEST)
            original, origin_ms = fetched.obj, fetched.origin_ms
            x_cache = b"MISS" if fetched.x_cache == b"MISS" else b"RENDERED"
        rendering = self._clock.seconds()
        try:
            body = await self.queue.run(tenant, lambda: self._timed_render(original.body, request))
        except Unrenderable as error:
            log.warn("cannot render {key}: {reason}", key=request.key, reason=error.reason)
            raise
        obj = make_cached_object(body)
        self._store(request.key, obj, fill)
        render_ms = self._ms_since(rendering)
        timing = b"cache;desc=miss, render;dur=%.1f" % render_ms
        return Fetched(obj, x_cache, timing, origin_ms, render_ms)

    def _timed_render(self, original: bytes, request: ImageRequest) -> "Deferred[bytes]":
        """The render alone, without its wait for a worker: edgeproxy_render_seconds."""
        started = self._clock.seconds()
        d = self._renderer.render(original, request.geometry, request.fmt)
        return d.addBoth(_observed, metrics.RENDER_SECONDS, self._clock, started)

    def _store(self, key: bytes, obj: CachedObject, fill: object) -> None:
        """Keep a filled object, unless a purge of its image detached the fill meanwhile."""
        if not self.flights.attached(key, fill):
            return
        if not self.memory.put(key, obj):
            self.disk.put(key, obj.body)

    def _ms_since(self, started: float) -> float:
        return (self._clock.seconds() - started) * 1000

    async def _fill_original(self, request: ImageRequest, started: float, fill: object, counts: CacheCounts) -> Fetched:
        """
        From the disk if the claim says it is there, else from the origin unless another
        worker process is fetching it (edgeproxy.claims).
        """
        era = self._absent.era
        outcome, body = await self.disk.claim(request.key)
        if outcome == STORED:
            body = await self.disk.get(request.key)
            if body is not None:
                return self._disk_hit(request, body, started, fill, counts)
            outcome, body = await self.disk.claim(request.key)  # gone since (evicted, corrupt): claim the fetch
        counts.disk_misses += 1
        if outcome == ABSENT:  # another worker's fetch found it absent: remembered here too
            self._absent.add(request.key, era)
            raise EdgeError(404, "image not found")
        if outcome == ON_DISK:
            body = await self.disk.get(request.key)
        obj = _as_image(request, body) if body is not None else await self._fetch_claimed(request, fill)
        self._store(request.key, obj, fill)
        origin_ms = self._ms_since(started)
        return Fetched(obj, b"MISS", b"cache;desc=miss, origin;dur=%.1f" % origin_ms, origin_ms)

    async def _fetch_claimed(self, request: ImageRequest, fill: object) -> CachedObject:
        """
        Fetch an original we claimed; the other workers waiting on the claim hear how it
        went. If a purge detached the fill meanwhile, they fetch it themselves: shared,
        the purged original would be written to the shared disk after the purge had
        cleared it, and served from there.
        """
        era = self._absent.era
        try:
            body = await self._origin.fetch(request.image_hash, request.ext)
            obj = _as_image(request, body)
        except OriginFailure as failure:
            absent = failure.kind is FailureKind.NOT_FOUND and era == self._absent.era
            if absent:
                self._absent.add(request.key, era)
            # a 404 asked for under token maps a reload has replaced is no answer for the
            # waiters either: told ABSENT, they remembered it for negative_ttl
            self.disk.release(request.key, ABSENT if absent else FETCH)
            raise failure.to_edge_error() from failure
        except BaseException:
            self.disk.release(request.key, FETCH)
            raise
        if self.flights.attached(request.key, fill):
            self.disk.share(request.key, body)
        else:
            self.disk.release(request.key, FETCH)
        return obj

    def purge(self, image_hash: str) -> dict[str, list[str]]:
        """
        Forget the original and every variant of an image, in every tier. Its fills in
        the air still answer their waiters but store nothing, and a request after the
        purge starts afresh rather than joining one (a variant asked after a takedown
        had been rendered from an original fetched before it, and cached).
        """
        prefix = image_hash.encode()
        self.flights.detach([key for key in self.flights if key.startswith(prefix)])
        removed = {"memory": self.memory.purge(prefix), "disk": self.disk.purge(prefix)}
        self._absent.forget(prefix)
        return {tier: [key.decode() for key in keys] for tier, keys in removed.items()}


def _as_image(request: ImageRequest, body: bytes) -> CachedObject:
    try:
        return make_cached_object(body)
    except ValueError:
        log.warn("origin sent {key}, which is not an allowed image (first bytes {head!r}): not cached", key=request.key, head=body[:16])
        raise EdgeError(502, "origin sent something that is not an image") from None


def _observed(result: object, histogram: Histogram, clock: IReactorTime, started: float) -> object:
    histogram.observe(clock.seconds() - started)
    return result
