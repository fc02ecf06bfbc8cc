"""
Hit-path benchmark: edgeproxy (a real `twistd -n edgeproxy`) serving a memory hit,
next to a minimal twisted.web dict server returning the same bytes, loaded in turn
by the same wrk run on 127.0.0.1. Prints req/s, p50 and p99 for each and the ratios.

    python bench/hitpath.py [--seconds 10] [--connections 64]

Needs Debian's wrk (apt-get install wrk). Every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SAMPLE, free_port, start_edgeproxy, stop, wait_until_serving, wrk  # noqa: E402


def start_dictserver(port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "bench" / "dictserver.py"), str(port), str(REPO / "samples" / SAMPLE)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, start in (("edgeproxy", lambda p: start_edgeproxy(p, Path(tmp), extra_args=["--workers", "1"])), ("twisted.web dict", start_dictserver)):
            port = free_port()
            process = start(port)
            try:
                url = f"http://127.0.0.1:{port}/{SAMPLE}"
                wait_until_serving(url)
                wrk(url, 2, args.connections)  # warm-up, not reported
                results[name] = wrk(url, args.seconds, args.connections)
            finally:
                stop(process)
    print(f"hit path, {args.connections} connections, {args.seconds}s each, one {SAMPLE[:8]}… jpg of {(REPO / 'samples' / SAMPLE).stat().st_size} bytes")
    print(f"{'server':<18}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, r in results.items():
        print(f"{name:<18}{r['rps']:>10.0f}{r['p50']:>10.2f}{r['p99']:>10.2f}{r['errors']:>8.0f}")
    ours, base = results["edgeproxy"], results["twisted.web dict"]
    print(f"ratio edgeproxy/dict: req/s {ours['rps'] / base['rps']:.2f}x, p99 {ours['p99'] / base['p99']:.2f}x")


if __name__ == "__main__":
    main()
