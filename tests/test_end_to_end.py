"""A real `twistd -n edgeproxy` process, as systemd runs it."""

import hashlib
import signal

import pytest

from tests.configs import REPO, write_config
from tests.twistd import Twistd, run_twistd

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


def test_bad_token_map_stops_startup(tmp_path):
    (tmp_path / "map.ini").write_text("[tokenmap]\n0100 = a:1\n0050 = b:1\nffff = c:1\n")
    path = write_config(tmp_path, {("origins", "chain"): "shards", ("shards", "tokenmap"): str(tmp_path / "map.ini")})
    result = run_twistd(path, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"edgeproxy: {path}: [shards] tokenmap: bound 0050 is out of order (bounds must increase)"
