"""
The shard farm: the token map names the pair that owns an image; its primary is
asked first, then its secondary on a connection error, timeout, 5xx or 404.
"""

from __future__ import annotations

from typing import Callable

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from edgeproxy.origins import IOrigin, check_content, render_template
from edgeproxy.origins.fallback import first_success
from edgeproxy.origins.http import HTTPBackend
from edgeproxy.tokenmap import TokenMap


@implementer(IOrigin)
class ShardPairOrigin:
    """Reads the token map through `tokenmap()` on every fetch, so a reload takes effect at once."""

    name = "shards"

    def __init__(
        self,
        tokenmap: Callable[[], TokenMap],
        client: HTTPClient,
        clock: IReactorTime,
        path_template: str,
        timeout: float,
        max_body: int,
        verify: bool = True,
    ):
        self._verify = verify
        self._tokenmap = tokenmap
        self._path_template = path_template
        self._backends: dict[str, HTTPBackend] = {}
        self._new_backend = lambda address: HTTPBackend(client, address, clock, timeout, max_body)

    def fetch(self, image_hash: str, ext: str) -> "Deferred[bytes]":
        path = render_template(self._path_template, image_hash, ext)
        pair = self._tokenmap().owner_of_hash(image_hash)
        attempts = [(address, self._attempt(address, path, image_hash)) for address in pair]
        return ensureDeferred(first_success(f"pair {' '.join(pair)}", attempts))

    def _attempt(self, address: str, path: str, image_hash: str) -> Callable[[], "Deferred[bytes]"]:
        backend = self._backends.get(address)
        if backend is None:
            backend = self._backends[address] = self._new_backend(address)
        if not self._verify:
            return lambda: backend.get(path)
        return lambda: backend.get(path).addCallback(check_content, image_hash, address)
