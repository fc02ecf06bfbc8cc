"""
The S3 regions of the origin chain, built only when `s3` is in `[origins] chain`: they
bring botocore, which costs each process about 25 MB of memory.
"""

from __future__ import annotations

from twisted.application.service import MultiService

from edgeproxy.chain import client_service, guarded
from edgeproxy.config import Config, S3RegionConfig
from edgeproxy.origins import IOrigin
from edgeproxy.origins.awscredentials import (
    AnonymousCredentials,
    ChainCredentials,
    ICredentialSource,
    StaticCredentials,
)
from edgeproxy.origins.guard import GuardedBackend
from edgeproxy.origins.s3 import S3RegionOrigin
from edgeproxy.services import thread_pool


def s3_origins(config: Config, reactor: object, top: MultiService, board: list[GuardedBackend]) -> list[IOrigin]:
    """Every region in order, over one client; those using the AWS chain share it and its one thread."""
    clients = client_service(config, reactor, top)
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
        regions.append(guarded(origin, config, reactor, board))
    return regions


def _credentials(region: S3RegionConfig, chain: ICredentialSource | None) -> ICredentialSource:
    if region.credentials == "static":
        return StaticCredentials(region.access_key, region.secret_key)
    if region.credentials == "anonymous":
        return AnonymousCredentials()
    assert chain is not None
    return chain
