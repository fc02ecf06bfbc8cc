"""
One worker process of `twistd edgeproxy --workers N`, started by the supervisor as
`twistd ... edgeproxy --worker-of I/N`: it serves the public listeners the supervisor
passed as file descriptors 4 and up (in the order of `[edge] listen`, then `[tls]
listen`), with its own memory tier (1/N of the budget), the disk tier shared through
the supervisor (file descriptor 3, AMP), and no admin port. It exits when the
supervisor dies: PR_SET_PDEATHSIG sends it SIGTERM (it drains), and the channel closing
stops it too.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
from typing import IO

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.protocol import Factory
from twisted.logger import FileLogObserver, Logger, formatEventAsClassicLogText
from twisted.python.failure import Failure

from edgeproxy.admin import HealthResource
from edgeproxy.config import Config
from edgeproxy.drain import DrainService
from edgeproxy.services import SequentialService
from edgeproxy.tap import Edge, build_edge
from edgeproxy.tls import SNIServerContexts, tls_factory
from edgeproxy.workerproto import CHANNEL_FD, FIRST_LISTENER_FD, PromptAMP, Purge, Reload, Snapshot, Wanted

log = Logger()
_PR_SET_PDEATHSIG = 1


def build_worker(config: Config, index: int, count: int) -> MultiService:
    """The single-process tree, minus the admin port, on adopted listeners."""
    from twisted.internet import reactor

    _exit_with_parent()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads come over the channel (Reload); never die of a stray SIGHUP
    top = SequentialService()
    parts = MultiService()
    parts.setServiceParent(top)
    edge = build_edge(config, reactor, parts, workers=count)
    ChannelService(reactor, edge).setServiceParent(top)
    drain = DrainService(HealthResource(), edge.busy, reactor, config.edge.drain_timeout)
    drain.setServiceParent(top)
    fds = iter(range(FIRST_LISTENER_FD, FIRST_LISTENER_FD + 64))
    for description in config.edge.listen:
        _adopt(reactor, next(fds), description, edge.site, drain)
    if config.tls is not None:
        factory = tls_factory(SNIServerContexts(config.tls.certificates), edge.site)
        for description in config.tls.listen:
            _adopt(reactor, next(fds), description, factory, drain)
    return top


def _adopt(reactor: object, fd: int, description: str, factory: Factory, parent: MultiService) -> None:
    """
    A listening socket is accepted on as it is; a bound one (a TCP port the supervisor
    holds with SO_REUSEPORT) gets a listening sibling of this worker's own on the same address.
    """
    with socket.socket(fileno=os.dup(fd)) as held:
        family = held.family
        if not held.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            os.close(fd)
            fd = _listen_beside(held, _backlog(reactor, description))
    StreamServerEndpointService(AdoptedStreamServerEndpoint(reactor, fd, family), factory).setServiceParent(parent)


def _listen_beside(held: socket.socket, backlog: int) -> int:
    sibling = socket.socket(held.family, socket.SOCK_STREAM)
    sibling.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sibling.bind(held.getsockname())
    sibling.listen(backlog)
    return sibling.detach()


def _backlog(reactor: object, description: str) -> int:
    """The endpoint's `backlog=` (Twisted's default 50): a TCP description parses in any process."""
    return getattr(serverFromString(reactor, description), "_backlog", 50)


def _exit_with_parent() -> None:
    """SIGTERM when the supervisor dies, however it dies; and if it died already, go now."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the channel closing still stops the worker
    if os.getppid() != parent or parent == 1:
        raise SystemExit(1)


class WorkerProtocol(PromptAMP):
    """The worker's end of the channel: answers the supervisor's questions."""

    def __init__(self, edge: Edge, lost: object):
        super().__init__()
        self._edge = edge
        self._lost = lost

    @Snapshot.responder
    def snapshot(self, with_metrics: bool) -> dict:
        from prometheus_client import REGISTRY, generate_latest

        text = generate_latest(REGISTRY) if with_metrics else b""
        return {"metrics": text, "status": json.dumps(status_of(self._edge)).encode()}

    @Wanted.responder
    def wanted(self, key: bytes) -> dict:
        self._edge.images.disk.wanted(key)
        return {}

    @Purge.responder
    def purge(self, image_hash: str) -> dict:
        removed = self._edge.images.purge(image_hash)
        return {"removed": json.dumps(removed["memory"]).encode()}

    @Reload.responder
    def reload(self) -> dict:
        self._edge.reload()
        return {}

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self._lost()


def status_of(edge: Edge) -> dict:
    """What the supervisor's /status and hit ratio need of this worker."""
    images = edge.images
    counts, memory, queue = images.counts, images.memory, images.queue
    return {
        "pid": os.getpid(),
        "counts": [counts.memory_hits, counts.memory_misses, counts.disk_hits, counts.disk_misses],
        "memory": [memory.bytes_used, memory.budget, len(memory), memory.evictions],
        "queue": [queue.running, queue.waiting, queue.shed],
        "top_misses": [[key.decode("ascii", "replace"), n] for key, n in images.top_misses.top(64)],
        "backends": [
            [b.name, b.health.up, b.in_flight, b.latency.value if b.latency.measured else None] for b in edge.backends
        ],
    }


class ChannelService(Service):
    """The AMP channel to the supervisor on file descriptor 3, for the life of the worker."""

    def __init__(self, reactor: object, edge: Edge):
        self._reactor = reactor
        self._edge = edge
        self._protocol: WorkerProtocol | None = None

    def startService(self) -> None:
        super().startService()
        self._protocol = WorkerProtocol(self._edge, self._lost)
        self._reactor.adoptStreamConnection(CHANNEL_FD, socket.AF_UNIX, Factory.forProtocol(lambda: self._protocol))
        os.close(CHANNEL_FD)
        self._edge.images.disk.channel = self._protocol.callRemote
        if self._edge.remote_renderer is not None:
            self._edge.remote_renderer.channel = self._protocol.callRemote

    def _lost(self) -> None:
        if self.running:
            log.warn("the supervisor is gone: stopping")
            self._reactor.stop()


def log_observer(out: IO[str] | None = None) -> FileLogObserver:
    """
    For twistd --logger: to stderr, which the supervisor reads into its own log (stdout
    is the supervisor's own stdout, for whatever writes there); no timestamp (the
    supervisor's log adds its own); flushed line by line.
    """
    out = out or sys.stderr

    def line(event: dict) -> str | None:
        text = formatEventAsClassicLogText(event, formatTime=lambda _: "")
        return text.lstrip() if text else None

    return FileLogObserver(_LineBuffered(out), line)


class _LineBuffered:
    def __init__(self, out: IO[str]):
        self._out = out

    def write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    def flush(self) -> None:
        self._out.flush()

