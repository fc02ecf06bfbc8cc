"""
One error type for everything a request can end in, so that every layer can
refuse a request the same way and the HTTP layer maps it to a status in one place.
"""

from __future__ import annotations

from enum import Enum


class EdgeError(Exception):
    """A request that ends in an error response: status, one-line public message."""

    def __init__(self, status: int, message: str, headers: dict[bytes, bytes] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class FailureKind(Enum):
    """Why an origin did not deliver: tells "absent" from "broken" so a chain knows to go on."""

    NOT_FOUND = 404
    UPSTREAM = 502
    BUSY = 503
    TIMEOUT = 504


class OriginFailure(Exception):
    """One origin (or a whole chain) did not deliver an object."""

    def __init__(self, kind: FailureKind, where: str, reason: str, status: int | None = None):
        super().__init__(f"{where}: {reason}")
        self.kind = kind
        self.where = where
        self.reason = reason
        self.status = status

    def to_edge_error(self) -> EdgeError:
        """The client sees the kind, never the backend's address or reason."""
        headers = {b"Retry-After": b"1"} if self.kind is FailureKind.BUSY else None
        return EdgeError(self.kind.value, _PUBLIC_MESSAGES[self.kind], headers)


class SkippedHop(OriginFailure):
    """A hop not tried because its backend is marked down: it counts in the outcome, but
    is not logged per request (edgeproxy_backend_up and the mark-down say it once)."""

    def __init__(self, where: str):
        super().__init__(FailureKind.UPSTREAM, where, "marked down, skipped")


_PUBLIC_MESSAGES = {
    FailureKind.NOT_FOUND: "image not found",
    FailureKind.UPSTREAM: "origin failed",
    FailureKind.BUSY: "origin busy, retry",
    FailureKind.TIMEOUT: "origin timed out",
}


def combine_kinds(kinds: list[FailureKind]) -> FailureKind:
    """
    The outcome of a chain whose every step failed: absent only if absent everywhere,
    a timeout only if everything timed out, busy (retry soon) if a backend that may
    hold it was at its concurrency cap, else a broken upstream.
    """
    if kinds and all(k is FailureKind.NOT_FOUND for k in kinds):
        return FailureKind.NOT_FOUND
    if kinds and all(k is FailureKind.TIMEOUT for k in kinds):
        return FailureKind.TIMEOUT
    if FailureKind.BUSY in kinds:
        return FailureKind.BUSY
    return FailureKind.UPSTREAM
