"""SIGTERM to a real `twistd`: /healthz turns 503, new connections are refused, a fill in flight still reaches its client."""

import hashlib
import os
import signal
import socket
import time

import pytest
import pytest_twisted
from twisted.internet import threads

from tests.configs import write_config
from tests.images import name_of, photo
from tests.twistd import Twistd

IMAGE = photo(64, 48, seed=90)
NAME = name_of(IMAGE)
BIG = b"\x89PNG\r\n\x1a\n" + os.urandom(12 << 20)  # sniffs as PNG: an original; more than the kernel holds for a slow reader
BIG_NAME = hashlib.sha1(BIG).hexdigest()


def drain_session(twistd: Twistd) -> dict:
    """Runs in a thread: the slow loopback backend needs the reactor."""
    connection = socket.create_connection(("127.0.0.1", twistd.port), timeout=10)
    connection.sendall(f"GET /{NAME}.jpg HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    time.sleep(0.3)  # the miss is waiting on the 1.5 s origin
    twistd.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    seen = {"healthz": twistd.get("/healthz", admin=True)[0]}
    try:
        socket.create_connection(("127.0.0.1", twistd.port), timeout=2).close()
        seen["new connection"] = "accepted"
    except ConnectionRefusedError:
        seen["new connection"] = "refused"
    response = b""
    while chunk := connection.recv(65536):
        response += chunk
        if len(response) >= len(IMAGE) and b"\r\n\r\n" in response:
            head, body = response.split(b"\r\n\r\n", 1)
            if len(body) == len(IMAGE):
                break
    seen["in flight"] = response.split(b"\r\n", 1)[0].decode()
    seen["body intact"] = response.endswith(IMAGE)
    seen["exit"] = twistd.process.wait(timeout=15)
    return seen


@pytest.mark.parametrize("workers", [1, 2])
@pytest_twisted.ensureDeferred
async def test_sigterm_drains_a_fill_in_flight_then_exits(tmp_path, backends, workers):
    origin = backends({f"/{NAME}.jpg": IMAGE})
    origin.set_mode("slow")
    origin.resource.slow_seconds = 1.5
    (tmp_path / "map.ini").write_text(f"[tokenmap]\nffff = {origin.address}\n")
    config = write_config(tmp_path, {("origins", "chain"): "shards", ("shards", "tokenmap"): str(tmp_path / "map.ini")})
    twistd = await threads.deferToThread(Twistd, config, tmp_path, workers)
    try:
        seen = await threads.deferToThread(drain_session, twistd)
    finally:
        twistd.stop()
    assert seen == {
        "healthz": 503,
        "new connection": "refused",
        "in flight": "HTTP/1.1 200 OK",
        "body intact": True,
        "exit": -signal.SIGTERM,
    }
    assert "draining: 1 fills or responses in flight" in twistd.log.read_text()


def slow_reader_session(twistd: Twistd) -> dict:
    """Runs in a thread: SIGTERM comes during the fill, and the client reads at about 2.5 MB/s."""
    connection = socket.socket()
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    connection.settimeout(15)
    connection.connect(("127.0.0.1", twistd.port))
    connection.sendall(f"GET /{BIG_NAME}.png HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    time.sleep(0.3)  # the miss is waiting on the 1 s origin
    twistd.process.send_signal(signal.SIGTERM)
    response = b""
    while chunk := connection.recv(65536):
        response += chunk
        time.sleep(0.025)
    head, _, body = response.partition(b"\r\n\r\n")
    return {"status": head.split(b"\r\n", 1)[0].decode(), "body intact": body == BIG, "exit": twistd.process.wait(timeout=30)}


@pytest.mark.parametrize("workers", [1, 2])
@pytest_twisted.ensureDeferred
async def test_sigterm_lets_a_slow_reader_have_the_whole_response_within_drain_timeout(tmp_path, backends, workers):
    """
    The drain waited for the fills alone: once the origin had answered, the process
    exited with most of a 12 MB response still unsent, and the client got 3.6 MB of it.
    """
    origin = backends({f"/{BIG_NAME}.png": BIG})
    origin.set_mode("slow")
    origin.resource.slow_seconds = 1.0
    (tmp_path / "map.ini").write_text(f"[tokenmap]\nffff = {origin.address}\n")
    config = write_config(tmp_path, {
        ("origins", "chain"): "shards", ("shards", "tokenmap"): str(tmp_path / "map.ini"),
        ("edge", "drain_timeout"): "20s", ("cache", "max_object_bytes"): "32MiB",
    })
    twistd = await threads.deferToThread(Twistd, config, tmp_path, workers)
    try:
        seen = await threads.deferToThread(slow_reader_session, twistd)
    finally:
        twistd.stop()
    assert seen == {"status": "HTTP/1.1 200 OK", "body intact": True, "exit": -signal.SIGTERM}
