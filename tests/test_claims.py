"""Collapsed forwarding across workers, as a table of claims and releases (no processes)."""

from edgeproxy.claims import ABSENT, FETCH, FETCHED, ON_DISK, FetchClaims


def outcomes(deferreds):
    results = []
    for d in deferreds:
        d.addCallback(results.append)
    return results


def test_the_first_claimant_fetches_and_the_others_get_its_outcome():
    claims, a, b = FetchClaims(), object(), object()
    first = outcomes([claims.claim(b"k", a)])
    later = outcomes([claims.claim(b"k", b), claims.claim(b"k", b)])
    assert first == [(FETCH, None)] and later == []
    claims.release(b"k", b, ON_DISK)  # not the claimant: ignored
    assert later == []
    claims.release(b"k", a, ON_DISK)
    assert later == [(ON_DISK, None), (ON_DISK, None)]
    assert len(claims) == 0 and outcomes([claims.claim(b"k", b)]) == [(FETCH, None)]


def test_the_claimant_hears_once_that_others_wait_and_its_bytes_reach_them():
    wanted = []
    claims, a, b, c = FetchClaims(lambda claimant, key: wanted.append((claimant, key))), object(), object(), object()
    claims.claim(b"k", a)
    assert wanted == []  # nobody waits yet: the claimant keeps its bytes to itself
    later = outcomes([claims.claim(b"k", b), claims.claim(b"k", c)])
    assert wanted == [(a, b"k")]
    claims.release(b"k", a, FETCHED, b"the original")
    assert later == [(FETCHED, b"the original")] * 2


def test_absent_is_passed_on_and_other_keys_are_independent():
    claims, a, b = FetchClaims(), object(), object()
    claims.claim(b"x", a), claims.claim(b"y", b)
    waiting = outcomes([claims.claim(b"x", b), claims.claim(b"y", a)])
    claims.release(b"x", a, ABSENT)
    assert waiting == [(ABSENT, None)]
    claims.release(b"y", b, FETCH)
    assert waiting == [(ABSENT, None), (FETCH, None)]


def test_a_claimant_that_dies_sends_its_waiters_to_the_origin():
    claims, dead, alive = FetchClaims(), object(), object()
    claims.claim(b"k1", dead), claims.claim(b"k2", dead), claims.claim(b"k3", alive)
    waiting = outcomes([claims.claim(b"k1", alive), claims.claim(b"k2", alive), claims.claim(b"k3", dead)])
    claims.abandon(dead)
    assert waiting == [(FETCH, None), (FETCH, None)] and len(claims) == 1
