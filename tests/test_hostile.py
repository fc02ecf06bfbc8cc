"""
Hostile requests over a raw socket: each gets its status (and a closed connection
when its framing cannot be trusted), reaches no origin, and caches nothing.
"""

import socket

import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.internet.defer import ensureDeferred

from tests.edge import Edge, pair_map
from tests.images import name_of, photo
from tests.rawhttp import send

IMAGE = photo(seed=7)
H = name_of(IMAGE)
GOOD = f"/{H}.jpg"
HOST = "Host: img0.example.com\r\n"

HOSTILE = [
    # name, request, status, connection closed afterwards
    ("body with Content-Length", f"GET {GOOD} HTTP/1.1\r\n{HOST}Content-Length: 5\r\n\r\nhello", 400, True),
    ("chunked body", f"GET {GOOD} HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, True),
    ("CL and TE (smuggling)", f"GET {GOOD} HTTP/1.1\r\n{HOST}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, True),
    ("two Content-Lengths", f"GET {GOOD} HTTP/1.1\r\n{HOST}Content-Length: 0\r\nContent-Length: 5\r\n\r\n", 400, True),
    ("Content-Length list", f"GET {GOOD} HTTP/1.1\r\n{HOST}Content-Length: 0, 0\r\n\r\n", 400, True),
    ("negative Content-Length", f"GET {GOOD} HTTP/1.1\r\n{HOST}Content-Length: -1\r\n\r\n", 400, True),
    ("Content-Length of 5000 digits", f"GET {GOOD} HTTP/1.1\r\n{HOST}Content-Length: {'1' * 5000}\r\n\r\n", 400, True),
    ("Content-Length of 5000 zeros", f"GET {GOOD} HTTP/1.1\r\n{HOST}Content-Length: {'0' * 5000}\r\n\r\n", 400, True),
    ("TE with odd spacing", f"GET {GOOD} HTTP/1.1\r\n{HOST}Transfer-Encoding : chunked\r\n\r\n", 400, True),
    ("obs-fold header line", f"GET {GOOD} HTTP/1.1\r\n{HOST}X-A: b\r\n c\r\n\r\n", 400, True),
    ("space before colon", f"GET {GOOD} HTTP/1.1\r\nHost : img0.example.com\r\n\r\n", 400, True),
    ("bare LF line ends", f"GET {GOOD} HTTP/1.1\n{HOST.strip()}\n\n", 400, True),
    ("NUL in a header", f"GET {GOOD} HTTP/1.1\r\n{HOST}X-A: a\x00b\r\n\r\n", 400, True),
    ("request line over 8 KiB", f"GET /{'a' * 9000} HTTP/1.1\r\n{HOST}\r\n", 414, True),
    ("header over 16 KiB", f"GET {GOOD} HTTP/1.1\r\n{HOST}X-A: {'a' * 20000}\r\n\r\n", 431, True),
    ("150 header fields", f"GET {GOOD} HTTP/1.1\r\n{HOST}" + "X-A: b\r\n" * 150 + "\r\n", 431, True),
    ("two Host headers", f"GET {GOOD} HTTP/1.1\r\n{HOST}Host: evil.example\r\n\r\n", 400, True),
    ("malformed Host", f"GET {GOOD} HTTP/1.1\r\nHost: img0.example.com/evil\r\n\r\n", 400, True),
    ("unknown Host", f"GET {GOOD} HTTP/1.1\r\nHost: evil.example\r\n\r\n", 421, False),
    ("X-Forwarded-Host does not route", f"GET {GOOD} HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Host: img0.example.com\r\n\r\n", 421, False),
    ("missing Host", f"GET {GOOD} HTTP/1.1\r\n\r\n", 400, False),
    ("HTTP/2.0 on HTTP/1 framing", f"GET {GOOD} HTTP/2.0\r\n{HOST}\r\n", 505, True),
    ("garbage version", f"GET {GOOD} HTTP/1.1x\r\n{HOST}\r\n", 400, True),
    ("two spaces in the request line", f"GET  {GOOD} HTTP/1.1\r\n{HOST}\r\n", 400, True),
    ("raw non-ASCII in the path", f"GET /\xe9{H}.jpg HTTP/1.1\r\n{HOST}\r\n", 400, True),
    ("absolute-form target", f"GET http://img0.example.com{GOOD} HTTP/1.1\r\n{HOST}\r\n", 400, False),
    ("CONNECT", f"CONNECT img0.example.com:443 HTTP/1.1\r\n{HOST}\r\n", 405, False),
    ("OPTIONS *", f"OPTIONS * HTTP/1.1\r\n{HOST}\r\n", 405, False),
    ("POST with a body", f"POST {GOOD} HTTP/1.1\r\n{HOST}Content-Length: 3\r\n\r\nabc", 400, True),
    ("DELETE", f"DELETE {GOOD} HTTP/1.1\r\n{HOST}\r\n", 405, False),
    ("lowercase get", f"get {GOOD} HTTP/1.1\r\n{HOST}\r\n", 405, False),
    ("dot-dot segment", f"GET /../{H}.jpg HTTP/1.1\r\n{HOST}\r\n", 400, False),
    ("encoded dot-dot", f"GET /%2e%2e/{H}.jpg HTTP/1.1\r\n{HOST}\r\n", 400, False),
    ("dot-dot inside a variant", f"GET /{H}/thumb/../x.jpg HTTP/1.1\r\n{HOST}\r\n", 400, False),
    ("encoded slash", f"GET /{H}%2fthumb.jpg HTTP/1.1\r\n{HOST}\r\n", 400, False),
    ("backslash", f"GET /\\{H}.jpg HTTP/1.1\r\n{HOST}\r\n", 400, False),
    ("encoded backslash", f"GET /%5c{H}.jpg HTTP/1.1\r\n{HOST}\r\n", 400, False),
    ("double slash", f"GET //{H}.jpg HTTP/1.1\r\n{HOST}\r\n", 400, False),
    ("overlong UTF-8 dot", f"GET /%c0%ae%c0%ae/{H}.jpg HTTP/1.1\r\n{HOST}\r\n", 400, False),
    ("encoded NUL", f"GET /{H}.jpg%00 HTTP/1.1\r\n{HOST}\r\n", 400, False),
    ("broken escape", f"GET /{H}.jpg%zz HTTP/1.1\r\n{HOST}\r\n", 400, False),
    (";parameters", f"GET /{H}.jpg;v=1 HTTP/1.1\r\n{HOST}\r\n", 400, False),
    ("not in the grammar", f"GET /etc/passwd HTTP/1.1\r\n{HOST}\r\n", 404, False),
    ("size off the allow-list, unsigned", f"GET /{H}/333x0.jpg HTTP/1.1\r\n{HOST}\r\n", 403, False),
    ("oversized variant", f"GET /{H}/9999x0.jpg HTTP/1.1\r\n{HOST}\r\n", 400, False),
]


@pytest.fixture
def origin(backends):
    return backends({GOOD: IMAGE})


@pytest.fixture
def edge(tmp_path, origin):
    made = Edge(tmp_path, tokenmap=pair_map(origin))
    yield made
    pytest_twisted.blockon(ensureDeferred(made.stop()))


@pytest.mark.parametrize("name, request_text, status, closed", HOSTILE, ids=[case[0] for case in HOSTILE])
@pytest_twisted.ensureDeferred
async def test_hostile_request(edge, origin, name, request_text, status, closed):
    exchange = await threads.deferToThread(send, edge.port.getHost().port, request_text.encode("latin-1"))
    assert exchange.status == status
    assert exchange.closed is closed
    answer = exchange.answers[0]
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.body.endswith(b"\n") and answer.body.count(b"\n") == 1 and len(answer.body) < 100
    if status == 405:
        assert answer.headers["Allow"] == "GET, HEAD"
    assert origin.hits == 0
    images = edge.site.handler.images
    assert len(images.memory) == 0 and len(images._absent) == 0


HEAD_REFUSED = [
    ("head over 16 KiB", f"HEAD {GOOD} HTTP/1.1\r\n{HOST}X-A: {'a' * 20000}\r\n\r\n", 431),
    ("head over 16 KiB, still arriving", f"HEAD {GOOD} HTTP/1.1\r\n{HOST}X-A: {'a' * 20000}", 431),
    ("request line over 8 KiB", f"HEAD /{'a' * 9000} HTTP/1.1\r\n{HOST}\r\n", 414),
    ("bare LF line ends", f"HEAD {GOOD} HTTP/1.1\n{HOST.strip()}\n\n", 400),
]


def until_closed(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3.0) as conn:
        conn.sendall(data)
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received


@pytest.mark.parametrize("name, request_text, status", HEAD_REFUSED, ids=[case[0] for case in HEAD_REFUSED])
@pytest_twisted.ensureDeferred
async def test_a_head_refused_for_its_framing_gets_headers_only(edge, name, request_text, status):
    """Refused while its head was still arriving, a HEAD had been answered with a body."""
    received = await threads.deferToThread(until_closed, edge.port.getHost().port, request_text.encode())
    head, _, after = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status) and after == b""


@pytest_twisted.ensureDeferred
async def test_an_escaped_unreserved_character_is_the_same_object(edge, origin):
    port = edge.port.getHost().port
    plain = f"GET {GOOD} HTTP/1.1\r\n{HOST}\r\n".encode()
    escaped = f"GET /%{ord(H[0]):02x}{H[1:]}.jpg HTTP/1.1\r\n{HOST}\r\n".encode()
    first = await threads.deferToThread(send, port, plain)
    second = await threads.deferToThread(send, port, escaped)
    assert [first.status, second.status] == [200, 200]
    assert [first.answers[0].headers["X-Cache"], second.answers[0].headers["X-Cache"]] == ["MISS", "HIT-MEMORY"]
    assert origin.hits == 1


@pytest_twisted.ensureDeferred
async def test_forwarding_headers_never_change_the_object(edge, origin):
    port = edge.port.getHost().port
    request = f"GET {GOOD} HTTP/1.1\r\n{HOST}X-Original-URL: /{'0' * 40}.jpg\r\nX-Rewrite-URL: /x\r\nX-Forwarded-Host: evil.example\r\n\r\n"
    exchange = await threads.deferToThread(send, port, request.encode())
    assert exchange.status == 200 and exchange.answers[0].body == IMAGE
    assert origin.hits == 1


@pytest_twisted.ensureDeferred
async def test_errors_caused_by_headers_are_never_cached(edge, origin):
    """A refused request leaves nothing behind: the same URL asked properly is a normal miss."""
    port = edge.port.getHost().port
    bad = await threads.deferToThread(send, port, f"GET {GOOD} HTTP/1.1\r\nHost: evil.example\r\n\r\n".encode())
    good = await threads.deferToThread(send, port, f"GET {GOOD} HTTP/1.1\r\n{HOST}\r\n".encode())
    assert (bad.status, good.status) == (421, 200)
    assert good.answers[0].headers["X-Cache"] == "MISS"
