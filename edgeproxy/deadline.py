"""
One deadline over a whole piece of work, be it one backend's exchange or the whole
origin chain; and a caller's cancel told apart from the work failing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import CancelledError, Deferred
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


def share(clock: IReactorTime, until: float | None, parts: int) -> float | None:
    """
    When the first of `parts` steps still to take must end, each getting an equal share
    of the time left until `until` (None: no deadline, none for the step either). A
    step that ends early leaves its time to the next ones.
    """
    if until is None:
        return None
    now = clock.seconds()
    return now + (until - now) / parts


def cancel_stays_cancel(d: Deferred[T]) -> Deferred[T]:
    """
    Cancelling the returned Deferred cancels `d`, and then fails with CancelledError
    whatever `d` failed with: Twisted turns a cancel into DNSLookupError, ResponseFailed
    or ConnectingCancelledError depending on the phase, and none of them is the
    backend's fault.
    """
    cancelled = False

    def cancel(_: Deferred[T]) -> None:
        nonlocal cancelled
        cancelled = True
        d.cancel()

    outer: Deferred[T] = Deferred(cancel)

    def settle(result: T | Failure) -> None:
        if outer.called:
            return
        if not isinstance(result, Failure):
            outer.callback(result)
        else:
            outer.errback(Failure(CancelledError()) if cancelled else result)

    d.addBoth(settle)
    return outer
