import random

import pytest

from edgeproxy.eviction import (
    POLICIES,
    LRUPolicy,
    S3FIFOPolicy,
    SIEVEPolicy,
    make_policy,
)

ALL = sorted(POLICIES)


def size_of(value: bytes) -> int:
    return len(value)


class Recorder:
    """An `on_evict` that keeps what it was given."""

    def __init__(self):
        self.evicted: list[tuple[object, bytes]] = []

    def __call__(self, key: object, value: bytes) -> None:
        self.evicted.append((key, value))

    @property
    def keys(self) -> list[object]:
        return [key for key, _ in self.evicted]


def build(name: str, maxsize: int) -> tuple:
    recorder = Recorder()
    return make_policy(name, maxsize, size_of, recorder), recorder


def test_policies_table():
    assert POLICIES == {"lru": LRUPolicy, "s3fifo": S3FIFOPolicy, "sieve": SIEVEPolicy}


def test_make_policy_unknown_name():
    with pytest.raises(ValueError, match="unknown eviction policy 'arc'"):
        make_policy("arc", 10, size_of)


@pytest.mark.parametrize("name", ALL)
def test_random_workload_never_exceeds_budget_and_reports_every_eviction(name):
    """Every value stored ends up exactly once: still cached, popped, replaced or evicted."""
    rng = random.Random(1234)
    cache, recorder = build(name, 5_000)
    live: dict[int, bytes] = {}
    inserted: list[bytes] = []
    dropped: list[bytes] = []
    for step in range(20_000):
        key = rng.randrange(400)
        action = rng.random()
        seen = len(recorder.evicted)
        if action < 0.5:
            value = b"%d:%d:" % (key, step) + b"x" * rng.choice((0, 1, 10, 100, 500, 2_000))
            inserted.append(value)
            if key in live:
                dropped.append(live.pop(key))
            cache[key] = value
        elif action < 0.9:
            assert cache.get(key) == live.get(key)
        elif key in live:
            dropped.append(live.pop(key))
            assert cache.pop(key) is dropped[-1]
        else:
            assert cache.pop(key) is None
        for evicted_key, evicted in recorder.evicted[seen:]:
            assert live.pop(evicted_key) is evicted
        if action < 0.5:
            live[key] = value
        assert cache.currsize <= cache.maxsize
        assert cache.currsize == sum(map(len, live.values()))
        assert set(cache) == set(live)
        assert len(cache) == len(live)
    evicted = [value for _, value in recorder.evicted]
    assert len(evicted) > 1_000
    assert sorted(evicted + dropped + list(live.values())) == sorted(inserted)


@pytest.mark.parametrize("name", ALL)
def test_on_evict_gets_exactly_the_evicted_entries(name):
    cache, recorder = build(name, 100)
    inserted = {}
    for n in range(50):
        key = f"k{n}"
        inserted[key] = bytes([n]) * 9
        cache[key] = inserted[key]
        assert cache.currsize <= 100
    assert len(cache) == 11
    assert len(recorder.evicted) == 50 - 11
    assert set(recorder.keys).isdisjoint(cache)
    assert set(recorder.keys) | set(cache) == set(inserted)
    assert all(inserted[key] == value for key, value in recorder.evicted)


@pytest.mark.parametrize("name", ALL)
def test_replace_updates_size_and_does_not_report_the_old_value(name):
    cache, recorder = build(name, 100)
    cache["a"] = b"x" * 10
    cache["b"] = b"y" * 20
    cache["a"] = b"z" * 50
    assert cache.currsize == 70
    assert cache.get("a") == b"z" * 50
    cache["a"] = b"w"
    assert cache.currsize == 21
    assert len(cache) == 2
    assert recorder.evicted == []


@pytest.mark.parametrize("name", ALL)
def test_replace_with_a_bigger_value_evicts_others_not_itself(name):
    cache, recorder = build(name, 100)
    for key in "abcd":
        cache[key] = b"." * 25
    cache["a"] = b"!" * 90
    assert cache.get("a") == b"!" * 90
    assert cache.currsize == 90
    assert sorted(recorder.keys) == ["b", "c", "d"]


@pytest.mark.parametrize("name", ALL)
def test_pop_does_not_call_on_evict(name):
    cache, recorder = build(name, 100)
    cache["a"] = b"x" * 40
    cache["b"] = b"y" * 40
    assert cache.pop("a") == b"x" * 40
    assert cache.pop("a") is None
    assert cache.pop("a", b"default") == b"default"
    assert "a" not in cache
    assert cache.currsize == 40
    assert recorder.evicted == []
    cache["c"] = b"z" * 60
    assert recorder.evicted == []
    assert cache.currsize == 100


@pytest.mark.parametrize("name", ALL)
def test_oversized_value_raises_and_changes_nothing(name):
    cache, recorder = build(name, 100)
    cache["a"] = b"x" * 60
    with pytest.raises(ValueError):
        cache["b"] = b"y" * 101
    with pytest.raises(ValueError):
        cache["a"] = b"y" * 101
    assert cache.get("a") == b"x" * 60
    assert "b" not in cache
    assert cache.currsize == 60
    assert recorder.evicted == []
    cache["c"] = b"z" * 100
    assert cache.currsize == 100


@pytest.mark.parametrize("name", ALL)
def test_get_of_a_missing_key_returns_default(name):
    cache, _ = build(name, 100)
    sentinel = object()
    assert cache.get("nope") is None
    assert cache.get("nope", sentinel) is sentinel
    cache["yes"] = b""
    assert cache.get("yes", sentinel) == b""


@pytest.mark.parametrize("name", ALL)
def test_bytes_keys_and_zero_sized_values(name):
    cache, recorder = build(name, 10)
    for n in range(100):
        cache[b"empty-%d" % n] = b""
    assert len(cache) == 100
    assert cache.currsize == 0
    cache[b"full"] = b"f" * 10
    assert cache.get(b"full") == b"f" * 10
    assert cache.currsize == 10
    assert recorder.evicted == []


@pytest.mark.parametrize("name", ALL)
def test_maxsize_and_contains_without_access(name):
    cache, _ = build(name, 1234)
    assert cache.maxsize == 1234
    assert cache.currsize == 0
    cache[1] = b"one"
    assert 1 in cache
    assert 2 not in cache
    assert list(cache) == [1]


def test_lru_evicts_the_least_recently_used():
    cache, recorder = build("lru", 30)
    for key in "abc":
        cache[key] = b"." * 10
    assert cache.get("a") is not None
    cache["d"] = b"." * 10
    assert recorder.keys == ["b"]
    cache["e"] = b"." * 10
    assert recorder.keys == ["b", "c"]
    assert sorted(cache) == ["a", "d", "e"]


def test_lru_contains_does_not_count_as_access():
    cache, recorder = build("lru", 20)
    cache["a"] = b"." * 10
    cache["b"] = b"." * 10
    assert "a" in cache
    cache["c"] = b"." * 10
    assert recorder.keys == ["a"]


def scan(name: str, budget: int, hot: int, one_hit_wonders: int) -> tuple:
    """Fill the cache with `hot` objects each requested twice, then a long one-time scan."""
    cache, recorder = build(name, budget)
    for n in range(hot):
        cache[f"hot{n}"] = b"h" * 10
        assert cache.get(f"hot{n}") is not None
    for n in range(one_hit_wonders):
        cache[f"scan{n}"] = b"s" * 10
    return cache, recorder


@pytest.mark.parametrize("name", ["s3fifo", "sieve"])
def test_objects_hit_once_survive_a_one_hit_wonder_scan(name):
    cache, recorder = scan(name, budget=1_000, hot=50, one_hit_wonders=2_000)
    assert all(f"hot{n}" in cache for n in range(50))
    assert cache.currsize <= 1_000
    assert len(recorder.evicted) == 2_000 + 50 - len(cache)


def test_lru_is_not_scan_resistant():
    """The same scan flushes LRU: shows the scan test above can fail."""
    cache, _ = scan("lru", budget=1_000, hot=50, one_hit_wonders=2_000)
    assert not any(f"hot{n}" in cache for n in range(50))


@pytest.mark.parametrize("name", ["s3fifo", "sieve"])
def test_objects_never_hit_do_not_survive_the_scan(name):
    cache, _ = build(name, 1_000)
    for n in range(50):
        cache[f"cold{n}"] = b"c" * 10
    for n in range(2_000):
        cache[f"scan{n}"] = b"s" * 10
    assert not any(f"cold{n}" in cache for n in range(50))


def fill_s3fifo_main() -> tuple:
    """A 100-byte S3-FIFO whose main queue holds b..j (90 bytes) and small queue x."""
    cache, recorder = build("s3fifo", 100)
    for key in "abcdefghij":
        cache[key] = b"." * 10
        cache.get(key)
    cache["x"] = b"." * 10
    assert recorder.keys == ["a"]
    return cache, recorder


def test_s3fifo_one_hit_wonders_leave_from_the_small_queue_and_come_back_to_main():
    cache, recorder = fill_s3fifo_main()
    cache["new"] = b"n" * 10
    cache["y"] = b"." * 10
    assert recorder.keys == ["a", "x", "new"]
    cache["new"] = b"n" * 10
    for n in range(20):
        cache[f"scan{n}"] = b"s" * 10
    assert "new" in cache
    assert sorted(cache)[:9] == ["c", "d", "e", "f", "g", "h", "i", "j", "new"]


def test_s3fifo_main_reinserts_by_frequency():
    cache, recorder = fill_s3fifo_main()
    for _ in range(5):
        cache.get("c")
    cache.get("d")
    for n in range(20):
        cache[f"hit{n}"] = b"h" * 10
        cache.get(f"hit{n}")
    assert "c" in cache
    assert "d" not in cache
    assert recorder.keys.index("b") < recorder.keys.index("e") < recorder.keys.index("d")


def test_s3fifo_pop_from_main_frees_main_space():
    """Popped main bytes are available again: promotions do not push main over its share."""
    cache, recorder = fill_s3fifo_main()
    for key in "bcdef":
        cache.pop(key)
    for n in range(5):
        cache[f"p{n}"] = b"p" * 10
        cache.get(f"p{n}")
    cache["q"] = b"." * 10
    cache["r"] = b"." * 10
    cache["s"] = b"." * 10
    assert recorder.keys == ["a", "x", "q", "r"]
    assert sorted(cache) == ["g", "h", "i", "j", "p0", "p1", "p2", "p3", "p4", "s"]


def test_sieve_replacement_keeps_the_visited_bit():
    cache, recorder = build("sieve", 30)
    for key in "abc":
        cache[key] = b"." * 10
    cache.get("a")
    cache["a"] = b"new"
    for key in "def":
        cache[key] = b"." * 10
    assert recorder.keys == ["b", "c", "d"]
    assert cache.get("a") == b"new"
