"""/status of a real `twistd` with a dead shard pair in front of the local samples, read as HTML and in Chromium."""

import shutil
import socket
import subprocess

import pytest

from tests.configs import SAMPLES, write_config
from tests.twistd import Twistd

SAMPLES_NAMES = sorted(p.stem for p in SAMPLES.glob("*.jpg"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def dead_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
def proxy(tmp_path):
    primary, secondary = dead_address(), dead_address()
    (tmp_path / "map.ini").write_text(f"[tokenmap]\nffff = {primary} {secondary}\n")
    changes = {
        ("origins", "chain"): "shards local",
        ("origins", "down_after"): "2",
        ("shards", "tokenmap"): str(tmp_path / "map.ini"),
    }
    twistd = Twistd(write_config(tmp_path, changes), tmp_path)
    twistd.dead = (primary, secondary)
    for name in SAMPLES_NAMES:
        assert twistd.get(f"/{name}.jpg")[0] == 200
    assert twistd.get(f"/{SAMPLES_NAMES[0]}.jpg")[1]["X-Cache"] == "HIT-MEMORY"
    yield twistd
    twistd.stop()


def test_status_shows_hit_ratio_tiers_down_backends_and_top_misses(proxy):
    status, headers, body = proxy.get("/status", admin=True)
    page = body.decode()
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<svg id=plot" in page and "<script" not in page
    assert "25.0%</span> hit ratio, last 5 minutes" in page  # 3 misses, then 1 hit
    for address in proxy.dead:
        assert f"<td>{address}</td><td><span class=down>DOWN</span>" in page
    for name in SAMPLES_NAMES:
        assert f"<code>{name}.jpg</code></td><td>1</td>" in page
    assert "<td>memory</td>" in page and "<td>disk</td>" in page


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_status_renders_in_chromium_without_console_errors(proxy, tmp_path):
    url = f"http://127.0.0.1:{proxy.admin_port}/status"
    screenshot = tmp_path / "status.png"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
        "--v=0", "--window-size=1000,900", f"--screenshot={screenshot}", url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert screenshot.exists() and screenshot.stat().st_size > 10_000
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Refused to" in line]
    assert console == []
    dom = subprocess.run(command[:-2] + ["--dump-dom", url], capture_output=True, text=True, timeout=90).stdout
    assert "hit ratio, last 5 minutes" in dom and "DOWN" in dom
