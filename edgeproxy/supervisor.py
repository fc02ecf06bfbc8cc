"""
`twistd edgeproxy --workers N` with N > 1: this process opens (or, for `systemd:`
endpoints, adopts) the public listening sockets, never accepts on them, and passes
them to N worker processes (`edgeproxy.worker`), which all accept on the same sockets.
It owns the disk tier's index and budget (workers ask it before they write), serves
the admin port for all workers together, passes SIGHUP on to every worker (as a
`Reload` over its channel), drains every worker on SIGTERM, and replaces a worker that dies.
"""

from __future__ import annotations

import os
import socket
import sys

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from edgeproxy.admin import HealthResource
from edgeproxy.config import Config, ConfigError, with_reloaded_maps
from edgeproxy.diskowner import DiskOwner
from edgeproxy.listeners import cannot_listen, open_port
from edgeproxy.reload import SighupService
from edgeproxy.services import HookService, SequentialService, cancelling, thread_pool
from edgeproxy.remoterender import render_for_worker
from edgeproxy.render import IRenderer
from edgeproxy.tap import available_cpus, render_processes
from edgeproxy.workerproto import (
    CHANNEL_FD, FIRST_LISTENER_FD, Claim, Forget, PromptAMP, Release, Reload, Render, Reserve, Touch, Wanted, Written,
)

log = Logger()
_RESPAWN_DELAY = 1.0
_MAX_RESPAWN_DELAY = 30.0
_STABLE_SECONDS = 10.0
_KILL_GRACE = 5.0
_WORKER_ENV_DROPPED = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def build_supervisor(config: Config, workers: int) -> MultiService:
    """Stopped in reverse: the workers drain first, then the admin port closes, then the disk index."""
    from twisted.internet import reactor

    from edgeproxy.aggregate import build_admin

    top = SequentialService()
    parts = MultiService()
    parts.setServiceParent(top)
    cache = config.cache
    disk_pool = thread_pool("edgeproxy-disk", 2, parts)
    disk = DiskOwner(cache.disk_path, cache.disk_bytes, reactor, reactor, disk_pool, cache.policy)
    HookService(start=disk.start).setServiceParent(parts)
    health = HealthResource()
    renderer = None
    if config.resize.render_mode == "processes":  # one pool for all workers: a render process per CPU at most
        renderer = render_processes(config, reactor, parts, min(available_cpus(), config.resize.render_workers * workers))
    tls = [(f"{config.path}: [tls] listen", d) for d in config.tls.listen] if config.tls is not None else []
    listeners = SharedListeners(reactor, [(f"{config.path}: [edge] listen", d) for d in config.edge.listen] + tls)
    pool = WorkerPool(reactor, config, workers, disk, disk_pool, health, listeners, renderer)
    SighupService(reactor, pool.reload).setServiceParent(parts)
    build_admin(reactor, config, pool, disk, health, parts, top)
    pool.setServiceParent(top)
    return top


class SharedListener(Factory):
    """The supervisor's side of a public listener: open, but never accepting."""

    noisy = False

    def buildProtocol(self, addr: object) -> Protocol | None:
        return None


class SharedListeners:
    """
    The public sockets, opened once as the tree is built (a port that cannot be opened
    stops start-up, edgeproxy.listeners) and handed to every worker (and every replacement).
    A TCP endpoint is a socket bound with SO_REUSEPORT that never listens: it holds the
    port (port 0 gets its number here), and each worker binds its own listening socket
    beside it, so the kernel spreads new connections evenly over the workers. Any other
    endpoint (`systemd:`, `unix:`) is one listening socket every worker accepts on.
    """

    def __init__(self, reactor: object, descriptions: list[tuple[str, str]]):
        """`descriptions`: (where, endpoint) pairs, where naming the key as in `PATH: [edge] listen`."""
        self._ports: list = []
        self._sockets: list[socket.socket | None] = []
        for where, description in descriptions:
            endpoint = serverFromString(reactor, description)
            if isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint)):
                held = _reserve_port(where, description, endpoint)
                self._sockets.append(held)
                log.info("public port {port} reserved (SO_REUSEPORT): the workers listen on it", port=held.getsockname()[1])
            else:
                port = open_port(reactor, where, description, SharedListener())
                port.stopReading()  # the workers accept; this process only keeps the socket open
                port._shouldShutdown = False  # closing our copy must not shut the socket down under the workers
                self._ports.append(port)
                self._sockets.append(None)

    @property
    def fds(self) -> list[int]:
        ports = iter(self._ports)
        return [held.fileno() if held is not None else next(ports).fileno() for held in self._sockets]

    def close(self) -> None:
        """Our copies go; once the workers close theirs, new connections are refused."""
        for port in self._ports:
            port.stopListening()
        for held in self._sockets:
            if held is not None:
                held.close()
        self._ports, self._sockets = [], []


def _reserve_port(where: str, description: str, endpoint: TCP4ServerEndpoint | TCP6ServerEndpoint) -> socket.socket:
    family = socket.AF_INET6 if isinstance(endpoint, TCP6ServerEndpoint) else socket.AF_INET
    address = (endpoint._interface, endpoint._port)  # Twisted keeps these private
    _refuse_if_listened_on(where, description, family, address)
    held = socket.socket(family, socket.SOCK_STREAM)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        held.bind(address)
    except OSError as error:
        held.close()
        raise cannot_listen(where, description, error) from None
    return held


def _refuse_if_listened_on(where: str, description: str, family: socket.AddressFamily, address: tuple[str, int]) -> None:
    """
    SO_REUSEPORT lets any process of the same user bind beside our workers: a second
    edgeproxy on the port started without an error and took a share of the first one's
    connections. A socket with SO_REUSEADDR alone cannot bind where another listens (a
    port still holding connections in TIME_WAIT stays free to it), so it tells.
    """
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
    except OSError as error:
        raise cannot_listen(where, description, error) from None
    finally:
        probe.close()


class WorkerPool(Service):
    def __init__(
        self,
        reactor: object,
        config: Config,
        count: int,
        disk: DiskOwner,
        files: ThreadPool,
        health: HealthResource,
        listeners: SharedListeners,
        renderer: IRenderer | None = None,
    ):
        """
        `files`: where the config is read again on SIGHUP; `renderer`: the render
        processes every worker's renders go to (render_mode = processes).
        """
        self._reactor = reactor
        self._config = config
        self.config_text = config.text  # what every worker starts with, replacements too
        self._reloads: Deferred[None] = succeed(None)  # one after the other, in the order the SIGHUPs came
        self._files = files
        self.count = count
        self._disk = disk
        self._renderer = renderer
        self._health = health
        self._listeners = listeners
        self.workers: dict[int, WorkerProcess] = {}
        self._delays: dict[int, float] = {}
        self._stopped: Deferred | None = None

    def startService(self) -> None:
        super().startService()
        for index in range(self.count):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        if not self.running:
            return
        process = WorkerProcess(index, self, self._reactor.seconds())
        process.start(self._reactor, self._command(index), self._listeners.fds, OwnerProtocol(self._disk, index, self._renderer))
        self.workers[index] = process

    def _command(self, index: int) -> list[str]:
        """The config's text goes on the worker's stdin (WorkerProcess); --config names it and the folder its paths are in."""
        bootstrap = "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"
        return [
            sys.executable, "-c", bootstrap, "-n", "--pidfile=", "--logger", "edgeproxy.worker.log_observer",
            "edgeproxy", "--config", os.path.abspath(self._config.path), "--worker-of", f"{index}/{self.count}",
        ]

    def ended(self, process: WorkerProcess, reason: Failure) -> None:
        if self.workers.get(process.index) is process:
            del self.workers[process.index]
        if self.running:
            delay = self._respawn_delay(process)
            log.warn(
                "worker {i} (pid {pid}) ended: {why}; replacing it in {d:g}s",
                i=process.index, pid=process.pid, why=reason.getErrorMessage(), d=delay,
            )
            self._reactor.callLater(delay, self._spawn, process.index)
        elif self._stopped is not None and not self.workers:
            self._stopped.callback(None)

    def _respawn_delay(self, process: WorkerProcess) -> float:
        """1 s; doubled (up to 30 s) each time a worker dies within 10 s of its start: no crash loop at full speed."""
        if self._reactor.seconds() - process.started >= _STABLE_SECONDS:
            self._delays[process.index] = _RESPAWN_DELAY
        else:
            self._delays[process.index] = min(self._delays.get(process.index, _RESPAWN_DELAY / 2) * 2, _MAX_RESPAWN_DELAY)
        return self._delays[process.index]

    def reload(self) -> None:
        """
        SIGHUP: every worker re-reads its token maps. Over the channel, not by signal: a
        worker still importing has no handler yet and SIGHUP would kill it, while the
        channel keeps the message until the worker is up. A worker started after it is
        given the maps the reload named (not the rest of the file, which may be edited
        for the next restart).
        """
        log.info("SIGHUP: reloading {n} workers", n=len(self.workers))
        if self._config.shards is None:
            return self._tell_workers()
        # the text first, then the workers: one spawned meanwhile is given the new text or told
        self._reloads.addCallback(lambda _: self._read_maps())
        self._reloads.addCallbacks(self._reloaded, lambda failure: failure.trap(ConfigError))  # the workers log why
        self._reloads.addBoth(lambda _: self._tell_workers())

    def _read_maps(self) -> "Deferred[str]":
        return deferToThreadPool(self._reactor, self._files, with_reloaded_maps, self.config_text, self._config.path)

    def _reloaded(self, text: str) -> None:
        self.config_text = text

    def _tell_workers(self) -> None:
        for process in list(self.workers.values()):
            if process.channel is not None:
                process.channel.reload()

    def channels(self) -> list[tuple[int, amp.AMP]]:
        return [(i, p.channel) for i, p in sorted(self.workers.items()) if p.channel is not None]

    def stopService(self) -> Deferred[None]:
        """Drain: /healthz 503, no new connections, every worker finishes its fills, then exits."""
        super().stopService()
        self._health.draining = True
        self._listeners.close()
        log.info("draining {n} workers", n=len(self.workers))
        if not self.workers:
            return succeed(None)
        self._stopped = Deferred()
        for process in list(self.workers.values()):
            process.signal("TERM")
        kill = self._reactor.callLater(self._config.edge.drain_timeout + _KILL_GRACE, self._kill_all)
        return self._stopped.addBoth(cancelling, kill)

    def _kill_all(self) -> None:
        for process in list(self.workers.values()):
            log.warn("worker {i} (pid {pid}) did not stop in time: killed", i=process.index, pid=process.pid)
            process.signal("KILL")


class WorkerProcess(ProcessProtocol):
    """One worker: its log lines (stderr) go to this process's log, its stdout is ours; its channel is AMP."""

    def __init__(self, index: int, pool: WorkerPool, started: float):
        self.index = index
        self._pool = pool
        self.started = started
        self.pid: int | None = None
        self.channel: OwnerProtocol | None = None
        self._partial = {2: b""}

    def start(self, reactor: object, command: list[str], listener_fds: list[int], channel: OwnerProtocol) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        child_fds: dict[int, object] = {0: "w", 1: 1, 2: "r", CHANNEL_FD: theirs.fileno()}
        child_fds.update((FIRST_LISTENER_FD + i, fd) for i, fd in enumerate(listener_fds))
        env = {k: v for k, v in os.environ.items() if k not in _WORKER_ENV_DROPPED}
        try:
            transport = reactor.spawnProcess(self, command[0], command, env=env, childFDs=child_fds)
        finally:
            theirs.close()
        self.pid = transport.pid
        self.channel = channel
        ours.setblocking(False)
        reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: self.channel))
        ours.close()
        log.info("worker {i} started: pid {pid}", i=self.index, pid=self.pid)

    def connectionMade(self) -> None:
        self.transport.write(self._pool.config_text.encode("utf-8"))
        self.transport.closeStdin()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        lines = (self._partial.get(fd, b"") + data).split(b"\n")
        self._partial[fd] = lines.pop()
        for line in lines:
            log.info("worker {i}: {line}", i=self.index, line=line.decode("utf-8", "replace"))

    def signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)
        except Exception:  # noqa: BLE001 — it may have exited in the meantime
            pass

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._partial.items():
            if rest:
                self.childDataReceived(fd, b"\n")
        self._pool.ended(self, reason)


class OwnerProtocol(PromptAMP):
    """The supervisor's end of a worker's channel: the disk index answers its questions, the render processes render for it."""

    def __init__(self, disk: DiskOwner, index: int, renderer: IRenderer | None = None):
        super().__init__()
        self._disk = disk
        self.index = index
        self._renderer = renderer
        self._pending: set[bytes] = set()

    @Reserve.responder
    def reserve(self, key: bytes, size: int) -> Deferred[dict]:
        self._pending.add(key)  # from the moment it is indexed: if the worker dies before the answer, it goes too
        return self._disk.reserve(key, size).addCallback(self._reserved, key)

    def _reserved(self, write: bool, key: bytes) -> dict:
        if not write:
            self._pending.discard(key)
        return {"write": write}

    @Written.responder
    def written(self, key: bytes, ok: bool) -> dict:
        self._pending.discard(key)
        self._disk.reserved_written(key, ok)
        return {}

    @Claim.responder
    def claim(self, key: bytes) -> Deferred[dict]:
        return self._disk.claim(key, self).addCallback(lambda answer: {"outcome": answer[0], "body": answer[1]})

    @Release.responder
    def release(self, key: bytes, outcome: str, body: bytes | None) -> dict:
        self._disk.claims.release(key, self, outcome, body)
        return {}

    def wanted(self, key: bytes) -> None:
        """Another worker waits on this worker's claim of `key`."""
        if self.transport is not None:  # a worker that is gone has had its claims abandoned
            self.callRemote(Wanted, key=key)

    def reload(self) -> None:
        """The supervisor got SIGHUP; a replacement runs the supervisor's config text, with the maps of the last reload."""
        if self.transport is not None:
            self.callRemote(Reload)

    @Render.responder
    def render(self, source: bytes, width: int, height: int, fit: str, fmt: str) -> Deferred[dict]:
        if self._renderer is None:
            return succeed({"unrenderable": "the supervisor has no render processes"})
        return render_for_worker(self._renderer, source, width, height, fit, fmt)

    @Touch.responder
    def touch(self, key: bytes) -> dict:
        self._disk.touch(key)
        return {}

    @Forget.responder
    def forget(self, key: bytes) -> dict:
        self._disk.forget(key)
        return {}

    def connectionLost(self, reason: Failure) -> None:
        """The worker is gone: what it was writing may or may not be on disk, so it goes."""
        super().connectionLost(reason)
        for key in self._pending:
            self._disk.abandon(key)
        self._pending.clear()
        self._disk.claims.abandon(self)

