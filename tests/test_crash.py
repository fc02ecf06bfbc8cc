"""
A real twistd killed with SIGKILL while it spills to disk, restarted, and then
its cache files damaged by hand: every byte it serves must still be the origin's.
"""

import hashlib
import http.client
import json
import os
import threading

import pytest

from edgeproxy import diskentry
from tests.configs import write_config
from tests.twistd import Twistd


@pytest.fixture
def config(tmp_path, originals):
    return write_config(
        tmp_path,
        {("local", "root"): str(tmp_path / "originals"), ("cache", "memory_bytes"): "24KiB", ("cache", "max_object_bytes"): "16KiB"},
    )


def fetch_all(proxy: Twistd, names: list[str]) -> dict[str, str]:
    """Fetch every name; assert each body is exactly the original; return X-Cache by name."""
    results = {}
    for name in names:
        status, headers, body = proxy.get(f"/{name}.jpg")
        assert status == 200
        assert hashlib.sha1(body).hexdigest() == name
        results[name] = headers["X-Cache"]
    return results


def cache_files(tmp_path) -> dict[str, str]:
    """Entry file path by the image name its header holds."""
    files = {}
    for folder, _, names in os.walk(tmp_path / "cache" / "objects"):
        for file in names:
            path = os.path.join(folder, file)
            key, _, _ = diskentry.read_header(open(path, "rb").read(2000))
            files[key.decode().split(".")[0]] = path
    return files


def test_kill_9_while_spilling_then_restart_serves_only_intact_bytes(tmp_path, originals, config):
    proxy = Twistd(config, tmp_path)
    killer = threading.Timer(0.3, proxy.kill)
    killer.start()
    try:
        while proxy.process.poll() is None:
            fetch_all(proxy, originals)
    except (OSError, http.client.HTTPException):
        pass  # the connection died with the process, maybe mid-body
    finally:
        killer.join()
    (tmp_path / "cache" / "tmp" / "leftover.1.tmp").write_bytes(b"half")
    proxy = Twistd(config, tmp_path)
    try:
        tiers = fetch_all(proxy, originals)
        assert "HIT-DISK" in tiers.values()
        assert not (tmp_path / "cache" / "tmp" / "leftover.1.tmp").exists()
    finally:
        proxy.stop()


def test_truncated_flipped_and_swapped_files_are_refetched(tmp_path, originals, config):
    proxy = Twistd(config, tmp_path)
    try:
        fetch_all(proxy, originals)
        fetch_all(proxy, originals)
    finally:
        proxy.stop()
    files = cache_files(tmp_path)
    truncated, flipped, swap_a, swap_b, intact = list(files)[:5]
    os.truncate(files[truncated], os.path.getsize(files[truncated]) // 2)
    data = bytearray(open(files[flipped], "rb").read())
    data[-10] ^= 0x40
    open(files[flipped], "wb").write(bytes(data))
    os.rename(files[swap_a], files[swap_a] + ".x")
    os.rename(files[swap_b], files[swap_a])
    os.rename(files[swap_a] + ".x", files[swap_b])
    proxy = Twistd(config, tmp_path)
    try:
        tiers = fetch_all(proxy, [truncated, flipped, swap_a, swap_b, intact])
        assert tiers == {truncated: "MISS", flipped: "MISS", swap_a: "MISS", swap_b: "MISS", intact: "HIT-DISK"}
    finally:
        proxy.stop()


def test_purge_drops_an_image_from_memory_and_disk(tmp_path, originals, config):
    proxy = Twistd(config, tmp_path)
    try:
        fetch_all(proxy, originals)
        on_disk = next(iter(cache_files(tmp_path)))
        in_memory = originals[-1]
        for name, tier in ((on_disk, "disk"), (in_memory, "memory")):
            status, _, body = proxy.get(f"/purge/{name}", admin=True, method="POST")
            assert status == 200
            assert json.loads(body)["removed"][tier] == [f"{name}.jpg"]
            assert proxy.get(f"/{name}.jpg")[1]["X-Cache"] == "MISS"
        assert proxy.get("/purge/nothex", admin=True, method="POST")[0] == 400
    finally:
        proxy.stop()
