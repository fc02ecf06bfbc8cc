"""Persistence of a parsed request head: HTTP/1.1 keeps the connection unless told to close, HTTP/1.0 only when asked."""

import pytest

from edgeproxy.requesthead import parse_head


@pytest.mark.parametrize(
    "version, connection, keep_alive",
    [
        ("1.1", None, True),
        ("1.1", "Close", False),
        ("1.1", "keep-alive, close", False),
        ("1.0", None, False),
        ("1.0", "Keep-Alive", True),
        ("1.0", "keep-alive, close", False),
    ],
)
def test_keep_alive_follows_the_version_and_the_connection_header(version, connection, keep_alive):
    fields = f"\r\nConnection: {connection}" if connection else ""
    head = parse_head(f"GET /x HTTP/{version}\r\nHost: img0.example.com{fields}".encode())
    assert head.keep_alive is keep_alive
