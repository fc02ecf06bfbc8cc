"""A real `twistd -n edgeproxy` process, as systemd runs it."""

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.configs import REPO, write_config
from tests.twistd import TWISTD, Twistd, run_twistd

SAMPLE = "a6fc62329945ddc6aa13a641fe0a90d0885d04a4"


@pytest.fixture
def proxy(tmp_path):
    twistd = Twistd(write_config(tmp_path), tmp_path)
    yield twistd
    # twistd re-raises the signal that stopped it, so systemd sees a clean SIGTERM exit.
    assert twistd.stop() == -signal.SIGTERM


def test_miss_then_hit_memory_with_identical_bytes(proxy):
    first = proxy.get(f"/{SAMPLE}.jpg")
    second = proxy.get(f"/{SAMPLE}.jpg")
    assert (first[0], second[0]) == (200, 200)
    assert (first[1]["X-Cache"], second[1]["X-Cache"]) == ("MISS", "HIT-MEMORY")
    assert first[2] == second[2]
    assert hashlib.sha1(first[2]).hexdigest() == SAMPLE
    assert first[2] == (REPO / "samples" / f"{SAMPLE}.jpg").read_bytes()


def test_errors_through_the_real_process(proxy):
    assert proxy.get("/" + "0" * 40 + ".jpg")[0:3:2] == (404, b"image not found\n")
    assert proxy.get("/wp-login.php")[0] == 404
    assert proxy.get(f"/{SAMPLE}.jpg", {"Host": "other.example.com"})[0] == 421


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({("cache", "memory_bytes"): "lots"}, "[cache] memory_bytes: 'lots' is not a size"),
        ({("edge", "listen"): None}, "[edge] listen: missing (required)"),
        ({("edge", "listen"): "tcp:port"}, "[edge] listen: 'tcp:port' is not a server endpoint"),
        ({("edge", "listen"): "systemd:domain=INET:index=0"}, "systemd passed no socket at index 0"),
    ],
)
def test_bad_config_stops_startup_with_one_line(tmp_path, changes, expected):
    path = write_config(tmp_path, changes)
    result = run_twistd(path, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"edgeproxy: {path}: ")
    assert expected in lines[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_an_access_log_that_cannot_be_opened_stops_startup_with_one_line(tmp_path, workers):
    """
    It was accepted, then a single process died of a traceback at start, and with
    workers every worker died at its start and was replaced forever, the supervisor
    looking healthy.
    """
    access_log = tmp_path / "no-such-folder" / "access.jsonl"
    path = write_config(tmp_path, {("log", "access_log"): str(access_log)})
    result = run_twistd(path, tmp_path, workers)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"edgeproxy: {path}: [log] access_log: {access_log}: cannot be opened for appending: No such file or directory"
    ]


def test_bad_token_map_stops_startup(tmp_path):
    (tmp_path / "map.ini").write_text("[tokenmap]\n0100 = a:1\n0050 = b:1\nffff = c:1\n")
    path = write_config(tmp_path, {("origins", "chain"): "shards", ("shards", "tokenmap"): str(tmp_path / "map.ini")})
    result = run_twistd(path, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"edgeproxy: {path}: [shards] tokenmap: {tmp_path / 'map.ini'}: bound 0050 is out of order (bounds must increase)"


@pytest.mark.parametrize("key", ["listen", "admin_listen"])
def test_a_port_in_use_stops_startup_with_one_line(tmp_path, key):
    """
    A public or admin port that cannot be opened was only logged: the process ran on
    without it, its admin port's /healthz saying 200 with no public listener.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        endpoint = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        path = write_config(tmp_path, {("edge", key): endpoint})
        result = run_twistd(path, tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"edgeproxy: {path}: [edge] {key}: {endpoint!r} cannot listen: Address already in use"]


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="needs systemd-socket-activate")
@pytest.mark.parametrize("workers", [1, 2])
def test_socket_activation_through_a_systemd_endpoint(tmp_path, workers):
    """
    systemd-socket-activate opens the port and passes it as LISTEN_FDS, as edgeproxy.socket
    does; with workers, the supervisor adopts it and every worker accepts on it.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(tmp_path, {("edge", "listen"): "systemd:domain=INET:name=edgeproxy-http"})
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = ["systemd-socket-activate", "-E", "PYTHONPATH", "--fdname=edgeproxy-http", "-l", f"127.0.0.1:{port}", TWISTD, "-n", "--pidfile=", "-l", str(tmp_path / "log"), "edgeproxy", "--config", config, "--workers", str(workers)]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        body = _get_when_listening(f"http://127.0.0.1:{port}/{SAMPLE}.jpg", 60.0)
        assert hashlib.sha1(body).hexdigest() == SAMPLE
        if workers > 1:
            _wait_for(lambda: (tmp_path / "log").read_text().count("EdgeSite starting on") == workers)
            assert all(hashlib.sha1(_get_when_listening(f"http://127.0.0.1:{port}/{SAMPLE}.jpg")).hexdigest() == SAMPLE for _ in range(20))
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for(check, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.1)


def _get_when_listening(url: str, seconds: float = 20.0) -> bytes:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=seconds) as response:
                return response.read()
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
