"""
Resharding as the seed did it, as pure functions over token maps: doubling a map
(every range halved, the upper half to a new pair) and saying which tokens change
owner between two maps, so an operator sees what will move before reloading.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from edgeproxy.tokenmap import MAX_TOKEN, TokenMap, TokenMapError, parse_tokenmap

TOKEN_COUNT = MAX_TOKEN + 1
Pair = tuple[str, ...]


@dataclass(frozen=True)
class Move:
    """Tokens lo..hi (inclusive) owned by `old` in one map and by `new` in the other."""

    lo: int
    hi: int
    old: Pair
    new: Pair

    @property
    def tokens(self) -> int:
        return self.hi - self.lo + 1


def ranges(tokenmap: TokenMap) -> Iterator[tuple[int, int, Pair]]:
    """The map as inclusive (lo, hi, pair) ranges covering every token once."""
    lo = 0
    for bound, pair in zip(tokenmap.bounds, tokenmap.pairs):
        yield lo, bound, pair
        lo = bound + 1


def split(tokenmap: TokenMap, primary: str, secondary: str) -> TokenMap:
    """
    Halve every range. The lower half keeps its pair, so only the upper half's
    images have to be copied; its new pair is named from the patterns with `{n}`
    counting on from the number of ranges (33..64 for a 32-range map).
    """
    taken = {member for pair in tokenmap.pairs for member in pair}
    entries: list[tuple[str, str]] = []
    for n, (lo, hi, pair) in enumerate(ranges(tokenmap), start=len(tokenmap.bounds) + 1):
        if lo == hi:
            raise TokenMapError(f"range {lo:04x}-{hi:04x} is one token and cannot be halved")
        new_pair = (_name(primary, n), _name(secondary, n))
        clash = taken.intersection(new_pair)
        if clash:
            raise TokenMapError(f"new pair {n} would reuse {min(clash)}, already in the map")
        middle = lo + (hi - lo) // 2
        entries += [(f"{middle:04x}", " ".join(pair)), (f"{hi:04x}", " ".join(new_pair))]
    return parse_tokenmap(entries)


def _name(pattern: str, n: int) -> str:
    try:
        name = pattern.format(n=n)
    except KeyError as exc:
        raise TokenMapError(f"pattern {pattern!r} uses {{{exc.args[0]}}}, only {{n}} is known") from None
    except (IndexError, ValueError) as exc:
        raise TokenMapError(f"pattern {pattern!r}: {exc}") from None
    if name == pattern:
        raise TokenMapError(f"pattern {pattern!r} does not use {{n}}, every new pair would share its name")
    return name


def moves(old: TokenMap, new: TokenMap) -> list[Move]:
    """The maximal token ranges whose pair differs between the two maps, in token order."""
    found: list[Move] = []
    for lo, hi in _common_ranges(old, new):
        before, after = old.owner(lo), new.owner(lo)
        if before == after:
            continue
        if found and found[-1].hi == lo - 1 and (found[-1].old, found[-1].new) == (before, after):
            found[-1] = Move(found[-1].lo, hi, before, after)
        else:
            found.append(Move(lo, hi, before, after))
    return found


def _common_ranges(old: TokenMap, new: TokenMap) -> Iterator[tuple[int, int]]:
    """Ranges over which neither map changes owner: cut at the bounds of both."""
    lo = 0
    for bound in sorted(set(old.bounds) | set(new.bounds)):
        yield lo, bound
        lo = bound + 1


def format_tokenmap(tokenmap: TokenMap, header: list[str]) -> str:
    """A token map file as conf/tokenmap.ini writes it, `header` as comment lines on top."""
    lines = [f"# {line}".rstrip() for line in header]
    lines += ["", "[tokenmap]"]
    lines += [f"{bound:04x} = {' '.join(pair)}" for bound, pair in zip(tokenmap.bounds, tokenmap.pairs)]
    return "\n".join(lines) + "\n"
