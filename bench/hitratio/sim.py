"""
Hit-ratio simulator: replays the request traces in ../shared/traces (relative to
the repository root) through the eviction policies of `edgeproxy.eviction`, the
cache's own code, at byte budgets of 1%, 5% and 10% of each trace's unique bytes,
and prints one table of object and byte hit ratios with the best policy marked.

    python3 bench/hitratio/sim.py [--traces NAME ...] [--policies NAME ...]
                                  [--budgets PCT ...] [--get-cost]

A request whose size differs from the cached copy's is a changed object: a miss
that replaces the copy. Traces without sizes count objects (size 1 each).
`--get-cost` also times `get()` on a hit for each policy, in ns per call.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import sys
import time
import timeit
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
TRACES = REPO.parent / "shared" / "traces"
sys.path.insert(0, str(REPO))

from cachetools import Cache, LRUCache  # noqa: E402

from edgeproxy.eviction import POLICIES, make_policy  # noqa: E402

BUDGETS = (1.0, 5.0, 10.0)


@dataclass
class Trace:
    name: str
    keys: list[str]
    sizes: list[int]
    sized: bool

    @property
    def unique_bytes(self) -> int:
        """The bytes of every key at its largest size: what an infinite cache would hold."""
        largest: dict[str, int] = {}
        for key, size in zip(self.keys, self.sizes):
            if size > largest.get(key, -1):
                largest[key] = size
        return sum(largest.values())


@dataclass
class Result:
    trace: str
    budget: float
    policy: str
    object_hit_ratio: float
    byte_hit_ratio: float


def load_trace(path: Path) -> Trace:
    """Read a `timestamp,key,size` gz CSV; an empty size means 1 (count objects)."""
    keys: list[str] = []
    sizes: list[int] = []
    sized = False
    with gzip.open(path, "rt", newline="") as lines:
        for row in csv.DictReader(lines):
            keys.append(row["key"])
            if row["size"]:
                sized = True
                sizes.append(int(row["size"]))
            else:
                sizes.append(1)
    return Trace(path.name.removesuffix(".csv.gz"), keys, sizes, sized)


def _size(value: int) -> int:
    return value


def replay(trace: Trace, policy: str, maxsize: int) -> tuple[float, float]:
    """Object and byte hit ratios of `policy` over `trace`; values are the object sizes."""
    cache = make_policy(policy, maxsize, _size)
    get = cache.get
    hits = hit_bytes = total_bytes = 0
    for key, size in zip(trace.keys, trace.sizes):
        total_bytes += size
        if get(key) == size:
            hits += 1
            hit_bytes += size
        elif size <= maxsize:
            cache[key] = size
    return hits / len(trace.keys), hit_bytes / total_bytes if total_bytes else 0.0


def simulate(traces: list[Trace], policies: list[str], budgets: list[float]) -> list[Result]:
    results = []
    for trace in traces:
        unique = trace.unique_bytes
        for budget in budgets:
            maxsize = max(1, int(unique * budget / 100))
            for policy in policies:
                ohr, bhr = replay(trace, policy, maxsize)
                results.append(Result(trace.name, budget, policy, ohr, bhr))
    return results


def best_marks(results: list[Result]) -> list[str]:
    """For each result, "obj" and/or "byte" if it is (one of) the best of its trace and budget."""
    best: dict[tuple[str, float], tuple[float, float]] = {}
    for r in results:
        ohr, bhr = best.get((r.trace, r.budget), (-1.0, -1.0))
        best[(r.trace, r.budget)] = (max(ohr, r.object_hit_ratio), max(bhr, r.byte_hit_ratio))
    marks = []
    for r in results:
        ohr, bhr = best[(r.trace, r.budget)]
        won = [name for name, mine, top in (("obj", r.object_hit_ratio, ohr),
                                            ("byte", r.byte_hit_ratio, bhr)) if mine >= top]
        marks.append("+".join(won))
    return marks


def print_table(results: list[Result]) -> None:
    print("| trace | budget | policy | object hit ratio | byte hit ratio | best |")
    print("|---|---:|---|---:|---:|---|")
    for r, mark in zip(results, best_marks(results)):
        print(f"| {r.trace} | {r.budget:g}% | {r.policy} | {r.object_hit_ratio:.4f} "
              f"| {r.byte_hit_ratio:.4f} | {mark} |")


def get_cost(cache: Cache, number: int = 1_000_000) -> float:
    """ns per `cache.get(key)` on a hit, best of 5, once `cache` is full of one-byte values."""
    for n in range(cache.maxsize):
        cache[b"key-%d" % n] = 1
    key = b"key-%d" % (cache.maxsize - 1)
    assert cache.get(key) == 1
    timer = timeit.Timer("get(key)", globals={"get": cache.get, "key": key})
    return min(timer.repeat(repeat=5, number=number)) / number * 1e9


def print_get_costs(policies: list[str]) -> None:
    print("\n| policy | get() on a hit, ns/call |")
    print("|---|---:|")
    for policy in policies:
        print(f"| {policy} | {get_cost(make_policy(policy, 10_000, _size)):.0f} |")
    baseline = get_cost(LRUCache(10_000, _size))
    print(f"| cachetools.LRUCache (memory tier today) | {baseline:.0f} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", nargs="+", metavar="NAME",
                        help="trace file names or stems in %s (default: all)" % TRACES)
    parser.add_argument("--policies", nargs="+", choices=sorted(POLICIES), default=list(POLICIES))
    parser.add_argument("--budgets", nargs="+", type=float, default=list(BUDGETS),
                        metavar="PCT", help="cache size, %% of the trace's unique bytes")
    parser.add_argument("--get-cost", action="store_true",
                        help="also time get() on a hit for each policy")
    return parser.parse_args(argv)


def trace_paths(names: list[str] | None) -> list[Path]:
    if not names:
        return sorted(TRACES.glob("*.csv.gz"))
    return [TRACES / (name if name.endswith(".csv.gz") else name + ".csv.gz") for name in names]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    traces = [load_trace(path) for path in trace_paths(args.traces)]
    print_table(simulate(traces, args.policies, args.budgets))
    print(f"\n{sum(len(t.keys) for t in traces):,} requests per policy and budget, "
          f"{time.perf_counter() - started:.1f} s")
    if args.get_cost:
        print_get_costs(args.policies)


if __name__ == "__main__":
    main()
