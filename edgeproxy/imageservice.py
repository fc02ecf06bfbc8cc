"""
What a parsed request turns into: a memory hit at once, or on a miss an origin
fetch whose result is checked, stored and handed back with its timings.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from edgeproxy.cachedobject import CachedObject, make_cached_object
from edgeproxy.errors import EdgeError, OriginFailure
from edgeproxy.memorytier import MemoryTier
from edgeproxy.origins import IOrigin
from edgeproxy.urls import ImageRequest


@dataclass(frozen=True, slots=True)
class Fetched:
    obj: CachedObject
    origin_seconds: float


class ImageService:
    def __init__(self, memory: MemoryTier, origin: IOrigin, clock: IReactorTime):
        self.memory = memory
        self._origin = origin
        self._clock = clock

    def cached(self, request: ImageRequest) -> CachedObject | None:
        return self.memory.get(request.key)

    async def fetch(self, request: ImageRequest) -> Fetched:
        """Fill a miss from the origin; every failure is an EdgeError for the client."""
        if not request.is_original:
            raise EdgeError(404, "variants are not rendered by this version")
        started = self._clock.seconds()
        try:
            body = await self._origin.fetch(request.image_hash, request.ext)
        except OriginFailure as failure:
            raise failure.to_edge_error() from failure
        try:
            obj = make_cached_object(body)
        except ValueError:
            raise EdgeError(502, "origin sent something that is not an image") from None
        self.memory.put(request.key, obj)
        return Fetched(obj, self._clock.seconds() - started)
