"""A shard pair origin over loopback backends, built as tap.py builds it."""

from twisted.internet import reactor

from edgeproxy.origins.health import HealthPolicy
from edgeproxy.origins.shardpair import Members, ShardPairOrigin
from edgeproxy.shardmaps import ShardMaps
from edgeproxy.tokenmap import parse_tokenmap

HEALTH = HealthPolicy(down_after=3, down_for=0.3, max_down_for=1.0)


def one_pair(*members):
    return parse_tokenmap([("ffff", " ".join(m.address for m in members))])


def pair_origin(clients, members, timeout=5.0, max_body=1 << 20, template="/{hash}.{ext}", hedge=None, **more):
    """`more`: previous (a TokenMap), health, max_in_flight, scheme, addresses (instead of the members')."""
    maps = ShardMaps(more.get("addresses") or one_pair(*members), more.get("previous"))
    farm = Members(
        clients.client, reactor, timeout, max_body, more.get("health", HEALTH), more.get("max_in_flight", 64), hedge,
        scheme=more.get("scheme", "http"),
    )
    return ShardPairOrigin(lambda: maps, farm, reactor, template, hedge)
