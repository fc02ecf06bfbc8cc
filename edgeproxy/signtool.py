"""
`edgeproxy-sign`: print signed URLs with the first key of a configuration's
[security] keys, for page generators and for testing by hand.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from edgeproxy.config import ConfigError, load_config, parse_duration
from edgeproxy.signing import Signer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgeproxy-sign", description=__doc__.strip().splitlines()[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="e.g. /{hash}/640x0.webp")
    parser.add_argument("--config", default="conf/edgeproxy.ini", help="where [security] keys are (default: %(default)s)")
    parser.add_argument("--ttl", type=parse_duration, help="the URL expires after this long (e.g. 3600s, 90min)")
    parser.add_argument("--base", default="", help="prefix each line, e.g. https://img0.example.com")
    args = parser.parse_args(argv)
    try:
        keys = load_config(args.config).security.keys
        signer = Signer(keys)
    except (ConfigError, ValueError) as error:
        sys.stderr.write(f"edgeproxy-sign: {error}\n")
        return 2
    expires = int(time.time() + args.ttl) if args.ttl else None
    for path in args.paths:
        if not path.startswith("/"):
            sys.stderr.write(f"edgeproxy-sign: {path!r} is not a path starting with /\n")
            return 2
        print(args.base + signer.sign(path, expires))
    return 0


if __name__ == "__main__":
    sys.exit(main())
