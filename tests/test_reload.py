"""SIGHUP reloads the token maps of a real `twistd` without dropping a connection; a broken map is refused; no SIGHUP kills the proxy or a worker."""

import http.client
import os
import signal
import time

import pytest
import pytest_twisted
from twisted.internet import threads

from edgeproxy.reload import SighupService
from tests.configs import write_config
from tests.images import name_of, photo
from tests.twistd import Twistd

IMAGES = [photo(64, 48, seed=70 + i) for i in range(3)]
FILES = {f"/{name_of(i)}.jpg": i for i in IMAGES}
RESHARDED = [photo(64, 48, seed=80 + i) for i in range(4)]
SAMPLE = "a6fc62329945ddc6aa13a641fe0a90d0885d04a4"  # in samples/, the local origin of the base config


def wait_for_log(twistd: Twistd, text: str, count: int = 1, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while twistd.log.read_text().count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} never logged"
        time.sleep(0.02)


def get(connection: http.client.HTTPConnection, image: bytes) -> tuple[int, bytes, tuple]:
    """Status, body, and the client's own address: the same address means the same connection."""
    connection.request("GET", f"/{name_of(image)}.jpg", headers={"Host": "localhost"})
    response = connection.getresponse()
    return response.status, response.read(), connection.sock.getsockname()


def reload_session(twistd: Twistd, map_path, new_map: str, broken_map: str, workers: int) -> list:
    """Runs in a thread (the loopback backends need the reactor): one keep-alive connection throughout."""
    connection = http.client.HTTPConnection("127.0.0.1", twistd.port, timeout=10)
    seen = [get(connection, IMAGES[0])]
    map_path.write_text(new_map)
    os.kill(twistd.process.pid, signal.SIGHUP)
    wait_for_log(twistd, "token map reloaded", workers)  # the supervisor forwards it to every worker
    seen.append(get(connection, IMAGES[1]))
    map_path.write_text(broken_map)
    os.kill(twistd.process.pid, signal.SIGHUP)
    wait_for_log(twistd, "token map reload refused", workers)
    seen.append(get(connection, IMAGES[2]))
    connection.close()
    return seen


@pytest.mark.parametrize("workers", [1, 2])
@pytest_twisted.ensureDeferred
async def test_sighup_swaps_the_map_and_a_broken_map_leaves_the_old_one(tmp_path, backends, workers):
    old, new = backends(FILES), backends(FILES)
    map_path = tmp_path / "map.ini"
    map_path.write_text(f"[tokenmap]\nffff = {old.address}\n")
    config = write_config(tmp_path, {("origins", "chain"): "shards", ("shards", "tokenmap"): str(map_path)})
    twistd = await threads.deferToThread(Twistd, config, tmp_path, workers)
    try:
        broken = f"[tokenmap]\n8000 = {old.address}\n"
        seen = await threads.deferToThread(reload_session, twistd, map_path, f"[tokenmap]\nffff = {new.address}\n", broken, workers)
        assert [(status, body) for status, body, _ in seen] == [(200, image) for image in IMAGES]
        assert len({address for _, _, address in seen}) == 1, "one connection throughout"
        assert (old.hits, new.hits) == (1, 2), "the new map took over, and stayed over the broken one"
        log = twistd.log.read_text()
        assert "map.ini: the last bound is 8000, it must be ffff" in log
        assert twistd.process.poll() is None
    finally:
        assert twistd.stop() == -signal.SIGTERM


def shards(current: str, previous: str | None = None) -> dict:
    return {("origins", "chain"): "shards", ("shards", "tokenmap"): current, ("shards", "previous"): previous}


def edit_and_reload(twistd: Twistd, config_dir, changes: dict, outcome: str, workers: int) -> None:
    """Rewrite edgeproxy.ini in place and send SIGHUP, as `systemctl reload` would; wait for every worker's `outcome`."""
    logged = twistd.log.read_text().count(outcome)
    write_config(config_dir, changes)
    os.kill(twistd.process.pid, signal.SIGHUP)
    wait_for_log(twistd, outcome, logged + workers)


@pytest.mark.parametrize("workers", [1, 2])
@pytest_twisted.ensureDeferred
async def test_the_readme_resharding_procedure_puts_the_edited_maps_in_force(tmp_path, backends, workers):
    """
    README (Resharding): the new map as [shards] tokenmap, the old one as previous, then
    reload. The new pair serves what it holds, what it lacks is asked of the old pair,
    and a config naming a missing map is refused with both maps staying in force.
    """
    old = backends({f"/{name_of(image)}.jpg": image for image in RESHARDED[:2]})  # the second not copied yet
    new = backends({f"/{name_of(image)}.jpg": image for image in RESHARDED[2:]})  # uploaded since the split
    (tmp_path / "tokenmap-32.ini").write_text(f"[tokenmap]\nffff = {old.address}\n")
    (tmp_path / "tokenmap-64.ini").write_text(f"[tokenmap]\nffff = {new.address}\n")
    twistd = await threads.deferToThread(Twistd, write_config(tmp_path, shards("tokenmap-32.ini")), tmp_path, workers)
    connection = http.client.HTTPConnection("127.0.0.1", twistd.port, timeout=10)  # one worker throughout
    try:
        assert (await threads.deferToThread(get, connection, RESHARDED[0]))[:2] == (200, RESHARDED[0])
        changes = shards("tokenmap-64.ini", "tokenmap-32.ini")
        await threads.deferToThread(edit_and_reload, twistd, tmp_path, changes, "token map reloaded", workers)
        assert (await threads.deferToThread(get, connection, RESHARDED[2]))[:2] == (200, RESHARDED[2])
        assert (await threads.deferToThread(get, connection, RESHARDED[1]))[:2] == (200, RESHARDED[1])
        assert (old.hits, new.hits) == (2, 2), "the new pair asked first, the old one for what the new one lacks"
        changes = shards("tokenmap-64.ini", "missing.ini")
        await threads.deferToThread(edit_and_reload, twistd, tmp_path, changes, "token map reload refused", workers)
        assert (await threads.deferToThread(get, connection, RESHARDED[3]))[:2] == (200, RESHARDED[3])
        assert new.hits == 3
        assert "[shards] previous: " in twistd.log.read_text() and "missing.ini: cannot read" in twistd.log.read_text()
    finally:
        connection.close()
        assert twistd.stop() == -signal.SIGTERM


def replace_both_workers(twistd: Twistd) -> None:
    for pid in twistd.worker_pids():
        os.kill(pid, signal.SIGKILL)
    twistd.wait_for_log("EdgeSite starting on", 4, seconds=60)


@pytest_twisted.ensureDeferred
async def test_a_worker_started_after_a_reload_serves_the_maps_the_reload_put_in_force(tmp_path, backends):
    """
    A replacement worker starts with the config the supervisor started with (an edit
    for the next restart, here [edge] hostnames, does not reach it), but with the maps
    the last reload named: it asked the map of before the reload, which answered 404.
    """
    image = RESHARDED[0]
    old, new = backends({}), backends({f"/{name_of(image)}.jpg": image})
    (tmp_path / "tokenmap-32.ini").write_text(f"[tokenmap]\nffff = {old.address}\n")
    (tmp_path / "tokenmap-64.ini").write_text(f"[tokenmap]\nffff = {new.address}\n")
    twistd = await threads.deferToThread(Twistd, write_config(tmp_path, shards("tokenmap-32.ini")), tmp_path, 2)
    try:
        changes = {**shards("tokenmap-64.ini"), ("edge", "hostnames"): "img9.example.com"}
        await threads.deferToThread(edit_and_reload, twistd, tmp_path, changes, "token map reloaded", 2)
        await threads.deferToThread(replace_both_workers, twistd)
        connection = http.client.HTTPConnection("127.0.0.1", twistd.port, timeout=10)
        try:
            assert (await threads.deferToThread(get, connection, image))[:2] == (200, image)
        finally:
            connection.close()
        assert old.hits == 0
    finally:
        assert twistd.stop() == -signal.SIGTERM


def reload_during_a_fetch(
    twistd: Twistd, config_dir, changes: dict, workers: int, connection: http.client.HTTPConnection, image: bytes, asked
) -> int:
    """Ask for `image`, reload once the `asked` backend has the request, then read the answer."""
    hits = asked.hits
    connection.request("GET", f"/{name_of(image)}.jpg", headers={"Host": "localhost"})
    deadline = time.monotonic() + 10
    while asked.hits == hits:
        assert time.monotonic() < deadline, "the request never reached the backend"
        time.sleep(0.02)
    edit_and_reload(twistd, config_dir, changes, "token map reloaded", workers)
    response = connection.getresponse()
    response.read()
    return response.status


@pytest.mark.parametrize("workers", [1, 2])
@pytest_twisted.ensureDeferred
async def test_a_404_of_the_old_map_is_not_remembered_once_the_new_map_is_in_force(tmp_path, backends, workers):
    """
    The new pair's images are served as soon as the reload logs: a 404 the old map gave
    before (negative-cached for 60 s) is forgotten, and one still on its way from the old
    pair at the swap is answered but not remembered.
    """
    before, during = RESHARDED[:2]
    old, new = backends({}), backends({f"/{name_of(image)}.jpg": image for image in (before, during)})
    (tmp_path / "tokenmap-32.ini").write_text(f"[tokenmap]\nffff = {old.address}\n")
    (tmp_path / "tokenmap-64.ini").write_text(f"[tokenmap]\nffff = {new.address}\n")
    twistd = await threads.deferToThread(Twistd, write_config(tmp_path, shards("tokenmap-32.ini")), tmp_path, workers)
    connection = http.client.HTTPConnection("127.0.0.1", twistd.port, timeout=10)  # one worker throughout
    try:
        assert (await threads.deferToThread(get, connection, before))[0] == 404
        old.set_mode("slow")  # its 404 comes 2 s later, well after the reload
        old.resource.slow_seconds = 2.0
        changes = shards("tokenmap-64.ini", "tokenmap-32.ini")
        in_the_air = await threads.deferToThread(reload_during_a_fetch, twistd, tmp_path, changes, workers, connection, during, old)
        assert in_the_air == 404
        assert (await threads.deferToThread(get, connection, before))[:2] == (200, before)
        assert (await threads.deferToThread(get, connection, during))[:2] == (200, during)
    finally:
        connection.close()
        assert twistd.stop() == -signal.SIGTERM


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_without_shards_in_the_chain_does_not_stop_the_proxy(tmp_path, workers):
    """
    `systemctl reload` on the bundled config (`chain = local`) killed a single-process
    proxy: only a chain with shards handled SIGHUP. Now every chain does, and one without
    shards logs that it has nothing to reload.
    """
    twistd = Twistd(write_config(tmp_path, {("origins", "chain"): "local"}), tmp_path, workers)
    try:
        os.kill(twistd.process.pid, signal.SIGHUP)
        twistd.wait_for_log("SIGHUP: nothing to reload", workers)  # from every worker; at once an error if twistd exited
        assert twistd.get(f"/{SAMPLE}.jpg")[0] == 200
    finally:
        assert twistd.stop() == -signal.SIGTERM


def test_a_sighup_once_the_process_is_stopping_is_ignored():
    """Past its stop, the reload handler leaves SIGHUP ignored, not at its default, which would kill a process still draining."""
    from twisted.internet import reactor

    before = signal.getsignal(signal.SIGHUP)
    service = SighupService(reactor, lambda: None)
    try:
        service.startService()
        service.stopService()
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


def test_sighup_while_workers_start_reaches_them_and_kills_none(tmp_path):
    """
    `systemctl reload` right after `systemctl start` (or while a dead worker is being
    replaced) killed the workers still importing: SIGHUP was forwarded to them as a
    signal before they had a handler. It now reaches each as a message, read once it is up.
    """
    config = write_config(tmp_path, {("origins", "chain"): "local shards"})
    twistd = Twistd(config, tmp_path, workers=2, serving=False)
    try:
        twistd.wait_for_log("worker 1 started: pid")  # both spawned, neither has imported edgeproxy yet
        os.kill(twistd.process.pid, signal.SIGHUP)
        twistd.wait_for_log("EdgeSite starting on", 2, seconds=60)
        assert [line.split("] ", 1)[1] for line in twistd.log.read_text().splitlines() if "ended:" in line] == []
        twistd.wait_for_log("token map reloaded", 2)
    finally:
        assert twistd.stop() == -signal.SIGTERM
