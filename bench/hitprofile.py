"""
The hit path's own cost, without a load generator: N keep-alive GETs for one cached
image pushed through one connection of the real EdgeSite (built from the bundled
config) on an in-memory transport whose responses go to a socket pair, as on a plain
TCP connection. Prints microseconds per hit, and with --profile the functions that take
the time (cProfile, sorted by own time).

    python bench/hitprofile.py [--requests 20000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import socket
import sys
import tempfile
import time
from pathlib import Path

from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater, react
from twisted.internet.testing import StringTransport

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from edgeproxy.config import load_config  # noqa: E402
from edgeproxy.tap import build_edge  # noqa: E402

SAMPLE = "a6fc62329945ddc6aa13a641fe0a90d0885d04a4"
REQUEST = f"GET /{SAMPLE}.jpg HTTP/1.1\r\nHost: img0.example.com\r\nUser-Agent: bench\r\nAccept: image/*\r\n\r\n".encode()


class SocketTransport(StringTransport):
    """
    An in-memory transport whose handle is one end of a socket pair, so a response takes
    the path it takes on a plain TCP connection: one sendmsg() to the socket. The other
    end is drained every DRAIN_EVERY requests.
    """

    def __init__(self) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.ours, self.peer = socket.socketpair()
        for end, option in ((self.ours, socket.SO_SNDBUF), (self.peer, socket.SO_RCVBUF)):
            end.setsockopt(socket.SOL_SOCKET, option, 8 << 20)
        self.peer.setblocking(False)

    def getHandle(self) -> socket.socket:
        return self.ours

    def drain(self) -> bytes:
        received = b""
        while True:
            try:
                received += self.peer.recv(1 << 20)
            except BlockingIOError:
                return received

    def close(self) -> None:
        self.ours.close()
        self.peer.close()


DRAIN_EVERY = 8


def connection(site):
    transport = SocketTransport()
    protocol = site.buildProtocol(transport.getPeer())
    protocol.makeConnection(transport)
    return protocol, transport


def run(site, count: int) -> float:
    """CPU time of this process per hit (the drain's recv included): other processes on a shared machine barely move it."""
    protocol, transport = connection(site)
    started = time.process_time()
    for index in range(count):
        protocol.dataReceived(REQUEST)
        if index % DRAIN_EVERY == 0:
            transport.drain()
    elapsed = time.process_time() - started
    protocol.connectionLost(None)
    transport.close()
    return elapsed / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        text = (REPO / "conf" / "edgeproxy.ini").read_text().replace("disk_path = ../cache", f"disk_path = {tmp}")
        text = text.replace("access_log = -", f"access_log = {tmp}/access.log")
        (Path(tmp) / "edgeproxy.ini").write_text(text.replace("root = ../samples", f"root = {REPO / 'samples'}"))
        config = load_config(str(Path(tmp) / "edgeproxy.ini"))
        react(lambda reactor: ensureDeferred(measure(reactor, config, args)))


async def measure(reactor, config, args: argparse.Namespace) -> None:
    """Inside the reactor, so that the services (and their thread pools) stop before it does."""
    services = MultiService()
    site = build_edge(config, reactor, services).site
    services.startService()
    try:
        protocol, transport = connection(site)
        protocol.dataReceived(REQUEST)  # the miss: a local-directory read in the disk pool
        await deferLater(reactor, 0.5)  # let the fill land
        transport.close()
        assert b"X-Cache: HIT-MEMORY" in _one(site), "the image did not get cached"
        warm = run(site, 2000)
        per_hit = run(site, args.requests)
        print(f"hit path: {per_hit:.1f} us of CPU per request over {args.requests} keep-alive GETs (warm-up {warm:.1f} us)")
        observing = observability_cost(site.handler, args.requests)
        print(f"of which metrics and the sampled access log: {observing:.2f} us ({observing / per_hit:.1%})")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(run, site, args.requests)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(18)
    finally:
        await services.stopService()


def observability_cost(handler, count: int) -> float:
    """CPU per hit of what a hit adds to /metrics and asks the access log's sampler, as the hit path calls them."""
    record, keep = handler.stats.record, handler._access_log.sampler.keep
    started = time.process_time()
    for _ in range(count):
        record(200, b"HIT-MEMORY", 15019, 0.00002)
        keep(200)
    return (time.process_time() - started) / count * 1e6


def _one(site) -> bytes:
    protocol, transport = connection(site)
    protocol.dataReceived(REQUEST)
    answer = transport.drain()
    transport.close()
    return answer


if __name__ == "__main__":
    main()
