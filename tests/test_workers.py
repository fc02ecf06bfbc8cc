"""
A real `twistd -n edgeproxy --workers 2`: both workers serve, the admin port counts
every request exactly once, the disk tier is shared within its budget, purge reaches
every worker, and no worker outlives its supervisor.
"""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import pyvips
from prometheus_client.parser import text_string_to_metric_families

from edgeproxy import diskentry
from tests.configs import REPO, write_config
from tests.images import name_of, photo
from tests.tlscerts import LoopbackCA
from tests.twistd import TWISTD, Twistd, alive, children_of, command_line, run_twistd

SAMPLE = "a6fc62329945ddc6aa13a641fe0a90d0885d04a4"


def configure(tmp_path, **cache) -> str:
    changes = {("local", "root"): str(tmp_path / "originals")}
    changes.update({("cache", key): value for key, value in cache.items()})
    return write_config(tmp_path, changes)


def fetch(proxy: Twistd, name: str) -> str:
    """One request on a new connection; the body must be the original; returns X-Cache."""
    status, headers, body = proxy.get(f"/{name}.jpg")
    assert status == 200
    assert hashlib.sha1(body).hexdigest() == name
    return headers["X-Cache"]


def fetch_many(proxy: Twistd, names: list[str], threads: int = 8) -> list[str]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda name: fetch(proxy, name), names))


def metrics(proxy: Twistd) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics by (name, sorted labels); the text must parse, each family once."""
    status, _, body = proxy.get("/metrics", admin=True)
    assert status == 200
    families = list(text_string_to_metric_families(body.decode()))
    assert len({f.name for f in families}) == len(families), "a family appears twice"
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def lookups(samples: dict, result: str, tier: str) -> float:
    return samples[("edgeproxy_cache_requests_total", (("result", result), ("tier", tier)))]


def per_worker(samples: dict, result: str | None = None, tier: str = "memory") -> dict[str, float]:
    """Each worker's lookups in `tier` (hits and misses, or only `result`)."""
    counts: dict[str, float] = {}
    for (name, labels), value in samples.items():
        labels = dict(labels)
        if name == "edgeproxy_worker_cache_requests_total" and labels["tier"] == tier and result in (None, labels["result"]):
            counts[labels["worker"]] = counts.get(labels["worker"], 0) + value
    return counts


def disk_files(tmp_path) -> dict[str, int]:
    files = {}
    for folder, _, names in os.walk(tmp_path / "cache" / "objects"):
        for file in names:
            files[os.path.join(folder, file)] = os.path.getsize(os.path.join(folder, file))
    return files


def settle(check, seconds: float = 10.0):
    """Poll `check` until it returns a true value (spills land in the background)."""
    deadline = time.monotonic() + seconds
    while not (result := check()):
        assert time.monotonic() < deadline, "did not settle"
        time.sleep(0.1)
    return result


@pytest.fixture
def two(tmp_path, originals):
    proxy = Twistd(configure(tmp_path), tmp_path, workers=2)
    yield proxy
    assert proxy.stop() == -signal.SIGTERM


def test_both_workers_serve_and_every_request_is_counted_once(two, originals):
    names = originals * 5
    fetch_many(two, names)
    samples = metrics(two)
    memory = lookups(samples, "hit", "memory") + lookups(samples, "miss", "memory")
    assert memory == len(names)
    workers = per_worker(samples)
    assert set(workers) == {"0", "1"} and all(workers.values()), f"one worker served everything: {workers}"
    assert sum(workers.values()) == len(names)
    assert samples[("edgeproxy_workers", ())] == 2
    cpu = {dict(labels)["worker"] for (name, labels) in samples if name == "process_cpu_seconds_total"}
    assert cpu == {"0", "1", "supervisor"}
    # every miss in memory went to disk; each image reached the origin once for both workers (a worker
    # writes what it fetched through to disk, where the other finds it); origin times count those fetches
    origin = sum(v for (name, _), v in samples.items() if name == "edgeproxy_origin_seconds_count")
    assert origin == len(originals) <= lookups(samples, "miss", "disk")  # a miss may wait on the other's fetch
    # one disk lookup per fill: two misses of one image in one worker at once share theirs (80 == 40 + 39 once)
    disk = lookups(samples, "miss", "disk") + lookups(samples, "hit", "disk")
    assert len(originals) <= disk <= lookups(samples, "miss", "memory")


def test_purge_reaches_every_worker(two, originals):
    name = originals[0]
    for _ in range(10):  # until both workers have answered it (each new connection goes to either)
        fetch_many(two, [name] * 8)
        if all(per_worker(metrics(two)).values()):
            break
    before = metrics(two)[("edgeproxy_cache_objects", (("tier", "memory"),))]
    assert before == 2, "each worker holds its own copy"
    status, _, body = two.get(f"/purge/{name}", admin=True, method="POST")
    assert status == 200
    answer = json.loads(body)
    assert answer["removed"]["memory"] == [f"{name}.jpg"] and answer["workers"] == 2
    assert metrics(two)[("edgeproxy_cache_objects", (("tier", "memory"),))] == 0
    assert fetch(two, name) == "MISS"
    assert two.get("/purge/nothex", admin=True, method="POST")[0] == 400


def test_disk_is_shared_within_its_budget_and_counted_once(tmp_path, originals):
    """Tiny memory tiers spill everything; two workers fill concurrently; the files on disk are what the index says."""
    proxy = Twistd(configure(tmp_path, memory_bytes="32KiB", max_object_bytes="16KiB", disk_bytes="96KiB"), tmp_path, workers=2)
    try:
        for _ in range(3):
            fetch_many(proxy, originals)

        def accounted():
            samples = metrics(proxy)
            files = disk_files(tmp_path)
            disk = samples[("edgeproxy_cache_bytes", (("tier", "disk"),))], samples[("edgeproxy_cache_objects", (("tier", "disk"),))]
            return files if disk == (sum(files.values()), len(files)) else None

        files = settle(accounted)
        assert 0 < sum(files.values()) <= 96 * 1024
        assert metrics(proxy)[("edgeproxy_cache_evictions_total", (("tier", "disk"),))] > 0
        for path in files:
            key, length, _ = diskentry.read_header(open(path, "rb").read(2000))
            assert os.path.getsize(path) == diskentry.entry_size(key, length)
    finally:
        proxy.stop()
    assert not os.listdir(tmp_path / "cache" / "tmp")
    on_disk = {diskentry.read_header(open(p, "rb").read(2000))[0].decode()[:40] for p in files}
    proxy = Twistd(configure(tmp_path), tmp_path, workers=2)
    try:
        tiers = dict(zip(sorted(on_disk), fetch_many(proxy, sorted(on_disk))))
        assert set(tiers.values()) == {"HIT-DISK"}, "what either worker spilled is a hit for whichever worker asks"
    finally:
        proxy.stop()


def test_a_spill_is_a_disk_hit_for_the_other_worker(tmp_path, originals):
    """
    Memory tiers too small to keep an image: the worker that fetched it stores it on disk
    at once. The other worker then answers it from that file, never asking the origin.
    """
    proxy = Twistd(configure(tmp_path, memory_bytes="4KiB"), tmp_path, workers=2)
    try:
        name = originals[0]
        assert fetch(proxy, name) == "MISS"
        fetcher = next(w for w, n in per_worker(metrics(proxy), "miss", "disk").items() if n)
        settle(lambda: metrics(proxy)[("edgeproxy_cache_objects", (("tier", "disk"),))] == 1)
        for _ in range(10):
            assert set(fetch_many(proxy, [name] * 8)) == {"HIT-DISK"}
            other = {w: n for w, n in per_worker(metrics(proxy), "hit", "disk").items() if w != fetcher}
            if all(other.values()):
                break
        assert all(other.values()), "the other worker never asked"
        assert per_worker(metrics(proxy), "miss", "disk") == {fetcher: 1, **{w: 0 for w in other}}
    finally:
        proxy.stop()


def render_processes_under(pid: int) -> set[int]:
    """The children of the render fork servers `pid` started."""
    servers = {child for child in children_of(pid) if "forkserver" in command_line(child)}
    return {process for server in servers for process in children_of(server)}


def test_every_workers_renders_go_to_the_supervisors_render_processes(tmp_path, originals):
    """
    One pool of render processes for all workers, the supervisor's: no worker starts one
    of its own. An original that cannot be rendered is a 502 through it too, and a killed
    render process is replaced.
    """
    truncated = photo(800, 600, seed=99)[:-2000]
    (tmp_path / "originals" / f"{name_of(truncated)}.jpg").write_bytes(truncated)
    config = write_config(tmp_path, {("local", "root"): str(tmp_path / "originals"), ("resize", "render_mode"): "processes",
                                     ("resize", "render_workers"): "1"})
    proxy = Twistd(config, tmp_path, workers=2)
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda name: proxy.get(f"/{name}/thumb.jpg"), originals[:16]))
        assert {(status, pyvips.Image.new_from_buffer(body, "").width) for status, _, body in answers} == {(200, 150)}
        assert proxy.get(f"/{name_of(truncated)}/thumb.jpg")[0] == 502
        renderers = render_processes_under(proxy.process.pid)
        assert renderers and not any(children_of(worker) for worker in proxy.worker_pids())
        for pid in renderers:
            os.kill(pid, signal.SIGKILL)
        statuses = [proxy.get(f"/{name}/thumb.jpg")[0] for name in originals[16:20]]
        assert statuses[-1] == 200 and set(statuses) <= {200, 502}
    finally:
        proxy.stop()


def test_sigterm_stops_every_worker(two):
    workers = two.worker_pids()
    assert len(workers) == 2
    assert two.stop() == -signal.SIGTERM
    settle(lambda: not any(alive(pid) for pid in workers))


def test_a_killed_worker_is_replaced(two, originals):
    victim = min(two.worker_pids())
    os.kill(victim, signal.SIGKILL)
    two.wait_for_log("replacing it")
    two.wait_for_log("EdgeSite starting on", 3, seconds=60)
    workers = settle(lambda: two.worker_pids() if len(two.worker_pids()) == 2 else None)
    assert victim not in workers
    fetch_many(two, originals)
    assert metrics(two)[("edgeproxy_workers", ())] == 2


def edit_for_the_next_restart(path: str, tmp_path, edit: str) -> None:
    if edit == "broken":
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("\n[edge2]\nlisten = tcp:9\n")
    else:  # valid, and not what the running workers serve
        write_config(tmp_path, {("local", "root"): "originals", ("edge", "hostnames"): "img9.example.com"})


@pytest.mark.parametrize("edit", ["broken", "valid"])
def test_replacement_workers_run_the_config_the_supervisor_started_with(tmp_path, originals, edit):
    """
    Each replacement read the file again: an edit waiting for the next restart made it
    exit 2 at every respawn, forever (a broken one), or serve another config than the
    rest of the pool (a valid one). Relative paths still resolve from the file's folder.
    """
    path = write_config(tmp_path, {("local", "root"): "originals"})
    proxy = Twistd(path, tmp_path, workers=2)
    try:
        edit_for_the_next_restart(path, tmp_path, edit)
        for pid in proxy.worker_pids():
            os.kill(pid, signal.SIGKILL)
        proxy.wait_for_log("EdgeSite starting on", 4, seconds=60)
        assert settle(lambda: len(proxy.worker_pids()) == 2)
        assert set(fetch_many(proxy, originals)) <= {"MISS", "HIT-DISK"}
        assert proxy.log.read_text().count("ended:") == 2, "only the two workers killed"
    finally:
        proxy.stop()


def test_workers_exit_when_the_supervisor_is_killed(tmp_path, originals):
    proxy = Twistd(configure(tmp_path), tmp_path, workers=2)
    workers = proxy.worker_pids()
    proxy.kill()
    try:
        settle(lambda: not any(alive(pid) for pid in workers), seconds=15)
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_status_shows_every_worker(two, originals):
    fetch_many(two, originals)
    status, _, body = two.get("/status", admin=True)
    page = body.decode()
    assert status == 200
    assert "2 of 2 answering" in page
    assert two.get("/healthz", admin=True)[0] == 200

def test_an_ssl_endpoint_is_refused_with_workers(tmp_path):
    chain, key = LoopbackCA(tmp_path).issue("images", "img0.example.com")
    config = write_config(tmp_path, {("edge", "listen"): f"ssl:0:privateKey={key}:certKey={chain}"})
    result = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "edgeproxy", "--config", config, "--workers", "2"],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().endswith("cannot be shared by 2 workers: use a [tls] section (or --workers 1)")


@pytest.mark.parametrize("key", ["listen", "admin_listen"])
def test_a_port_in_use_stops_the_supervisor_with_one_line(tmp_path, key):
    """
    A public port that could not be opened made the supervisor call reactor.stop() before
    the reactor ran (ReactorNotRunning): it went on serving an admin port for no worker.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        endpoint = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        path = write_config(tmp_path, {("edge", key): endpoint})
        result = run_twistd(path, tmp_path, workers=2)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"edgeproxy: {path}: [edge] {key}: {endpoint!r} cannot listen: Address already in use"]


def test_a_second_edgeproxy_on_the_port_of_a_running_one_stops_with_one_line(tmp_path):
    """
    SO_REUSEPORT is for the supervisor's own workers: a second edgeproxy on the same port
    (a stale copy, a manual test) started without an error and took a share of the first
    one's connections, maybe with another configuration.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"tcp:{probe.getsockname()[1]}:interface=127.0.0.1"
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = Twistd(write_config(tmp_path / "first", {("edge", "listen"): endpoint}), tmp_path / "first", workers=2)
    try:
        path = write_config(tmp_path / "second", {("edge", "listen"): endpoint})
        result = run_twistd(path, tmp_path / "second", workers=2)
    finally:
        first.stop()
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"edgeproxy: {path}: [edge] listen: {endpoint!r} cannot listen: Address already in use"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_tls_listeners_are_shared_by_the_workers(tmp_path, originals):
    ca = LoopbackCA(tmp_path)
    chain, key = ca.issue("images", "img0.example.com")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    changes = {("tls", "listen"): f"tcp:{port}:interface=127.0.0.1", ("tls", "certificates"): f"{chain}:{key}"}
    proxy = Twistd(write_config(tmp_path, changes), tmp_path, workers=2)
    try:
        url = f"https://img0.example.com:{port}/{SAMPLE}.jpg"
        command = ["curl", "-s", "--cacert", str(ca.path), "--resolve", f"img0.example.com:{port}:127.0.0.1", url, url, url, url]
        body = subprocess.run(command, capture_output=True, timeout=30).stdout
        assert body == (REPO / "samples" / f"{SAMPLE}.jpg").read_bytes() * 4
    finally:
        proxy.stop()


class CountingOrigin:
    """A shard server on 127.0.0.1 that answers each image after `delay` seconds and counts requests."""

    def __init__(self, files: dict[str, bytes], delay: float):
        import http.server
        import threading

        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                origin.requests += 1
                time.sleep(delay)
                body = files.get(self.path)
                self.send_response(200 if body else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.requests = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("present, disk_bytes", [(True, "1GiB"), (False, "1GiB"), (True, "1KiB")])
def test_a_cold_image_asked_of_both_workers_at_once_reaches_the_origin_once(tmp_path, originals, present, disk_bytes):
    """Also when the disk cannot take it (1 KiB): the fetching worker hands the bytes over itself."""
    name = originals[0] if present else "0" * 40
    data = (tmp_path / "originals" / f"{originals[0]}.jpg").read_bytes()
    origin = CountingOrigin({f"/{originals[0]}.jpg": data}, delay=0.5)
    (tmp_path / "map.ini").write_text(f"[tokenmap]\nffff = {origin.address}\n")
    changes = {("origins", "chain"): "shards", ("shards", "tokenmap"): str(tmp_path / "map.ini"), ("origins", "hedge_after"): "off"}
    config = write_config(tmp_path, {**changes, ("cache", "disk_bytes"): disk_bytes})
    proxy = Twistd(config, tmp_path, workers=2)
    try:
        with ThreadPoolExecutor(40) as pool:
            answers = list(pool.map(lambda _: proxy.get(f"/{name}.jpg"), range(40)))
        assert {status for status, _, _ in answers} == ({200} if present else {404})
        if present:
            assert {body for _, _, body in answers} == {data}
        assert origin.requests == 1
        misses = per_worker(metrics(proxy), "miss")
        assert len(misses) == 2 and min(misses.values()) > 0  # both workers missed, one of them fetched
    finally:
        proxy.stop()
        origin.stop()
