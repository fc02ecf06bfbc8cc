"""
Originals read from a local directory: what the bundled default configuration
serves, so the proxy works out of the box, and a simple origin for a single host.
"""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from edgeproxy.errors import FailureKind, OriginFailure
from edgeproxy.origins import IOrigin, check_content, render_template
from edgeproxy.origins.guard import OnHeaders


@implementer(IOrigin)
class LocalDirectoryOrigin:
    """Files under `root`, laid out by `path_template`; reads run in the disk thread pool."""

    name = "local"

    def __init__(
        self, root: str, path_template: str, max_body: int, reactor: IReactorFromThreads, pool: ThreadPool, verify: bool = True
    ):
        self._verify = verify
        self._root = os.path.realpath(root)
        self._template = path_template
        self._max_body = max_body
        self._reactor = reactor
        self._pool = pool

    def fetch(self, image_hash: str, ext: str, until: float | None = None, on_headers: OnHeaders = lambda: None) -> "Deferred[bytes]":
        """
        A file has no headers: `on_headers` is told when its read is over, found or not.
        A read in the disk pool cannot be cut short, so `until` has nothing to bound.
        """
        relative = render_template(self._template, image_hash, ext).lstrip("/")
        path = os.path.join(self._root, relative)
        d = deferToThreadPool(self._reactor, self._pool, self._read, path, image_hash)

        def read(result: object) -> object:
            on_headers()
            return result

        return d.addBoth(read).addErrback(self._as_origin_failure)

    def _read(self, path: str, image_hash: str) -> bytes:
        with open(path, "rb") as handle:
            data = handle.read(self._max_body + 1)
        if len(data) > self._max_body:
            raise OriginFailure(FailureKind.UPSTREAM, self.name, f"file over {self._max_body} bytes")
        return check_content(data, image_hash, self.name) if self._verify else data

    def _as_origin_failure(self, failure: Failure) -> Failure:
        if failure.check(OriginFailure):
            return failure
        if failure.check(FileNotFoundError, NotADirectoryError):
            return Failure(OriginFailure(FailureKind.NOT_FOUND, self.name, "no such file"))
        return Failure(OriginFailure(FailureKind.UPSTREAM, self.name, failure.getErrorMessage()))
