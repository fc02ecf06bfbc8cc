import os
import re

import pytest

from edgeproxy.resharding import Move, format_tokenmap, moves, ranges, split
from edgeproxy.tokenmap import TokenMapError, load_tokenmap, parse_tokenmap

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "conf", "tokenmap.ini")
PRIMARY, SECONDARY = "images-m-{n:02d}:8080", "images-s-{n:02d}:8080"


@pytest.fixture(scope="module")
def sample():
    return load_tokenmap(SAMPLE)


@pytest.fixture(scope="module")
def doubled(sample):
    return split(sample, PRIMARY, SECONDARY)


def pair(n: int) -> tuple[str, str]:
    return (f"images-m-{n:02d}:8080", f"images-s-{n:02d}:8080")


def test_split_of_the_sample_halves_every_range_lower_half_keeping_its_pair(sample, doubled):
    assert len(doubled.bounds) == 64
    for index, (lo, hi, old_pair) in enumerate(ranges(sample), start=1):
        middle = lo + (hi - lo) // 2
        assert old_pair == pair(index)
        assert {doubled.owner(t) for t in range(lo, middle + 1)} == {pair(index)}
        assert {doubled.owner(t) for t in range(middle + 1, hi + 1)} == {pair(32 + index)}


def test_split_of_the_sample_moves_exactly_the_upper_halves(sample, doubled):
    found = moves(sample, doubled)
    assert len(found) == 32
    assert found[0] == Move(0x0290, 0x051E, pair(1), pair(33))
    assert found[-1] == Move(0xCF52, 0xFFFF, pair(32), pair(64))
    assert [m.new for m in found] == [pair(n) for n in range(33, 65)]
    assert sum(m.tokens for m in found) == 32767


def test_split_twice_numbers_on_from_the_range_count(doubled):
    quadrupled = split(doubled, PRIMARY, SECONDARY)
    assert len(quadrupled.bounds) == 128
    assert quadrupled.pairs[1] == pair(65) and quadrupled.pairs[-1] == ("images-m-128:8080", "images-s-128:8080")


def test_a_two_token_range_splits_into_one_token_each():
    doubled = split(parse_tokenmap([("0001", "a:1"), ("ffff", "b:1")]), "n{n}:1", "s{n}:1")
    assert doubled.bounds == (0x0000, 0x0001, 0x8000, 0xFFFF)
    assert doubled.pairs == (("a:1",), ("n3:1", "s3:1"), ("b:1",), ("n4:1", "s4:1"))


@pytest.mark.parametrize(
    "entries, primary, secondary, message",
    [
        ([("0000", "a:1"), ("ffff", "b:1")], "n{n}:1", "s{n}:1", "range 0000-0000 is one token and cannot be halved"),
        ([("7fff", "a:1"), ("ffff", "n3:1")], "n{n}:1", "s{n}:1", "new pair 3 would reuse n3:1, already in the map"),
        ([("ffff", "a:1")], "n:1", "s{n}:1", "does not use {n}"),
        ([("ffff", "a:1")], "n{m}:1", "s{n}:1", "uses {m}, only {n} is known"),
        ([("ffff", "a:1")], "n{0}:1", "s{n}:1", "pattern 'n{0}:1': Replacement index 0"),
        ([("ffff", "a:1")], "n{n:q}:1", "s{n}:1", "pattern 'n{n:q}:1': Unknown format code"),
        ([("ffff", "a:1")], "n{n}:1{", "s{n}:1", "pattern 'n{n}:1{': Single '{'"),
        ([("ffff", "a:1")], "n {n}:1", "s{n}:1", "'n' is not host:port"),
        ([("ffff", "a:1")], "n{n}:1", "n{n}:1", "names a server twice"),
    ],
)
def test_bad_splits_are_refused(entries, primary, secondary, message):
    with pytest.raises(TokenMapError, match=re.escape(message)):
        split(parse_tokenmap(entries), primary, secondary)


def test_identical_maps_move_nothing(sample):
    assert moves(sample, load_tokenmap(SAMPLE)) == []


def test_moves_merge_adjacent_ranges_with_the_same_owners_and_cut_where_they_differ():
    old = parse_tokenmap([("7fff", "a:1"), ("ffff", "b:1")])
    new = parse_tokenmap([("3fff", "a:1"), ("5fff", "c:1"), ("7fff", "c:1"), ("9fff", "c:1"), ("ffff", "b:1")])
    assert moves(old, new) == [Move(0x4000, 0x7FFF, ("a:1",), ("c:1",)), Move(0x8000, 0x9FFF, ("b:1",), ("c:1",))]
    assert moves(new, old) == [Move(0x4000, 0x7FFF, ("c:1",), ("a:1",)), Move(0x8000, 0x9FFF, ("c:1",), ("b:1",))]


def test_a_changed_secondary_or_order_is_a_change_of_pair():
    old = parse_tokenmap([("ffff", "a:1 b:1")])
    assert moves(old, parse_tokenmap([("ffff", "b:1 a:1")])) == [Move(0, 0xFFFF, ("a:1", "b:1"), ("b:1", "a:1"))]


def test_format_round_trips_through_load_tokenmap(tmp_path, doubled):
    path = tmp_path / "map.ini"
    path.write_text(format_tokenmap(doubled, ["made by a test", ""]))
    assert path.read_text().startswith("# made by a test\n#\n\n[tokenmap]\n028f = images-m-01:8080 images-s-01:8080\n")
    assert load_tokenmap(str(path)) == doubled
