"""One deadline over a whole piece of work, be it one backend's exchange or the whole origin chain."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

T = TypeVar("T")


def with_deadline(d: Deferred[T], clock: IReactorTime, seconds: float, timed_out: Callable[[], Exception]) -> Deferred[T]:
    """
    Cancel `d` after `seconds`. Once the deadline has passed, whatever failure the
    cancel produced (a CancelledError, an aborted connection) reads as `timed_out()`.
    """
    timer = clock.callLater(seconds, d.cancel)

    def settle(result: T | Failure) -> T | Failure:
        if timer.active():
            timer.cancel()
            return result
        return Failure(timed_out()) if isinstance(result, Failure) else result

    return d.addBoth(settle)
