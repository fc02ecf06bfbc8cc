"""
Helpers shared by the bench scripts: ports, waiting for a server, starting a real
`twistd -n edgeproxy`, stopping processes (and what they started) by PID, reading
their RSS, running `wrk` and parsing its output, and a burst of clients that are all
connected before any of them sends.
"""

from __future__ import annotations

import math
import os
import re
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


# --- servers -----------------------------------------------------------------------------

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


def wait_for_port(port: int, seconds: float = 20.0, process: subprocess.Popen | None = None) -> None:
    """Until 127.0.0.1:port accepts a connection (no request is sent); fails early if
    `process` exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {seconds}s")


def start_edgeproxy(port: int, workdir: Path, changes: dict[str, str] | None = None,
                    extra_args: list[str] | None = None) -> subprocess.Popen:
    """twistd edgeproxy on the bundled config, with `changes` (old line text: new) applied."""
    config = (REPO / "conf" / "edgeproxy.ini").read_text()
    for old, new in (changes or {}).items():
        config = config.replace(old, new)
    config = config.replace("listen = tcp:8080:backlog=1024", f"listen = tcp:{port}:interface=127.0.0.1:backlog=1024")
    config = config.replace("admin_listen = tcp:8081:interface=127.0.0.1", f"admin_listen = tcp:{free_port()}:interface=127.0.0.1")
    config = config.replace("root = ../samples", f"root = {REPO / 'samples'}")
    config = config.replace("disk_path = ../cache", f"disk_path = {workdir / 'cache'}")
    config = config.replace("tokenmap = tokenmap.ini", f"tokenmap = {REPO / 'conf' / 'tokenmap.ini'}")
    config = config.replace("access_log = -", f"access_log = {workdir / 'access.log'}")  # sampled as bundled, kept off the terminal
    path = workdir / "edgeproxy.ini"
    path.write_text(config)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [TWISTD, "-n", "--pidfile=", "-l", str(workdir / "twistd.log"), "edgeproxy", "--config", str(path)]
    return subprocess.Popen(command + (extra_args or []), cwd=workdir, env=env)


def start_slow_origin(port: int, delay_ms: float, files: list[Path | str]) -> subprocess.Popen:
    """bench/slow_origin.py: answers after `delay_ms`, 404 for unknown names, GET /count."""
    command = [sys.executable, str(REPO / "bench" / "slow_origin.py"), str(port), str(delay_ms)]
    return subprocess.Popen(command + [str(f) for f in files])


def origin_count(port: int) -> int:
    return int(urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5).read())


# --- processes ---------------------------------------------------------------------------

def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, read from /proc (children of every thread)."""
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(k) for k in children.read_text().split()]
            except OSError:
                continue
            found += kids
            stack += kids
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_tree(process: subprocess.Popen, known: list[int] | None = None) -> None:
    """Stop `process` and what it started (by PID: its descendants seen now and `known`)."""
    kids = list(dict.fromkeys((known or []) + descendants(process.pid)))
    if process.poll() is None:
        stop(process)
    leftovers = [pid for pid in kids if alive(pid)]
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(pid) for pid in leftovers):
        time.sleep(0.05)
    for pid in leftovers:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory_kb(pid: int) -> tuple[int, int, int]:
    """(sum of VmRSS, sum of Pss, number of processes) over `pid` and its descendants.
    VmRSS counts pages shared between processes once per process; Pss splits them."""
    pids = [pid] + descendants(pid)
    return sum(_status_kb(p, "VmRSS") for p in pids), sum(_pss_kb(p) for p in pids), len(pids)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Abort(Exception):
    """Raised from a signal handler so that every finally block stops its processes."""


def abort_on_signals(*signums: int) -> None:
    def _abort(signum: int, frame: object) -> None:
        raise Abort(f"signal {signal.Signals(signum).name}")
    for signum in signums:
        signal.signal(signum, _abort)


# --- wrk ---------------------------------------------------------------------------------

def wrk_command(url: str, seconds: float, connections: int, threads: int = 1, script: Path | None = None,
                host: str = "localhost") -> list[str]:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-H", f"Host: {host}"]
    return command + (["-s", str(script)] if script else []) + [url]


def wrk(url: str, seconds: float, connections: int, threads: int = 1, script: Path | None = None,
        host: str = "localhost") -> dict:
    """One bounded wrk run; req/s, p50 and p99 in ms, and error counts."""
    command = wrk_command(url, seconds, connections, threads, script, host)
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    return parse_wrk(output)


def parse_wrk(output: str) -> dict:
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors:(.*)", output)
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", output)[1]),
        "requests": float(re.search(r"(\d+) requests in", output)[1]),
        "p50": _latency_ms(output, "50"),
        "p99": _latency_ms(output, "99"),
        "non_2xx": float(non_2xx[1]) if non_2xx else 0.0,
        "socket_errors": float(sum(int(n) for n in re.findall(r"\d+", socket_errors[1]))) if socket_errors else 0.0,
    }
    result["errors"] = result["non_2xx"] + result["socket_errors"]
    result["socket_detail"] = socket_errors[1].strip() if socket_errors else ""
    return result


def _latency_ms(output: str, percentile: str) -> float:
    value, unit = re.search(rf"^\s+{percentile}%\s+([0-9.]+)(us|ms|s)\s*$", output, re.M).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


# --- a burst of clients ------------------------------------------------------------------

def burst(port: int, path: str, clients: int) -> list[float]:
    """
    `clients` connections, each sending one GET as soon as it is open (h2load --h1:
    a C client, so the burst's own scheduling adds well under a millisecond, where a
    Python client added 15-25 ms to every system); the sorted latencies in seconds,
    from each request's start to the end of its response. Every answer must be a 200.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".tsv") as log:
        command = ["h2load", "--h1", "-n", str(clients), "-c", str(clients), "--log-file", log.name,
                   f"http://127.0.0.1:{port}{path}"]  # Host: 127.0.0.1:port (a second Host header is a 400)
        subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
        rows = [line.split("\t") for line in log.read().splitlines()]
    assert len(rows) == clients and all(status == "200" for _, status, _ in rows), rows[:3]
    return sorted(int(micros) / 1e6 for _, _, micros in rows)


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of values already sorted."""
    rank = math.ceil(len(sorted_values) * share - 1e-9)
    return sorted_values[max(0, min(len(sorted_values), rank) - 1)]
