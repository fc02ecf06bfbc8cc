"""
`edgeproxy-warm`: replay the URLs of an access log (ours, JSON; or common/combined
format) or of a URL list against a proxy before it takes traffic, so a new POP starts
with the working set its users ask for, and say the hit ratio reached. Exit status 0
when every request got an answer below 500, 1 when any failed in transport or with a
5xx, 2 on bad arguments or an unreadable input.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from typing import IO
from urllib.parse import urlsplit

from twisted.internet.interfaces import IReactorTCP
from twisted.internet.task import react

from edgeproxy.warminput import FORMATS, InputCounts, Reservoir, Seen, count_lines, open_input, read_targets
from edgeproxy.warmreplay import Replayer, unreachable
from edgeproxy.warmreport import Progress, Tally, summary

OK, FAILED, TROUBLE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the reactor until the replay is done, and exits with the replay's status."""
    args = parser().parse_args(argv)
    try:
        total = None if args.quiet else count_lines(args.input)
        lines = open_input(args.input)
    except OSError as error:
        return _unreadable(args.input, error)
    if total is not None and args.limit:
        total = min(total, args.limit)

    async def run(reactor: IReactorTCP) -> None:
        try:
            with lines:
                code = await warm(reactor, args, lines, total, sys.stdout, sys.stderr)
        except (OSError, EOFError) as error:  # e.g. a .gz that is not gzip, or cut short
            code = _unreadable(args.input, error)
        if code:
            raise SystemExit(code)  # how react() is told an exit status

    react(run)
    return OK


def _unreadable(path: str, error: Exception) -> int:
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    print(f"edgeproxy-warm: {getattr(error, 'filename', None) or path}: {reason}", file=sys.stderr)
    return TROUBLE


async def warm(reactor: IReactorTCP, args: argparse.Namespace, lines: Iterable[str], total: int | None, out: IO[str], err: IO[str]) -> int:
    """Replay `lines` (of which there are `total`, if known), then verify a sample if asked; the exit status."""
    counts = InputCounts()
    targets = read_targets(lines, counts, args.format, Seen() if args.dedupe else None, args.limit)
    sample = Reservoir(args.sample, None if args.dedupe else Seen()) if args.verify else None
    replayer = Replayer(reactor, args.target, args.host, args.concurrency, args.timeout, args.rate)
    progress = Progress(err, reactor, quiet=args.quiet)
    replay, verify = Tally(), None
    started = time.monotonic()
    try:
        progress.start(replay, lambda: counts.lines, total, "lines")
        await replayer.replay(targets, replay, sample.add if sample else _ignore).addBoth(progress.stop)
        seconds = time.monotonic() - started
        if sample is not None and not unreachable(replay):
            verify = Tally()
            progress.start(verify, lambda: verify.sent, len(sample.targets), "sampled")
            await replayer.replay(sample.targets, verify).addBoth(progress.stop)
    finally:
        await replayer.close()
    out.write(summary(counts, replay, seconds, verify))
    if unreachable(replay):
        reasons = ", ".join(sorted(replay.errors))
        err.write(f"edgeproxy-warm: {args.target} never answered ({reasons}): is the proxy running there?\n")
    return OK if replay.ok and (verify is None or verify.ok) else FAILED


def _ignore(_: object) -> None:
    pass


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeproxy-warm",
        description="Replay the URLs of a log against a proxy to warm its cache, and report the hit ratio reached.",
        epilog="Exit status: 0 every request answered below 500, 1 a transport error or a 5xx, 2 bad arguments or unreadable input.",
    )
    parser.add_argument("input", metavar="LOG", help="JSON access log, common/combined log or URL list (.gz read through gzip; - for stdin)")
    parser.add_argument("--target", type=_base_url, default="http://127.0.0.1:8080", metavar="URL", help="base URL of the proxy to warm (default: %(default)s)")
    parser.add_argument("--host", type=_hostname, metavar="NAME", help="Host header for every request (default: the line's host, else the target's)")
    parser.add_argument("--format", choices=FORMATS, default="auto", help="input format (default: %(default)s, guessed per line)")
    parser.add_argument("--concurrency", type=_positive(int), default=8, metavar="N", help="requests in flight at most (default: %(default)s)")
    parser.add_argument("--rate", type=_positive(float), metavar="R", help="requests per second at most (default: unlimited)")
    parser.add_argument("--limit", type=_positive(int), metavar="N", help="read only the first N lines")
    parser.add_argument("--timeout", type=_positive(float), default=30.0, metavar="SECONDS", help="per request, headers and body (default: %(default)g)")
    parser.add_argument(
        "--dedupe", action=argparse.BooleanOptionalAction, default=True,
        help="request each URL (host and path, query ignored as the cache ignores it) once (default: on; a second request only measures)",
    )
    parser.add_argument("--verify", action="store_true", help="then request a sample of the URLs answered 2xx again, to show the hit ratio the proxy now serves")
    parser.add_argument("--sample", type=_positive(int), default=1000, metavar="N", help="size of the --verify sample (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress display, only the summary")
    return parser


def _base_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"{text!r} is not a base URL like http://127.0.0.1:8080")
    return text


def _hostname(text: str) -> str:
    try:
        return text.encode("idna").decode("ascii")
    except UnicodeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a hostname") from None


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive {kind.__name__}")
        return value

    return parse


if __name__ == "__main__":
    sys.exit(main())
