"""Signed URLs through the proxy: what `[security]` demands, checked before any origin hears of it."""

import pytest
import pytest_twisted

from edgeproxy.signing import Signer
from tests.edge import Edge, pair_map
from tests.images import name_of, photo

KEY, OLD_KEY = "k" * 40, "o" * 32
IMAGE = photo(seed=21)
H = name_of(IMAGE)
UNLISTED = f"/{H}/333x0.jpg"


async def served(edge, path):
    response = await edge.get(path, headers={"Host": "img0.example.com"})
    return response.code, (response.headers.getRawHeaders("X-Cache") or [None])[0], await response.content()


@pytest.fixture
def origin(backends):
    return backends({f"/{H}.jpg": IMAGE})


def make_edge(tmp_path, origin, sign: str, keys: str = f"{KEY} {OLD_KEY}"):
    return Edge(tmp_path, {("security", "keys"): keys, ("security", "sign"): sign}, tokenmap=pair_map(origin))


@pytest_twisted.ensureDeferred
async def test_an_unlisted_size_needs_a_valid_signature_which_is_not_in_the_cache_key(tmp_path, origin):
    edge = make_edge(tmp_path, origin, "explicit")
    try:
        assert await served(edge, UNLISTED) == (403, None, b"signature required\n")
        assert await served(edge, UNLISTED + "?sig=AAAA") == (403, None, b"bad signature\n")
        assert await served(edge, Signer([KEY.encode()]).sign(UNLISTED, expires=1)) == (403, None, b"signature expired\n")
        assert origin.hits == 0
        code, x_cache, _ = await served(edge, Signer([KEY.encode()]).sign(UNLISTED))
        assert (code, x_cache) == (200, "MISS")
        code, x_cache, _ = await served(edge, Signer([OLD_KEY.encode()]).sign(UNLISTED, expires=4_000_000_000))
        assert (code, x_cache) == (200, "HIT-MEMORY")  # a rotated-out key still works; the signature is not in the key
        assert (await served(edge, f"/{H}/thumb.jpg"))[0] == 200  # presets and listed sizes need none
        assert (await served(edge, f"/{H}.jpg"))[0] == 200
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_sign_all_refuses_every_unsigned_request(tmp_path, origin):
    edge = make_edge(tmp_path, origin, "all")
    try:
        assert await served(edge, f"/{H}.jpg") == (403, None, b"signature required\n")
        assert await served(edge, f"/{H}/thumb.jpg") == (403, None, b"signature required\n")
        assert origin.hits == 0
        assert (await served(edge, Signer([KEY.encode()]).sign(f"/{H}.jpg")))[0] == 200
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_sign_none_serves_only_listed_sizes_even_when_signed(tmp_path, origin):
    edge = make_edge(tmp_path, origin, "none")
    try:
        assert await served(edge, Signer([KEY.encode()]).sign(UNLISTED)) == (403, None, b"size not allowed\n")
        assert origin.hits == 0
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_without_keys_an_unlisted_size_is_not_allowed(tmp_path, origin):
    edge = Edge(tmp_path, tokenmap=pair_map(origin))
    try:
        assert await served(edge, UNLISTED + "?sig=anything") == (403, None, b"size not allowed\n")
    finally:
        await edge.stop()
