"""
What the cache warmer replays, read one line at a time from our JSON access log, a
common/combined-format access log or a plain list of URLs or paths. Parsing is pure
(a line in, a target or the reason it is skipped out) and the file is streamed, so a
month of logs costs the memory of one line plus the bounded dedupe window.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import json
import random
import re
import string
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Callable
from urllib.parse import quote, urlsplit

FORMATS = ("auto", "json", "combined", "list")
_REQUEST = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/\d(?:\.\d)?" (?P<status>\d{3})(?:\s|$)')
_REPLAYED_METHODS = frozenset({"GET", "HEAD"})
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True)
class Target:
    """One request to replay: the Host the log saw (None when it does not say) and the path with its query."""

    host: str | None
    path: str


class Skip(enum.Enum):
    """Why a line is not replayed: nothing on it, a request not worth warming, or not a request at all."""

    BLANK = "blank"
    FILTERED = "filtered"
    MALFORMED = "malformed"


@dataclass
class InputCounts:
    """What became of the lines read, for the summary."""

    lines: int = 0
    targets: int = 0
    duplicates: int = 0
    skipped: dict[Skip, int] = field(default_factory=lambda: dict.fromkeys(Skip, 0))


def parse_line(line: str, fmt: str = "auto") -> Target | Skip:
    """A line of `fmt` ("auto": guessed from the line itself, so mixed files work)."""
    text = line.strip()
    if not text or text.startswith("#"):
        return Skip.BLANK
    if fmt == "auto":
        fmt = "list" if text.startswith(("/", "http://", "https://")) else "json" if text.startswith("{") else "combined"
    return _PARSERS[fmt](text)


def _parse_list(text: str) -> Target | Skip:
    if text.startswith("/"):
        return _target(None, text)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return Skip.MALFORMED
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _target(parts.netloc, path)


def _parse_json(text: str) -> Target | Skip:
    """Our access log: only answers worth having cached (200, 304) to GET or HEAD are replayed."""
    try:
        entry = json.loads(text)
    except ValueError:
        return Skip.MALFORMED
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not isinstance(entry.get("host", ""), str):
        return Skip.MALFORMED
    if "status" in entry and str(entry["status"]) not in ("200", "304"):
        return Skip.FILTERED
    if str(entry.get("method", "GET")).upper() not in _REPLAYED_METHODS:
        return Skip.FILTERED
    return _target(entry.get("host") or None, entry["path"])


def _parse_combined(text: str) -> Target | Skip:
    """`... "GET /path HTTP/1.1" 200 ...`: GET or HEAD answered 2xx or 304."""
    found = _REQUEST.search(text)
    if found is None:
        return Skip.MALFORMED
    status = int(found["status"])
    if found["method"] not in _REPLAYED_METHODS or not (200 <= status < 300 or status == 304):
        return Skip.FILTERED
    request_target = found["target"]
    return _parse_list(request_target) if request_target.startswith(("/", "http://", "https://")) else Skip.MALFORMED


def _target(host: str | None, path: str) -> Target | Skip:
    """Paths are sent as logged, query included (a signature must survive); non-ASCII is percent-encoded, or punycode in a host."""
    if not path.startswith("/") or _UNSAFE.search(path) or (host is not None and _UNSAFE.search(host)):
        return Skip.MALFORMED
    try:
        ascii_host = host.encode("idna").decode("ascii") if host else None
    except UnicodeError:
        return Skip.MALFORMED
    return Target(ascii_host, quote(path, safe=string.punctuation))


_PARSERS = {"list": _parse_list, "json": _parse_json, "combined": _parse_combined}


class Seen:
    """
    The URLs already replayed, as 8-byte digests of host and path without query (the
    query is not part of the proxy's cache key, so two signatures of one variant warm
    it once). Bounded: past `capacity` the oldest are forgotten, and a duplicate that
    far apart costs one more request, which will be a hit.
    """

    def __init__(self, capacity: int = 1_000_000):
        self._capacity = capacity
        self._digests: OrderedDict[bytes, None] = OrderedDict()

    def add(self, target: Target) -> bool:
        """True the first time `target` is seen."""
        key = f"{target.host or ''} {target.path.partition('?')[0]}".encode()
        digest = hashlib.blake2b(key, digest_size=8).digest()
        if digest in self._digests:
            return False
        self._digests[digest] = None
        if len(self._digests) > self._capacity:
            self._digests.popitem(last=False)
        return True


class Reservoir:
    """
    A uniform sample of at most `size` targets from a stream of unknown length
    (algorithm R), for --verify; with `seen`, of distinct targets, since verifying
    one URL three times says nothing more.
    """

    def __init__(self, size: int, seen: Seen | None = None, draw: Callable[[int], int] = random.randrange):
        self.targets: list[Target] = []
        self._size = size
        self._seen = seen
        self._offered = 0
        self._draw = draw

    def add(self, target: Target) -> None:
        if self._seen is not None and not self._seen.add(target):
            return
        self._offered += 1
        if len(self.targets) < self._size:
            self.targets.append(target)
        elif (slot := self._draw(self._offered)) < self._size:
            self.targets[slot] = target


def read_targets(lines: Iterable[str], counts: InputCounts, fmt: str = "auto", seen: Seen | None = None, limit: int | None = None) -> Iterator[Target]:
    """The targets of the first `limit` lines, lazily, counting every line in `counts`."""
    for line in lines:
        if limit is not None and counts.lines >= limit:
            return
        counts.lines += 1
        parsed = parse_line(line, fmt)
        if isinstance(parsed, Skip):
            counts.skipped[parsed] += 1
        elif seen is not None and not seen.add(parsed):
            counts.duplicates += 1
        else:
            counts.targets += 1
            yield parsed


def open_input(path: str) -> IO[str]:
    """`-` is stdin and `.gz` is read through gzip, as rotated logs are; bad bytes never stop a replay."""
    if path == "-":
        return sys.stdin
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def count_lines(path: str) -> int | None:
    """The number of lines, read in chunks, so the progress bar knows its total; None for stdin."""
    if path == "-":
        return None
    lines, last = 0, b"\n"
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            lines, last = lines + chunk.count(b"\n"), chunk[-1:]
    return lines + (last != b"\n")
