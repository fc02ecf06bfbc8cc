"""
The on-disk form of one cached object: a header that names the key and length and
carries a checksum, then the key, then the body. Whatever a crash, a full disk, bit
rot or a stray `mv` leaves behind, a file that does not verify is never served.
"""

from __future__ import annotations

import hashlib
import struct

MAGIC = b"EPX1"
HEADER = struct.Struct(">4sHQ32s")  # magic, key length, body length, BLAKE2b-256 of key + body
MAX_KEY = 1024


class CorruptEntry(ValueError):
    """A file that is not a complete, intact entry for the key asked for."""


def encode(key: bytes, body: bytes) -> bytes:
    return HEADER.pack(MAGIC, len(key), len(body), _digest(key, body)) + key + body


def decode(data: bytes, expected_key: bytes) -> bytes:
    """The body of `data`, after checking magic, key, length and checksum."""
    key, body_length, digest = read_header(data[: HEADER.size + MAX_KEY])
    if key != expected_key:
        raise CorruptEntry("holds another key")
    body = data[HEADER.size + len(key) :]
    if len(body) != body_length:
        raise CorruptEntry(f"body is {len(body)} bytes, header says {body_length}")
    if _digest(key, body) != digest:
        raise CorruptEntry("checksum mismatch")
    return body


def read_header(head: bytes) -> tuple[bytes, int, bytes]:
    """(key, body length, digest) from the first bytes of a file; used to rebuild the index."""
    if len(head) < HEADER.size:
        raise CorruptEntry("shorter than a header")
    magic, key_length, body_length, digest = HEADER.unpack_from(head)
    if magic != MAGIC or key_length > MAX_KEY or len(head) < HEADER.size + key_length:
        raise CorruptEntry("bad header")
    return head[HEADER.size : HEADER.size + key_length], body_length, digest


def entry_size(key: bytes, body_length: int) -> int:
    return HEADER.size + len(key) + body_length


def file_name(key: bytes) -> str:
    """Names come from the key's hash, never from anything a client sent."""
    return hashlib.sha256(key).hexdigest()


def _digest(key: bytes, body: bytes) -> bytes:
    digest = hashlib.blake2b(key, digest_size=32)
    digest.update(body)
    return digest.digest()
