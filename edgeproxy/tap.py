"""
`twistd edgeproxy`: command-line options and the service tree built from a
configuration file. A bad configuration stops here with one line on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from edgeproxy.reactor import install_unless_chosen

install_unless_chosen()  # before any import below pulls in the default reactor

from twisted.application.service import IService, MultiService
from twisted.python import usage
from twisted.web.server import Site

from edgeproxy import metrics
from edgeproxy.admin import HealthResource, make_admin_root
from edgeproxy.chain import build_chain
from edgeproxy.config import Config, ConfigError, load_config
from edgeproxy.disktier import DiskTier
from edgeproxy.drain import DrainService
from edgeproxy.arenas import limit_malloc_arenas
from edgeproxy.heap import freeze_startup_heap
from edgeproxy.accesslog import AccessLog, Sampler, open_access_log
from edgeproxy.http1 import EdgeSite
from edgeproxy.httpserver import EdgeHandler
from edgeproxy.imageservice import AbsentImages, ImageService
from edgeproxy.listeners import listen
from edgeproxy.memorytier import MemoryTier
from edgeproxy.metrics import TrafficHistory
from edgeproxy.origins.fallback import FallbackOrigin
from edgeproxy.origins.guard import GuardedBackend
from edgeproxy.reload import SighupService
from edgeproxy.render import (
    IRenderer,
    ProcessRenderer,
    RenderSettings,
    ThreadRenderer,
    configure_libvips,
)
from edgeproxy.remoterender import SupervisorRenderer
from edgeproxy.renderqueue import RenderQueue
from edgeproxy.shareddisk import SharedDisk
from edgeproxy.services import HookService, SequentialService, thread_pool
from edgeproxy.signing import SignaturePolicy
from edgeproxy.statuspage import StatusResource
from edgeproxy.tls import SNIServerContexts, tls_factory

DEFAULT_CONFIG = "conf/edgeproxy.ini"


class Options(usage.Options):
    optParameters = [
        ["config", "c", DEFAULT_CONFIG, "Path of the INI configuration file."],
        ["workers", "w", None, "Worker processes sharing the listeners (default: [edge] workers, else the CPU count).", int],
        ["worker-of", None, None, "Internal: run as worker I of N (I/N) under a supervisor, which sends the config on stdin."],
    ]

    def postOptions(self) -> None:
        if self["workers"] is not None and self["workers"] < 1:
            raise usage.UsageError("--workers must be 1 or more")


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    limit_malloc_arenas(1)  # before any thread pool starts
    service = _build_service(options)
    reactor.callWhenRunning(freeze_startup_heap)
    return service


def _build_service(options: Options) -> IService:
    """A wrong config, or a port it names that cannot be opened, stops here: one line, exit status 2."""
    try:
        return _build(options)
    except ConfigError as error:
        sys.stderr.write(f"edgeproxy: {error}\n")
        raise SystemExit(2) from None


def _build(options: Options) -> IService:
    # a worker runs the config its supervisor started with: the file may have been edited since
    text = sys.stdin.buffer.read().decode("utf-8") if options["worker-of"] else None
    config = load_config(options["config"], inherited_listeners=bool(options["worker-of"]), text=text)
    if options["worker-of"]:
        from edgeproxy.worker import build_worker

        index, count = (int(part) for part in options["worker-of"].split("/"))
        return build_worker(config, index, count)
    workers = worker_count(options["workers"], config.edge.workers)
    if workers == 1:
        return build_service(config)
    tls_endpoints = [d for d in config.edge.listen if d.split(":", 1)[0] in ("ssl", "tls")]
    if tls_endpoints:
        sys.stderr.write(
            f"edgeproxy: {config.path}: [edge] listen: {tls_endpoints[0]!r} cannot be shared by {workers} workers: "
            "use a [tls] section (or --workers 1)\n"
        )
        raise SystemExit(2)
    from edgeproxy.supervisor import build_supervisor

    return build_supervisor(config, workers)


def worker_count(option: int | None, configured: int) -> int:
    """--workers wins over [edge] workers; `auto` (0) and neither mean one per CPU."""
    return option or configured or available_cpus()


def available_cpus() -> int:
    """The CPUs this process may run on (a cgroup or taskset may allow fewer than the host has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def build_service(config: Config) -> MultiService:
    """
    Started in order and stopped in reverse, one after another: the public listeners
    drain first, then the admin port closes, then the parts in-flight requests needed.
    Every port is open when this returns (edgeproxy.listeners).
    """
    from twisted.internet import reactor

    top = SequentialService()
    parts = MultiService()
    parts.setServiceParent(top)
    edge = build_edge(config, reactor, parts)
    SighupService(reactor, edge.reload).setServiceParent(parts)
    health = HealthResource()
    status = StatusResource(edge.images, edge.history, lambda: edge.backends)
    listen(reactor, f"{config.path}: [edge] admin_listen", config.edge.admin_listen, Site(make_admin_root(health, edge.images, status)), top)
    drain = DrainService(health, edge.busy, reactor, config.edge.drain_timeout)
    drain.setServiceParent(top)
    listen(reactor, f"{config.path}: [edge] listen", config.edge.listen, edge.site, drain)
    if config.tls is not None:
        factory = tls_factory(SNIServerContexts(config.tls.certificates), edge.site)
        listen(reactor, f"{config.path}: [tls] listen", config.tls.listen, factory, drain)
    return top


@dataclass(frozen=True)
class Edge:
    """The public HTTP factory, what the admin port shows of it, and what SIGHUP does to it."""

    site: EdgeSite
    images: ImageService
    history: TrafficHistory
    backends: list[GuardedBackend]
    reload: Callable[[], object]
    remote_renderer: SupervisorRenderer | None = None  # a worker's, given the channel once it is up

    def busy(self) -> int:
        """What a drain waits for: fills in flight, and HTTP/1.1 responses still being sent."""
        return len(self.images.flights) + self.site.sending()


def build_edge(config: Config, reactor: object, top: MultiService, workers: int = 1) -> Edge:
    """
    The public HTTP factory and what it needs; its services are added to `top`. One of
    `workers` processes gets 1/workers of the memory budget and shares the disk tier.
    """
    disk_pool = thread_pool("edgeproxy-disk", 4, top)
    backends: list[GuardedBackend] = []
    cache = config.cache
    absent = AbsentImages(cache.negative_ttl, reactor)
    chain, reload = build_chain(config, reactor, disk_pool, top, backends, absent.forget_all)
    origin = FallbackOrigin(chain, reactor, config.origins.deadline)
    disk: DiskTier | SharedDisk
    if workers == 1:
        disk = DiskTier(cache.disk_path, cache.disk_bytes, reactor, reactor, disk_pool, cache.policy)
        HookService(start=disk.start).setServiceParent(top)
    else:
        disk = SharedDisk(cache.disk_path, cache.disk_bytes, reactor, reactor, disk_pool, config.origins.deadline + 5)
    memory_bytes = cache.memory_bytes // workers
    memory = MemoryTier(memory_bytes, cache.max_object_bytes, cache.policy, lambda key, obj: disk.put(key, obj.body))
    resize = config.resize
    queue = RenderQueue(resize.render_workers, resize.render_queue, resize.tenant_share)
    remote = SupervisorRenderer() if workers > 1 and resize.render_mode == "processes" else None
    images = ImageService(memory, disk, origin, reactor, remote or _renderer(config, reactor, top), queue, absent)
    history = TrafficHistory(images, reactor)
    HookService(start=lambda: history.loop.start(history.step), stop=history.loop.stop).setServiceParent(top)
    signatures = SignaturePolicy(config.security.sign, config.security.keys)
    handler = EdgeHandler(config.url_grammar(), config.edge.hostnames, images, signatures, _access_log(config, reactor, top), reactor)
    site = EdgeSite(handler, reactor, config.edge.limits)
    metrics.track(images, history, site)
    return Edge(site, images, history, backends, reload, remote)


def _access_log(config: Config, reactor: object, top: MultiService) -> AccessLog | None:
    settings = config.log
    if settings.access_log is None:
        return None
    sampler = Sampler(reactor, settings.success_rate, settings.errors_per_minute)
    access_log = AccessLog(sampler, open_access_log(settings.access_log), reactor, reactor)
    access_log.setServiceParent(top)
    return access_log


def _renderer(config: Config, reactor: object, top: MultiService) -> IRenderer:
    """libvips work in its own threads or processes, one per render worker."""
    resize = config.resize
    if resize.render_mode == "processes":
        return render_processes(config, reactor, top, resize.render_workers)
    configure_libvips()
    return ThreadRenderer(reactor, thread_pool("edgeproxy-render", resize.render_workers, top), render_settings(config))


def render_processes(config: Config, reactor: object, top: MultiService, count: int) -> ProcessRenderer:
    """Up to `count` render processes (started as renders come), stopped with `top`."""
    renderer = ProcessRenderer(reactor, count, render_settings(config))
    HookService(stop=renderer.stop).setServiceParent(top)
    return renderer


def render_settings(config: Config) -> RenderSettings:
    resize = config.resize
    return RenderSettings(
        quality=resize.quality,
        max_pixels=resize.max_source_pixels,
        max_frames=resize.max_source_frames,
        background=resize.background,
        upscale=resize.upscale,
        priority=resize.render_priority,
        max_dimension=resize.max_dimension,
    )
