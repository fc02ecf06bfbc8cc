"""The rate limit on a fake clock: no sleeping, no timing."""

from twisted.internet.task import Clock

from edgeproxy.tokenbucket import TokenBucket


def fired(deferreds):
    return sum(d.called for d in deferreds)


def test_first_take_is_immediate_then_one_per_period():
    clock = Clock()
    bucket = TokenBucket(10, clock)
    bucket.start()
    takes = [bucket.take() for _ in range(5)]
    assert fired(takes) == 1
    clock.pump([0.02] * 5)  # 0.1 s
    assert fired(takes) == 2
    clock.pump([0.02] * 15)  # 0.4 s in all
    assert fired(takes) == 5
    bucket.stop()


def test_an_idle_spell_is_not_followed_by_a_burst():
    clock = Clock()
    bucket = TokenBucket(10, clock)
    bucket.start()
    bucket.take()
    clock.pump([0.02] * 500)  # 10 s idle
    takes = [bucket.take() for _ in range(3)]
    assert fired(takes) == 1
    bucket.stop()


def test_a_high_rate_releases_several_per_tick():
    clock = Clock()
    bucket = TokenBucket(1000, clock)
    bucket.start()
    takes = [bucket.take() for _ in range(101)]
    clock.pump([0.02] * 5)  # 0.1 s: 100 more
    assert fired(takes) == 101
    bucket.stop()


def test_a_cancelled_take_gives_its_turn_away():
    clock = Clock()
    bucket = TokenBucket(10, clock)
    bucket.start()
    bucket.take()
    first, second = bucket.take(), bucket.take()
    first.addErrback(lambda _: None)
    first.cancel()
    clock.pump([0.02] * 5)
    assert second.called
    bucket.stop()
