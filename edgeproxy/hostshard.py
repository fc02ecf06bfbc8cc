"""
Domain sharding as the seed sites did it: a page spreads its 60-100 image requests
over N static hostnames, each image always on the same one (so browser and edge caches
stay warm), chosen by hash mod N. Under HTTP/2 one connection carries every request
and sharding only costs extra TLS handshakes: use a single hostname there.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

_HASH = re.compile(r"[0-9a-f]{40}")


def hostname_for(image_hash: str, hostnames: Sequence[str]) -> str:
    """Stable for a given list: the same image always lands on the same hostname."""
    if not _HASH.fullmatch(image_hash):
        raise ValueError(f"{image_hash!r} is not 40 lowercase hex characters")
    if not hostnames:
        raise ValueError("no hostnames to shard over")
    return hostnames[int(image_hash[:8], 16) % len(hostnames)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgeproxy-shard-host", description="Print the static hostname of each image hash.")
    parser.add_argument("hashes", nargs="+", metavar="HASH")
    parser.add_argument("--hosts", required=True, help="the static hostnames in a fixed order, comma-separated")
    args = parser.parse_args(argv)
    hosts = [host for host in args.hosts.split(",") if host]
    try:
        for image_hash in args.hashes:
            print(f"{image_hash} {hostname_for(image_hash, hosts)}")
    except ValueError as error:
        sys.stderr.write(f"edgeproxy-shard-host: {error}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
