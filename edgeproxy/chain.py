"""
The origin chain built from the configuration: the local directory, the shard pairs
and the S3 regions, in the order `[origins] chain` gives, each backend behind a guard.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.application.service import MultiService
from twisted.python.threadpool import ThreadPool

from edgeproxy.config import Config
from edgeproxy.origins import IOrigin
from edgeproxy.origins.guard import BackendOrigin, GuardedBackend, GuardedOrigin
from edgeproxy.origins.hedging import LatencyWindow
from edgeproxy.origins.http import ClientService, trust_bundle
from edgeproxy.origins.localdir import LocalDirectoryOrigin
from edgeproxy.origins.shardpair import Members, ShardPairOrigin
from edgeproxy.reload import nothing_to_reload
from edgeproxy.shardmaps import ShardMapFiles, ShardMaps


def build_chain(
    config: Config,
    reactor: object,
    disk_pool: ThreadPool,
    top: MultiService,
    board: list[GuardedBackend],
    maps_swapped: Callable[[], object],
) -> tuple[list[IOrigin], Callable[[], object]]:
    """
    The origins in the order they are tried; `s3` stands for every region, in order. And
    what SIGHUP does: the shards' token maps are all that can change live, so a chain
    without shards has nothing to reload (and says so). `maps_swapped` is called when a
    reload puts new token maps in force.
    """
    chain: list[IOrigin] = []
    reload: Callable[[], object] = nothing_to_reload
    for kind in config.origins.chain:
        if kind == "s3":
            from edgeproxy.s3chain import s3_origins  # botocore costs each process ~25 MB: only with S3

            chain.extend(s3_origins(config, reactor, top, board))
        elif kind == "local":
            chain.append(_local(config, reactor, disk_pool, board))
        else:
            files = _shard_map_files(config, reactor, disk_pool, maps_swapped)
            chain.append(_shards(config, reactor, top, board, files))
            reload = files.reload
    return chain, reload


def _local(config: Config, reactor: object, disk_pool: ThreadPool, board: list[GuardedBackend]) -> IOrigin:
    assert config.local is not None
    local, origins = config.local, config.origins
    directory = LocalDirectoryOrigin(local.root, local.path_template, origins.max_body_bytes, reactor, disk_pool, origins.verify_hash)
    return guarded(directory, config, reactor, board)


def _shard_map_files(config: Config, reactor: object, disk_pool: ThreadPool, maps_swapped: Callable[[], object]) -> ShardMapFiles:
    assert config.shards is not None
    # absolute: the maps' paths are relative to the config file, and twistd --rundir changes directory after start-up
    maps = ShardMaps(config.shards.tokenmap, config.shards.previous)
    return ShardMapFiles(os.path.abspath(config.path), maps, reactor, disk_pool, maps_swapped)


def _shards(config: Config, reactor: object, top: MultiService, board: list[GuardedBackend], files: ShardMapFiles) -> IOrigin:
    assert config.shards is not None
    origins = config.origins
    shards = config.shards
    clients = client_service(config, reactor, top)
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
        panic=origins.chain[-1] == "shards",
    )


def client_service(config: Config, reactor: object, top: MultiService) -> ClientService:
    origins = config.origins
    trust = trust_bundle(origins.ca_bundle) if origins.ca_bundle else None
    clients = ClientService(reactor, origins.connect_timeout, origins.connections_per_host, trust)
    clients.setServiceParent(top)
    return clients


def guarded(origin: BackendOrigin, config: Config, reactor: object, board: list[GuardedBackend]) -> IOrigin:
    """An origin that is one backend (a directory, an S3 region): health, cap and metrics as for a shard server."""
    origins = config.origins
    guard = GuardedBackend(origin.name, reactor, origins.health, origins.max_in_flight, LatencyWindow(0.95, 0.1))
    board.append(guard)
    return GuardedOrigin(origin, guard)
