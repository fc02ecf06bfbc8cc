"""
`twistd edgeproxy`: command-line options and the service tree built from a
configuration file. A bad configuration stops here with one line on stderr.
"""

from __future__ import annotations

import sys
from typing import Callable

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.endpoints import serverFromString
from twisted.python import usage
from twisted.python.threadpool import ThreadPool
from twisted.web.server import Site

from edgeproxy.admin import HealthResource, make_admin_root
from edgeproxy.config import Config, ConfigError, S3RegionConfig, load_config
from edgeproxy.disktier import DiskTier
from edgeproxy.httpserver import EdgeHandler, EdgeSite
from edgeproxy.imageservice import ImageService
from edgeproxy.memorytier import MemoryTier
from edgeproxy.origins import IOrigin
from edgeproxy.origins.awscredentials import (
    AnonymousCredentials,
    ChainCredentials,
    ICredentialSource,
    StaticCredentials,
)
from edgeproxy.origins.fallback import FallbackOrigin
from edgeproxy.origins.guard import GuardedBackend, GuardedOrigin
from edgeproxy.origins.hedging import LatencyWindow
from edgeproxy.origins.http import ClientService
from edgeproxy.origins.localdir import LocalDirectoryOrigin
from edgeproxy.origins.s3 import S3RegionOrigin
from edgeproxy.origins.shardpair import Members, ShardPairOrigin
from edgeproxy.reload import SighupService
from edgeproxy.render import (
    IRenderer,
    ProcessRenderer,
    RenderSettings,
    ThreadRenderer,
    configure_libvips,
)
from edgeproxy.renderqueue import RenderQueue
from edgeproxy.shardmaps import ShardMapFiles, ShardMaps

DEFAULT_CONFIG = "conf/edgeproxy.ini"


class Options(usage.Options):
    optParameters = [["config", "c", DEFAULT_CONFIG, "Path of the INI configuration file."]]


class HookService(Service):
    """
    Ties a part's start and stop to the service tree: thread pools, the disk index
    rebuild (in the background: serving does not wait), the render processes.
    """

    def __init__(self, start: Callable[[], object] = lambda: None, stop: Callable[[], object] = lambda: None):
        self._start = start
        self._stop = stop

    def startService(self) -> None:
        super().startService()
        self._start()

    def stopService(self) -> None:
        super().stopService()
        self._stop()


def _pool(name: str, size: int, top: MultiService) -> ThreadPool:
    """A dedicated thread pool (never the reactor's, which DNS uses), running with the tree."""
    pool = ThreadPool(minthreads=1, maxthreads=size, name=name)
    HookService(pool.start, pool.stop).setServiceParent(top)
    return pool


def makeService(options: Options) -> IService:
    try:
        config = load_config(options["config"])
    except ConfigError as error:
        sys.stderr.write(f"edgeproxy: {error}\n")
        raise SystemExit(2) from None
    return build_service(config)


def build_service(config: Config) -> MultiService:
    from twisted.internet import reactor

    top = MultiService()
    site = build_edge(config, reactor, top)
    for description in config.edge.listen:
        StreamServerEndpointService(serverFromString(reactor, description), site).setServiceParent(top)
    admin = Site(make_admin_root(HealthResource(), site.handler.images))
    for description in config.edge.admin_listen:
        StreamServerEndpointService(serverFromString(reactor, description), admin).setServiceParent(top)
    return top


def build_edge(config: Config, reactor: object, top: MultiService) -> EdgeSite:
    """The public HTTP factory and what it needs; its services are added to `top`."""
    disk_pool = _pool("edgeproxy-disk", 4, top)
    origin = FallbackOrigin(_chain(config, reactor, disk_pool, top), reactor, config.origins.deadline)
    cache = config.cache
    disk = DiskTier(cache.disk_path, cache.disk_bytes, reactor, reactor, disk_pool, cache.policy)
    HookService(start=disk.start).setServiceParent(top)
    memory = MemoryTier(cache.memory_bytes, cache.max_object_bytes, cache.policy, lambda key, obj: disk.put(key, obj.body))
    resize = config.resize
    queue = RenderQueue(resize.render_workers, resize.render_queue, resize.tenant_share)
    images = ImageService(memory, disk, origin, reactor, _renderer(config, reactor, top), queue, cache.negative_ttl)
    handler = EdgeHandler(config.url_grammar(), config.edge.hostnames, images)
    return EdgeSite(handler)


def _renderer(config: Config, reactor: object, top: MultiService) -> IRenderer:
    """libvips work in its own threads or processes, one per render worker."""
    resize = config.resize
    settings = RenderSettings(
        quality=resize.quality,
        max_pixels=resize.max_source_pixels,
        max_frames=resize.max_source_frames,
        background=resize.background,
        upscale=resize.upscale,
    )
    if resize.render_mode == "processes":
        renderer = ProcessRenderer(reactor, resize.render_workers, settings)
        HookService(stop=renderer.stop).setServiceParent(top)
        return renderer
    configure_libvips()
    return ThreadRenderer(reactor, _pool("edgeproxy-render", resize.render_workers, top), settings)


def _chain(config: Config, reactor: object, disk_pool: ThreadPool, top: MultiService) -> list[IOrigin]:
    """The origins in the order they are tried; `s3` stands for every region, in order."""
    chain: list[IOrigin] = []
    for kind in config.origins.chain:
        if kind == "s3":
            chain.extend(_s3_origins(config, reactor, top))
        else:
            chain.append(_origin(kind, config, reactor, disk_pool, top))
    return chain


def _origin(kind: str, config: Config, reactor: object, disk_pool: ThreadPool, top: MultiService) -> IOrigin:
    origins = config.origins
    if kind == "local":
        assert config.local is not None
        local = config.local
        return LocalDirectoryOrigin(
            local.root, local.path_template, origins.max_body_bytes, reactor, disk_pool, origins.verify_hash
        )
    assert config.shards is not None
    shards = config.shards
    clients = _client_service(config, reactor, top)
    files = ShardMapFiles(shards.tokenmap_path, shards.previous_path, ShardMaps(shards.tokenmap, shards.previous), reactor, disk_pool)
    SighupService(reactor, files.reload).setServiceParent(top)
    return ShardPairOrigin(
        lambda: files.maps,
        Members(
            clients.client, reactor, origins.timeout, origins.max_body_bytes,
            origins.health, origins.max_in_flight, origins.hedge,
        ),
        reactor,
        shards.path_template,
        origins.hedge,
        origins.verify_hash,
    )


def _client_service(config: Config, reactor: object, top: MultiService) -> ClientService:
    clients = ClientService(reactor, config.origins.connect_timeout, config.origins.connections_per_host)
    clients.setServiceParent(top)
    return clients


def _s3_origins(config: Config, reactor: object, top: MultiService) -> list[IOrigin]:
    """Every region in order, over one client; those using the AWS chain share it and its one thread."""
    clients = _client_service(config, reactor, top)
    chain = None
    if any(region.credentials == "chain" for region in config.s3):
        chain = ChainCredentials(reactor, _pool("edgeproxy-credentials", 1, top))
    origins = config.origins
    return [
        GuardedOrigin(
            S3RegionOrigin(
                region,
                _credentials(region, chain),
                clients.client,
                reactor,
                origins.timeout,
                origins.max_body_bytes,
                origins.verify_hash,
            ),
            GuardedBackend(f"s3:{region.name}", reactor, origins.health, origins.max_in_flight, LatencyWindow(0.95, 0.1)),
        )
        for region in config.s3
    ]


def _credentials(region: S3RegionConfig, chain: ICredentialSource | None) -> ICredentialSource:
    if region.credentials == "static":
        return StaticCredentials(region.access_key, region.secret_key)
    if region.credentials == "anonymous":
        return AnonymousCredentials()
    assert chain is not None
    return chain
