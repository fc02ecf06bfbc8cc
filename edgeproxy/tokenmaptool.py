"""
`edgeproxy-tokenmap`: the operator's side of live resharding. `split` writes the
doubled map to put in force (with the old one as `previous`), `diff` says which
tokens move before anyone reloads, `check` validates a map as the proxy would.
Like diff(1), `diff` exits 1 when something moves, so scripts can test it; any bad
input is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from edgeproxy.resharding import TOKEN_COUNT, format_tokenmap, moves, split
from edgeproxy.tokenmap import TokenMapError, load_tokenmap

SAME, DIFFERENT, TROUBLE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.command(args)
    except (TokenMapError, OSError) as error:
        print(f"edgeproxy-tokenmap: {_one_line(error)}", file=sys.stderr)
        return TROUBLE


def _one_line(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename:
        return f"{error.filename}: {error.strerror}"
    return str(error)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeproxy-tokenmap", description="Reshard edgeproxy token maps.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    check = commands.add_parser("check", help="validate a map as the proxy would")
    check.add_argument("map", metavar="MAP")
    check.set_defaults(command=_check)
    halve = commands.add_parser("split", help="halve every range, the upper halves going to new pairs")
    halve.add_argument("map", metavar="MAP")
    halve.add_argument("--primary", required=True, metavar="PATTERN", help="new primaries, e.g. images-m-{n:02d}:8080")
    halve.add_argument("--secondary", required=True, metavar="PATTERN", help="new secondaries, e.g. images-s-{n:02d}:8080")
    halve.add_argument("--output", metavar="FILE", help="write here (atomically) instead of to stdout")
    halve.set_defaults(command=_split)
    compare = commands.add_parser("diff", help="say which token ranges change pair; exit 1 if any")
    compare.add_argument("old", metavar="OLD")
    compare.add_argument("new", metavar="NEW")
    compare.set_defaults(command=_diff)
    return parser


def _check(args: argparse.Namespace) -> int:
    tokenmap = load_tokenmap(args.map)
    servers = {member for pair in tokenmap.pairs for member in pair}
    print(f"{args.map}: {len(tokenmap.bounds)} ranges, {len(set(tokenmap.pairs))} pairs, {len(servers)} servers")
    return SAME


def _split(args: argparse.Namespace) -> int:
    old = load_tokenmap(args.map)
    new = split(old, args.primary, args.secondary)
    header = [
        f"Split from {args.map} by edgeproxy-tokenmap split: {len(old.bounds)} ranges halved into {len(new.bounds)}.",
        "Each lower half keeps its pair; each upper half goes to a new pair",
        f"named {args.primary} {args.secondary}.",
        "Give the old map as [shards] previous until the upper halves are copied.",
    ]
    text = format_tokenmap(new, header)
    if args.output is None:
        sys.stdout.write(text)
    else:
        _write_atomically(args.output, text)
    return SAME


def _write_atomically(path: str, text: str) -> None:
    """A proxy reloading on SIGHUP must never read a half-written map."""
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _diff(args: argparse.Namespace) -> int:
    found = moves(load_tokenmap(args.old), load_tokenmap(args.new))
    for move in found:
        print(f"{move.lo:04x}-{move.hi:04x}: {' '.join(move.old)} -> {' '.join(move.new)}")
    moved = sum(move.tokens for move in found)
    print(f"{moved} of {TOKEN_COUNT} tokens ({100 * moved / TOKEN_COUNT:.2f} %) change pair in {len(found)} ranges")
    return DIFFERENT if found else SAME


if __name__ == "__main__":
    sys.exit(main())
