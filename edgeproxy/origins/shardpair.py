"""
The shard farm: the token map names the pair that owns an image; its primary is
asked first, and its secondary on a failure or a 404 — or at once beside a primary
that is slower than usual (hedging). While shards are being split, a miss on the new
owner asks the previous owner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from edgeproxy import metrics
from edgeproxy.deadline import share
from edgeproxy.errors import OriginFailure
from edgeproxy.origins import IOrigin, check_content, render_template
from edgeproxy.origins.fallback import combine_failures, first_success, log_hop
from edgeproxy.origins.guard import GuardedBackend, OnHeaders
from edgeproxy.origins.health import HealthPolicy
from edgeproxy.origins.hedging import HedgeBudget, HedgePolicy, LatencyWindow
from edgeproxy.origins.http import HTTPBackend
from edgeproxy.shardmaps import ShardMaps

log = Logger()


@dataclass(frozen=True)
class Member:
    """A shard server: how to ask it, and how the chain judges it."""

    http: HTTPBackend
    guard: GuardedBackend

    def request(self, path: str, image_hash: str, verify: bool, until: float | None) -> Callable[[OnHeaders], "Deferred[bytes]"]:
        """`until`: when the answer must be complete, if before the member's own timeout."""
        if not verify:
            return lambda on_headers: self.http.get(path, on_headers, until)
        return lambda on_headers: self.http.get(path, on_headers, until).addCallback(check_content, image_hash, self.http.address)


class Members:
    """Each shard server once, whichever map names it, so its health and latency survive a reload."""

    def __init__(
        self,
        client: HTTPClient,
        clock: IReactorTime,
        timeout: float,
        max_body: int,
        health: HealthPolicy,
        max_in_flight: int,
        hedge: HedgePolicy | None,
        board: list[GuardedBackend] | None = None,
        scheme: str = "http",
    ):
        """`board` collects every member's guard as it is made, for the status page."""
        self._members: dict[str, Member] = {}
        self._board = board if board is not None else []
        self._http = lambda address: HTTPBackend(client, address, clock, timeout, max_body, scheme)
        latency = (hedge.percentile, hedge.initial) if hedge else (0.95, 0.1)
        self._guard = lambda address: GuardedBackend(address, clock, health, max_in_flight, LatencyWindow(*latency))

    def __call__(self, address: str) -> Member:
        member = self._members.get(address)
        if member is None:
            member = self._members[address] = Member(self._http(address), self._guard(address))
            self._board.append(member.guard)
        return member


@implementer(IOrigin)
class ShardPairOrigin:
    """
    Reads the maps through `maps()` on every fetch, so a reload takes effect at once.
    Within the chain's share, each pair asked and each member of it gets an equal share
    of the time left, so a hung primary leaves time to its secondary.
    """

    name = "shards"

    def __init__(
        self,
        maps: Callable[[], ShardMaps],
        members: Callable[[str], Member],
        clock: IReactorTime,
        path_template: str,
        hedge: HedgePolicy | None,
        verify: bool = True,
        panic: bool = True,
    ):
        """
        `panic`: a pair whose members are all down is tried anyway. Only for a pair that
        no origin follows: with S3 after it, skipping the pair asks S3 at once, where
        trying it would spend S3's time on members known to fail.
        """
        self._maps = maps
        self._member = members
        self._clock = clock
        self._path_template = path_template
        self._hedge = hedge
        self.budget = HedgeBudget(hedge.share if hedge else 0.0)
        self._verify = verify
        self._panic = panic

    def fetch(self, image_hash: str, ext: str, until: float | None = None) -> "Deferred[bytes]":
        return ensureDeferred(self._fetch(image_hash, render_template(self._path_template, image_hash, ext), until))

    async def _fetch(self, image_hash: str, path: str, until: float | None) -> bytes:
        maps = self._maps()
        previous = maps.previous_owner(image_hash)
        try:
            owner = maps.current.owner_of_hash(image_hash)
            return await self._from_pair(owner, image_hash, path, share(self._clock, until, 1 if previous is None else 2))
        except OriginFailure as failure:
            if previous is None:
                raise
            log.info("asking the previous owner {pair} of {hash}", pair=" ".join(previous), hash=image_hash)
            try:
                return await self._from_pair(previous, image_hash, path, until)
            except OriginFailure as second:
                raise combine_failures("pairs", [failure, second]) from None

    async def _from_pair(self, pair: Sequence[str], image_hash: str, path: str, until: float | None) -> bytes:
        members = [self._member(address) for address in pair]
        panic = self._panic and all(m.guard.health.resting() for m in members)
        if panic:
            log.warn("every member of pair {pair} is down: trying them anyway", pair=" ".join(pair))
        where = f"pair {' '.join(pair)}"
        if self._hedge is not None and len(members) > 1:
            self.budget.earn()
            return await self._hedged(where, members, image_hash, path, panic, until)
        return await first_success(where, self._in_turn(members, 0, image_hash, path, panic, until))

    def _in_turn(
        self, members: list[Member], start: int, image_hash: str, path: str, force: bool, until: float | None
    ) -> list[tuple[str, Callable[[], "Deferred[bytes]"]]]:
        """The members from `start` on, one after the other, each with its share of the time until `until`."""
        return [
            (m.guard.name, self._attempt(m, image_hash, path, force, until, len(members) - i))
            for i, m in enumerate(members)
            if i >= start
        ]

    def _attempt(
        self, member: Member, image_hash: str, path: str, force: bool, until: float | None, left: int
    ) -> Callable[[], "Deferred[bytes]"]:
        """`left`: this member and those after it, which share the time until `until`."""

        def attempt() -> "Deferred[bytes]":
            request = member.request(path, image_hash, self._verify, share(self._clock, until, left))
            return ensureDeferred(member.guard.call(image_hash, request, force))

        return attempt

    async def _hedged(
        self, where: str, members: list[Member], image_hash: str, path: str, force: bool, until: float | None
    ) -> bytes:
        """
        The primary alone, unless it has sent no headers by the hedge delay: then the
        secondary too, and the first body wins. Members after the second are asked in turn.
        """
        first, second, *rest = members
        answered: Deferred[None] = Deferred()

        def wake() -> None:
            if not answered.called:
                answered.callback(None)

        request = first.request(path, image_hash, self._verify, share(self._clock, until, len(members)))
        primary = ensureDeferred(first.guard.call(image_hash, lambda on_headers: request(_both(on_headers, wake)), force))
        primary.addBoth(_passing(wake))
        timer = self._clock.callLater(self._delay(first), wake)
        try:
            await answered
        except CancelledError:
            # The chain's deadline during the hedge delay: the primary's request and its in-flight slot go too.
            timer.cancel()
            primary.cancel()
            primary.addErrback(lambda failure: failure.trap(CancelledError))
            raise
        if timer.active():
            timer.cancel()
            racers = [primary]
        elif self.budget.spend():
            metrics.ORIGIN_HEDGES.labels(second.guard.name).inc()
            log.info("hedging {hash} on {secondary}", hash=image_hash, secondary=second.guard.name)
            racers = [primary, self._attempt(second, image_hash, path, force, until, len(members) - 1)()]
        else:
            racers = [primary]
        try:
            return await _first_body(where, racers, [first, second][: len(racers)])
        except OriginFailure as failure:
            attempts = self._in_turn(members, len(racers), image_hash, path, force, until)
            if not attempts:
                raise
            try:
                return await first_success(where, attempts)
            except OriginFailure as rest_failure:
                raise combine_failures(where, [failure, rest_failure]) from None

    def _delay(self, member: Member) -> float:
        assert self._hedge is not None
        if self._hedge.after is not None:
            return self._hedge.after
        return max(self._hedge.floor, member.guard.latency.value)


def _both(first: OnHeaders, second: OnHeaders) -> OnHeaders:
    def both() -> None:
        first()
        second()

    return both


def _passing(wake: Callable[[], None]) -> Callable[[object], object]:
    def passing(result: object) -> object:
        wake()
        return result

    return passing


def _first_body(where: str, racers: list["Deferred[bytes]"], members: list[Member]) -> "Deferred[bytes]":
    """The first body wins and the others are cancelled; if every racer fails, one combined failure."""
    failures: list[OriginFailure] = []
    done: Deferred[bytes] = Deferred(lambda _: [r.cancel() for r in racers])

    def won(body: bytes) -> None:
        if not done.called:
            done.callback(body)
            for racer in racers:
                racer.cancel()

    def lost(failure: Failure, member: Member) -> None:
        if done.called:
            return
        if not failure.check(OriginFailure):
            done.errback(failure)
            return
        log_hop(member.guard.name, failure.value)
        failures.append(failure.value)
        if len(failures) == len(racers):
            done.errback(combine_failures(where, failures))

    for racer, member in zip(racers, members):
        racer.addCallbacks(won, lost, errbackArgs=(member,))
    return done
