"""
The origin chain built from the configuration: the local directory, the shard pairs
and the S3 regions, in the order `[origins] chain` gives, each backend behind a guard.
"""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.python.threadpool import ThreadPool

from edgeproxy.config import Config, S3RegionConfig
from edgeproxy.origins import IOrigin
from edgeproxy.origins.awscredentials import (
    AnonymousCredentials,
    ChainCredentials,
    ICredentialSource,
    StaticCredentials,
)
from edgeproxy.origins.guard import GuardedBackend, GuardedOrigin
from edgeproxy.origins.hedging import LatencyWindow
from edgeproxy.origins.http import ClientService, trust_bundle
from edgeproxy.origins.localdir import LocalDirectoryOrigin
from edgeproxy.origins.s3 import S3RegionOrigin
from edgeproxy.origins.shardpair import Members, ShardPairOrigin
from edgeproxy.reload import SighupService
from edgeproxy.services import thread_pool
from edgeproxy.shardmaps import ShardMapFiles, ShardMaps


def build_chain(
    config: Config, reactor: object, disk_pool: ThreadPool, top: MultiService, board: list[GuardedBackend]
) -> list[IOrigin]:
    """The origins in the order they are tried; `s3` stands for every region, in order."""
    chain: list[IOrigin] = []
    for kind in config.origins.chain:
        if kind == "s3":
            chain.extend(_s3_origins(config, reactor, top, board))
        else:
            chain.append(_origin(kind, config, reactor, disk_pool, top, board))
    return chain


def _origin(
    kind: str, config: Config, reactor: object, disk_pool: ThreadPool, top: MultiService, board: list[GuardedBackend]
) -> IOrigin:
    origins = config.origins
    if kind == "local":
        assert config.local is not None
        local = config.local
        directory = LocalDirectoryOrigin(
            local.root, local.path_template, origins.max_body_bytes, reactor, disk_pool, origins.verify_hash
        )
        return _guarded(directory, config, reactor, board)
    assert config.shards is not None
    shards = config.shards
    clients = _client_service(config, reactor, top)
    files = ShardMapFiles(shards.tokenmap_path, shards.previous_path, ShardMaps(shards.tokenmap, shards.previous), reactor, disk_pool)
    SighupService(reactor, files.reload).setServiceParent(top)
    return ShardPairOrigin(
        lambda: files.maps,
        Members(
            clients.client, reactor, origins.timeout, origins.max_body_bytes,
            origins.health, origins.max_in_flight, origins.hedge, board, shards.scheme,
        ),
        reactor,
        shards.path_template,
        origins.hedge,
        origins.verify_hash,
    )


def _client_service(config: Config, reactor: object, top: MultiService) -> ClientService:
    origins = config.origins
    trust = trust_bundle(origins.ca_bundle) if origins.ca_bundle else None
    clients = ClientService(reactor, origins.connect_timeout, origins.connections_per_host, trust)
    clients.setServiceParent(top)
    return clients


def _s3_origins(config: Config, reactor: object, top: MultiService, board: list[GuardedBackend]) -> list[IOrigin]:
    """Every region in order, over one client; those using the AWS chain share it and its one thread."""
    clients = _client_service(config, reactor, top)
    chain = None
    if any(region.credentials == "chain" for region in config.s3):
        chain = ChainCredentials(reactor, thread_pool("edgeproxy-credentials", 1, top))
    origins = config.origins
    regions: list[IOrigin] = []
    for region in config.s3:
        origin = S3RegionOrigin(
            region, _credentials(region, chain), clients.client, reactor,
            origins.timeout, origins.max_body_bytes, origins.verify_hash,
        )
        regions.append(_guarded(origin, config, reactor, board))
    return regions


def _guarded(origin: IOrigin, config: Config, reactor: object, board: list[GuardedBackend]) -> IOrigin:
    """An origin that is one backend (a directory, an S3 region): health, cap and metrics as for a shard server."""
    origins = config.origins
    guard = GuardedBackend(origin.name, reactor, origins.health, origins.max_in_flight, LatencyWindow(0.95, 0.1))
    board.append(guard)
    return GuardedOrigin(origin, guard)


def _credentials(region: S3RegionConfig, chain: ICredentialSource | None) -> ICredentialSource:
    if region.credentials == "static":
        return StaticCredentials(region.access_key, region.secret_key)
    if region.credentials == "anonymous":
        return AnonymousCredentials()
    assert chain is not None
    return chain
