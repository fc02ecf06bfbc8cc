"""
With `[edge] workers` > 1 and `[resize] render_mode = processes`, the render processes
are the supervisor's, one pool for every worker, and a worker's renders travel over its
channel. A pool per worker cost each worker a fork server, a resource tracker and render
processes of its own (two workers after a burst of renders: 11 processes and 304 MB of
PSS for the whole proxy, against 7 and 252 MB with one pool, measured side by side),
and a worker with a backlog of renders could use only its own share of the cores while
another's pool sat idle. The price is the original's trip through the supervisor's loop: about 2.4 ms per
MB (60 ms for a 25 MB original), time in which its claims and admin port wait.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from edgeproxy.render import IRenderer, RenderUnavailable, Unrenderable
from edgeproxy.urls import Geometry
from edgeproxy.workerproto import Render

log = Logger()


@implementer(IRenderer)
class SupervisorRenderer:
    """A worker's renderer: the supervisor's render processes do the work."""

    def __init__(self) -> None:
        self.channel: Callable[..., Deferred | None] | None = None  # callRemote of the supervisor's AMP

    def render(self, source: bytes, geometry: Geometry, fmt: str) -> "Deferred[bytes]":
        call = self.channel
        d = call(Render, source=source, width=geometry.width, height=geometry.height, fit=geometry.fit, fmt=fmt) if call else None
        if d is None:
            return fail(Unrenderable("no supervisor to render it"))
        return d.addCallbacks(_rendered, _not_rendered)


def _rendered(answer: dict) -> bytes:
    if answer["body"] is None:
        raise Unrenderable(answer["unrenderable"])
    return answer["body"]


def _not_rendered(failure: Failure) -> None:
    """
    The channel broke mid-render, or the supervisor failed it (its render pool was being
    replaced or stopped): not the original's fault, and worth a retry, where it had been
    answered 500 as a bug.
    """
    log.warn("render over the channel failed: {f}", f=failure.getErrorMessage())
    raise RenderUnavailable()


def render_for_worker(renderer: IRenderer, source: bytes, width: int, height: int, fit: str, fmt: str) -> "Deferred[dict]":
    """The supervisor's side of Render: an unrenderable original is an answer, not an AMP error."""
    d = renderer.render(source, Geometry(width, height, fit), fmt)
    return d.addCallbacks(lambda body: {"body": body}, _unrenderable)


def _unrenderable(failure: Failure) -> dict:
    failure.trap(Unrenderable)
    return {"unrenderable": failure.value.reason}
