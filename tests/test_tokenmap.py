import os

import pytest

from edgeproxy.tokenmap import TokenMapError, load_tokenmap, parse_tokenmap, token_of

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "conf", "tokenmap.ini")


@pytest.fixture(scope="module")
def sample():
    return load_tokenmap(SAMPLE)


def pair(n: int) -> tuple[str, str]:
    return (f"images-m-{n:02d}:8080", f"images-s-{n:02d}:8080")


@pytest.mark.parametrize(
    "token, owner",
    [
        (0x0000, 1),
        (0x0001, 1),
        (0x051E, 1),
        (0x051F, 2),
        (0x0A3C, 2),
        (0x0A3D, 3),
        (0x9EA2, 31),
        (0x9EA3, 32),
        (0xFFFE, 32),
        (0xFFFF, 32),
    ],
)
def test_boundaries(sample, token, owner):
    assert sample.owner(token) == pair(owner)


def test_every_bound_of_the_sample_map_is_owned_by_its_own_pair_and_the_next_token_by_the_next(sample):
    assert len(sample.bounds) == 32
    for index, bound in enumerate(sample.bounds, start=1):
        assert sample.owner(bound) == pair(index)
        if bound < 0xFFFF:
            assert sample.owner(bound + 1) == pair(index + 1)
    assert [b for b in sample.bounds[:-1]] == [0x051E * i for i in range(1, 32)]


def test_token_is_the_first_four_hex_characters():
    assert token_of("051f" + "0" * 36) == 0x051F
    assert token_of("ffff" + "a" * 36) == 0xFFFF


@pytest.mark.parametrize(
    "entries, message",
    [
        ([], "empty"),
        ([("8000", "a:1"), ("0100", "b:1"), ("ffff", "c:1")], "out of order"),
        ([("8000", "a:1"), ("8000", "b:1"), ("ffff", "c:1")], "duplicated"),
        ([("80g0", "a:1"), ("ffff", "c:1")], "not four hex digits"),
        ([("800", "a:1"), ("ffff", "c:1")], "not four hex digits"),
        ([("8000", "a:1"), ("fffe", "c:1")], "must be ffff"),
        ([("ffff", "")], "names no servers"),
        ([("ffff", "a")], "not host:port"),
        ([("ffff", "a:99999")], "not host:port"),
        ([("ffff", "a:1 a:1")], "twice"),
    ],
)
def test_bad_maps_are_refused(entries, message):
    with pytest.raises(TokenMapError, match=message):
        parse_tokenmap(entries)


def test_uppercase_bounds_and_ipv6_members_are_accepted():
    tokenmap = parse_tokenmap([("7FFF", "[::1]:8080 b:80"), ("FFFF", "c:81")])
    assert tokenmap.owner(0x7FFF) == ("[::1]:8080", "b:80")
    assert tokenmap.owner(0x8000) == ("c:81",)


def test_file_with_a_duplicated_bound_is_refused(tmp_path):
    path = tmp_path / "map.ini"
    path.write_text("[tokenmap]\n8000 = a:1\n8000 = b:1\nffff = c:1\n")
    with pytest.raises(TokenMapError, match=r"map.ini: \[tokenmap\] 8000 is duplicated"):
        load_tokenmap(str(path))


def test_missing_file_and_section_are_refused(tmp_path):
    with pytest.raises(TokenMapError, match="cannot read"):
        load_tokenmap(str(tmp_path / "absent.ini"))
    path = tmp_path / "map.ini"
    path.write_text("[other]\nffff = a:1\n")
    with pytest.raises(TokenMapError, match=r"no \[tokenmap\] section"):
        load_tokenmap(str(path))
