"""A real `twistd -n edgeproxy` subprocess on a generated config, stopped by PID."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.configs import REPO

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
_RUNS = itertools.count()
_PORT = re.compile(r"EdgeSite starting on (\d+)")
_ADMIN_PORT = re.compile(r"\] Site starting on (\d+)")


class Twistd:
    def __init__(self, config: str, workdir: Path, workers: int = 1, serving: bool = True):
        """Returns once every worker serves, or (`serving` false) as soon as the process is started."""
        self.log = workdir / f"twistd-{next(_RUNS)}.log"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        command = [TWISTD, "-n", "--pidfile=", "-l", str(self.log), "edgeproxy", "--config", config, "--workers", str(workers)]
        self.process = subprocess.Popen(command, cwd=workdir, env=env, stderr=subprocess.PIPE, text=True)
        if not serving:
            return
        try:
            start = 20.0 if workers == 1 else 60.0  # each worker imports everything again; slow on a busy host
            self.port = self._wait_for_port(start)
            self.admin_port = int(_ADMIN_PORT.search(self.log.read_text())[1])
            if workers > 1:
                self.wait_for_log("EdgeSite starting on", workers, start)
        except BaseException:
            self.stop()  # never leave a process behind, whatever failed
            raise

    def _wait_for_port(self, seconds: float = 20.0) -> int:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"twistd exited {self.process.returncode}: {self.process.stderr.read()}")
            text = self.log.read_text() if self.log.exists() else ""
            if _PORT.search(text) and _ADMIN_PORT.search(text):
                return int(_PORT.search(text)[1])
            time.sleep(0.05)
        raise RuntimeError("twistd did not start listening in time")

    def wait_for_log(self, text: str, count: int = 1, seconds: float = 20.0) -> None:
        deadline = time.monotonic() + seconds
        while (self.log.read_text() if self.log.exists() else "").count(text) < count:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"{text!r} was not logged {count} times")
            time.sleep(0.05)

    def worker_pids(self) -> set[int]:
        """The supervisor's workers (not its render processes' fork server or resource tracker), from /proc."""
        return {pid for pid in children_of(self.process.pid) if "--worker-of" in command_line(pid)}

    def get(self, path: str, headers: dict | None = None, admin: bool = False, method: str = "GET") -> tuple[int, dict, bytes]:
        port = self.admin_port if admin else self.port
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        self.process.kill()
        self.process.wait()
        self.process.stderr.close()

    def stop(self) -> int:
        if self.process.stderr.closed:
            return self.process.returncode
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stderr.close()
        return self.process.returncode


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.add(int(entry))
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def run_twistd(config: str, workdir: Path, workers: int = 1) -> subprocess.CompletedProcess:
    """Run twistd to completion (for configs that must stop it at once)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [TWISTD, "-n", "--pidfile=", "edgeproxy", "--config", config, "--workers", str(workers)]
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=30)
