"""
A 100-way cold miss: 100 clients (h2load --h1, one request each) ask a real `twistd -n edgeproxy`
for one image it has never seen, at the same instant. The origin answers after a
fixed delay and counts requests. Prints origin requests, and the waiters' p50/p99
next to the origin's own latency.

    python bench/coldmiss.py [--clients 100] [--delay-ms 50] [--rounds 5]

Every process it starts is stopped by PID; everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, burst, free_port, origin_count, percentile, start_edgeproxy, start_slow_origin, stop, wait_until_serving  # noqa: E402

NAMES = sorted(p.name for p in (REPO / "samples").glob("*.jpg"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=len(NAMES))
    args = parser.parse_args()
    origin_port, edge_port = free_port(), free_port()
    origin = start_slow_origin(origin_port, args.delay_ms, [REPO / "samples" / n for n in NAMES])
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "map.ini").write_text(f"[tokenmap]\nffff = 127.0.0.1:{origin_port}\n")
        edge = start_edgeproxy(edge_port, workdir, {"chain = local": "chain = shards", "tokenmap = tokenmap.ini": f"tokenmap = {workdir / 'map.ini'}"})
        try:
            wait_until_serving(f"http://127.0.0.1:{origin_port}/count")
            wait_until_serving(f"http://127.0.0.1:{edge_port}/{'0' * 40}.jpg", accept_errors=True)
            print(f"{args.clients}-way cold miss, origin delay {args.delay_ms:g} ms, one round per image")
            print(f"{'image':<10}{'origin reqs':>12}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'p50 - origin ms':>17}")
            for name in NAMES[: args.rounds]:
                before = origin_count(origin_port)
                waits = burst(edge_port, f"/{name}", args.clients)
                requests = origin_count(origin_port) - before
                p50, p99 = statistics.median(waits) * 1000, percentile(waits, 0.99) * 1000
                print(f"{name[:8]:<10}{requests:>12}{p50:>9.1f}{p99:>9.1f}{waits[-1] * 1000:>9.1f}{p50 - args.delay_ms:>17.1f}")
        finally:
            stop(edge)
            stop(origin)


if __name__ == "__main__":
    main()
