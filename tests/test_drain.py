"""SIGTERM to a real `twistd`: /healthz turns 503, new connections are refused, a fill in flight still reaches its client."""

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
    assert "draining: 1 fills in flight" in twistd.log.read_text()
