"""
Signed URLs: HMAC-SHA256 over the canonical path and an optional expiry, so that only
the page generator (which holds the key) can ask for sizes outside the allow-list and a
cache cannot be filled with every width from 1 to 10000. Several keys are accepted
(rotation); the first one signs. The signature is not part of the cache key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from urllib.parse import parse_qsl

from edgeproxy.errors import EdgeError
from edgeproxy.urls import ImageRequest

SIGNATURE, EXPIRES = "sig", "exp"
MIN_KEY_BYTES = 32


class Signer:
    def __init__(self, keys: Sequence[bytes]):
        if not keys:
            raise ValueError("at least one key is needed: there is no default key")
        for key in keys:
            if len(key) < MIN_KEY_BYTES:
                raise ValueError(f"a key must be at least {MIN_KEY_BYTES} bytes")
        self._keys = tuple(keys)

    def sign(self, path: str, expires: int | None = None) -> str:
        """The path with its query: `/h/300x0.jpg?exp=1700000000&sig=...`."""
        query = f"{EXPIRES}={expires}&" if expires is not None else ""
        return f"{path}?{query}{SIGNATURE}={_mac(self._keys[0], path, expires)}"

    def check(self, path: bytes, query: bytes, now: float) -> None:
        """Raise a 403 unless `query` carries a valid, unexpired signature of `path`. Never says what was expected."""
        params = dict(parse_qsl(query.decode("ascii", "replace"), keep_blank_values=True))
        given = params.get(SIGNATURE)
        if not given:
            raise EdgeError(403, "signature required")
        expires = _expiry(params.get(EXPIRES))
        text = path.decode("ascii", "replace")
        if not any(hmac.compare_digest(_mac(key, text, expires), given) for key in self._keys):
            raise EdgeError(403, "bad signature")
        if expires is not None and now > expires:
            raise EdgeError(403, "signature expired")


def _expiry(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:  # '²'.isdigit(), yet int('²') raises
        raise EdgeError(403, "bad signature")
    return int(raw)


def _mac(key: bytes, path: str, expires: int | None) -> str:
    message = f"{path}\n{'' if expires is None else expires}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class SignaturePolicy:
    """
    Which requests must carry a valid signature: `explicit` sizes off the allow-list
    (the default), `all` requests, or `none` (such sizes are then simply not allowed).
    """

    def __init__(self, sign: str, keys: Sequence[bytes]):
        self._sign = sign
        self._signer = Signer(keys) if keys else None

    def check(self, image: ImageRequest, path: bytes, query: bytes, now: float) -> None:
        """Raise a 403 unless this request may be served as it is."""
        if self._sign == "all" or (image.unlisted and self._sign == "explicit" and self._signer is not None):
            assert self._signer is not None  # config refuses sign = all without keys
            self._signer.check(path, query, now)
        elif image.unlisted:
            raise EdgeError(403, "size not allowed")
