"""
Which shard pair owns an image, as the seed system sharded: the first four hex
characters of the hash are a token, and a map of inclusive upper bounds assigns
token ranges to pairs of image servers (primary first).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass
from typing import Iterable

from edgeproxy.ini import IniError, read_ini

MAX_TOKEN = 0xFFFF
_BOUND = re.compile(r"[0-9a-f]{4}")
_MEMBER = re.compile(r"(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})")


class TokenMapError(ValueError):
    """A token map that must not be put in force."""


@dataclass(frozen=True)
class TokenMap:
    """Sorted inclusive upper bounds, and for each the ordered members of its pair."""

    bounds: tuple[int, ...]
    pairs: tuple[tuple[str, ...], ...]

    def owner(self, token: int) -> tuple[str, ...]:
        """A token belongs to the first bound >= it."""
        return self.pairs[bisect_left(self.bounds, token)]

    def owner_of_hash(self, image_hash: str) -> tuple[str, ...]:
        return self.owner(token_of(image_hash))


def token_of(image_hash: str) -> int:
    return int(image_hash[:4], 16)


def parse_tokenmap(entries: Iterable[tuple[str, str]]) -> TokenMap:
    """Validate (bound, "host:port host:port") entries in file order."""
    bounds: list[int] = []
    pairs: list[tuple[str, ...]] = []
    for raw_bound, raw_pair in entries:
        bound = _parse_bound(raw_bound)
        if bounds and bound <= bounds[-1]:
            word = "duplicated" if bound == bounds[-1] else "out of order"
            raise TokenMapError(f"bound {raw_bound} is {word} (bounds must increase)")
        bounds.append(bound)
        pairs.append(_parse_pair(raw_bound, raw_pair))
    if not bounds:
        raise TokenMapError("the map is empty")
    if bounds[-1] != MAX_TOKEN:
        raise TokenMapError(f"the last bound is {bounds[-1]:04x}, it must be ffff")
    return TokenMap(tuple(bounds), tuple(pairs))


def _parse_bound(raw: str) -> int:
    bound = raw.strip().lower()
    if not _BOUND.fullmatch(bound):
        raise TokenMapError(f"bound {raw!r} is not four hex digits")
    return int(bound, 16)


def _parse_pair(bound: str, raw: str) -> tuple[str, ...]:
    members = tuple(raw.split())
    if not members:
        raise TokenMapError(f"bound {bound} names no servers")
    for member in members:
        match = _MEMBER.fullmatch(member)
        if not match or not 0 < int(match["port"]) < 65536:
            raise TokenMapError(f"bound {bound}: {member!r} is not host:port")
    if len(set(members)) != len(members):
        raise TokenMapError(f"bound {bound} names a server twice")
    return members


def load_tokenmap(path: str) -> TokenMap:
    """Read the [tokenmap] section of an INI file; every problem is a TokenMapError."""
    section = "tokenmap"
    try:
        parser = read_ini(path)
    except IniError as error:
        raise TokenMapError(f"{path}: {error}") from None
    if not parser.has_section(section):
        raise TokenMapError(f"{path}: no [{section}] section")
    try:
        return parse_tokenmap(parser.items(section))
    except TokenMapError as error:
        raise TokenMapError(f"{path}: {error}") from None
