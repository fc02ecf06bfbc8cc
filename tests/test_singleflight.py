from collections.abc import Callable

from twisted.internet.defer import Deferred, fail, succeed

from edgeproxy.singleflight import SingleFlight


def fetches() -> tuple[list[Deferred], Callable[[], Deferred]]:
    """A fetch to start, and the Deferreds of those started (fired by the test)."""
    started: list[Deferred] = []

    def start() -> Deferred:
        started.append(Deferred())
        return started[-1]

    return started, start


def test_waiters_share_one_flight_and_get_the_same_result():
    flights: SingleFlight[bytes] = SingleFlight()
    started, start = fetches()
    waiters = [flights.run("k", start) for _ in range(5)]
    assert len(started) == 1 and flights.collapsed == 4
    started[0].callback(b"body")
    assert [w.result for w in waiters] == [b"body"] * 5


def test_a_result_that_is_ready_at_once_still_answers_the_waiter():
    flights: SingleFlight[int] = SingleFlight()
    assert flights.run("k", lambda: succeed(1)).result == 1
    failed = flights.run("k", lambda: fail(ValueError("boom")))
    assert failed.result.check(ValueError)
    failed.addErrback(lambda _: None)


def test_a_cancelled_waiter_does_not_cancel_the_flight_and_failures_are_not_kept():
    flights: SingleFlight[bytes] = SingleFlight()
    flight = Deferred()
    leaver, stayer = flights.run("k", lambda: flight), flights.run("k", lambda: flight)
    leaver.cancel()
    leaver.addErrback(lambda _: None)
    assert not flight.called
    flight.errback(RuntimeError("origin down"))
    assert stayer.result.check(RuntimeError)
    stayer.addErrback(lambda _: None)
    again = flights.run("k", lambda: succeed(b"now"))
    assert again.result == b"now"


def test_a_detached_flight_answers_its_own_waiters_and_a_later_request_starts_anew():
    flights: SingleFlight[bytes] = SingleFlight()
    started, start = fetches()
    before = flights.run("k", start)
    flights.detach(["k", "absent"])
    after = [flights.run("k", start) for _ in range(2)]
    assert len(started) == 2 and len(flights) == 2  # both in the air: a drain waits for both
    started[0].callback(b"old")
    assert before.result == b"old" and not after[0].called and "k" in flights
    started[1].callback(b"new")
    assert [w.result for w in after] == [b"new"] * 2 and len(flights) == 0 and "k" not in flights
