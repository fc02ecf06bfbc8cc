"""
Hit-path benchmark: edgeproxy (a real `twistd -n edgeproxy`) serving a memory hit,
next to a minimal twisted.web dict server returning the same bytes, loaded in turn
by the same wrk run on 127.0.0.1. Prints req/s, p50 and p99 for each and the ratios.

    python bench/hitpath.py [--seconds 10] [--connections 64]

Needs Debian's wrk (apt-get install wrk). Every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = "a6fc62329945ddc6aa13a641fe0a90d0885d04a4.jpg"
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(url: str, seconds: float = 20.0, accept_errors: bool = False) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            if accept_errors:
                return
            time.sleep(0.1)
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {seconds}s")


def start_edgeproxy(port: int, workdir: Path, changes: dict[str, str] | None = None) -> subprocess.Popen:
    """twistd edgeproxy on the bundled config, with `changes` (old line text: new) applied."""
    config = (REPO / "conf" / "edgeproxy.ini").read_text()
    for old, new in (changes or {}).items():
        config = config.replace(old, new)
    config = config.replace("listen = tcp:8080:backlog=1024", f"listen = tcp:{port}:interface=127.0.0.1:backlog=1024")
    config = config.replace("admin_listen = tcp:8081:interface=127.0.0.1", f"admin_listen = tcp:{free_port()}:interface=127.0.0.1")
    config = config.replace("root = ../samples", f"root = {REPO / 'samples'}")
    config = config.replace("disk_path = ../cache", f"disk_path = {workdir / 'cache'}")
    config = config.replace("tokenmap = tokenmap.ini", f"tokenmap = {REPO / 'conf' / 'tokenmap.ini'}")
    path = workdir / "edgeproxy.ini"
    path.write_text(config)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [TWISTD, "-n", "--pidfile=", "-l", str(workdir / "twistd.log"), "edgeproxy", "--config", str(path)]
    return subprocess.Popen(command, cwd=workdir, env=env)


def start_dictserver(port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "bench" / "dictserver.py"), str(port), str(REPO / "samples" / SAMPLE)])


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", "Host: localhost", url]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    return {
        "rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", output)[1]),
        "p50": _latency_ms(output, "50"),
        "p99": _latency_ms(output, "99"),
        "errors": float(_errors(output)),
    }


def _errors(output: str) -> int:
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors:(.*)", output)
    count = int(non_2xx[1]) if non_2xx else 0
    return count + (sum(int(n) for n in re.findall(r"\d+", socket_errors[1])) if socket_errors else 0)


def _latency_ms(output: str, percentile: str) -> float:
    value, unit = re.search(rf"^\s+{percentile}%\s+([0-9.]+)(us|ms|s)\s*$", output, re.M).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, start in (("edgeproxy", lambda p: start_edgeproxy(p, Path(tmp))), ("twisted.web dict", start_dictserver)):
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
