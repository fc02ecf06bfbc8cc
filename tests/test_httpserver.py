"""The client-facing HTTP layer over real sockets, with real loopback backends."""

import socket

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher

from tests.edge import Edge, pair_map
from tests.images import name_of, photo, png

IMAGE = photo(seed=2)
NAME = name_of(IMAGE)
PNG = png()
PNG_NAME = name_of(PNG)
FILES = {f"/{NAME}.jpg": IMAGE, f"/{PNG_NAME}.jpg": PNG}


@pytest.fixture
def pair(backends):
    return backends(FILES), backends(FILES)


@pytest.fixture
def edge(tmp_path, pair):
    made = Edge(tmp_path, tokenmap=pair_map(*pair))
    yield made
    pytest_twisted.blockon(ensureDeferred(made.stop()))


def raw(edge, request: str):
    """Send bytes over a plain socket (in a thread) and read until the server closes."""

    def exchange() -> bytes:
        with socket.create_connection(("127.0.0.1", edge.port.getHost().port), timeout=5) as conn:
            conn.sendall(request.encode())
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

    return threads.deferToThread(exchange)


def header(response, name):
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


@pytest_twisted.ensureDeferred
async def test_miss_then_hit_with_the_contract_headers(edge, pair):
    first = await edge.get(f"/{NAME}.jpg")
    first_body = await first.content()
    second = await edge.get(f"/{NAME}.jpg")
    second_body = await second.content()
    assert (first.code, second.code) == (200, 200)
    assert first_body == second_body == IMAGE
    assert (header(first, "X-Cache"), header(second, "X-Cache")) == ("MISS", "HIT-MEMORY")
    assert pair[0].hits == 1
    for response in (first, second):
        assert header(response, "Content-Type") == "image/jpeg"
        assert response.length == len(IMAGE)
        assert header(response, "Cache-Control") == "public, max-age=31536000, immutable"
        assert header(response, "Server-Timing").startswith("cache;desc=")
        assert header(response, "Set-Cookie") is None
    assert header(first, "ETag") == header(second, "ETag")
    assert "origin;dur=" in header(first, "Server-Timing")


@pytest_twisted.ensureDeferred
async def test_content_type_comes_from_the_bytes_not_the_url_or_origin(edge):
    response = await edge.get(f"/{PNG_NAME}.jpg")
    await response.content()
    assert header(response, "Content-Type") == "image/png"


@pytest_twisted.ensureDeferred
async def test_if_none_match_gives_304_and_head_gives_headers_only(edge):
    first = await edge.get(f"/{NAME}.jpg")
    await first.content()
    etag = header(first, "ETag")
    for inm in (etag, f'"other", {etag}', f"W/{etag}", "*"):
        response = await edge.get(f"/{NAME}.jpg", headers={"If-None-Match": inm})
        assert response.code == 304
        assert await response.content() == b""
    response = await edge.get(f"/{NAME}.jpg", headers={"If-None-Match": '"other"'})
    assert response.code == 200
    await response.content()
    head = await raw(edge, f"HEAD /{NAME}.jpg HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"\r\nContent-Length: {len(IMAGE)}\r\n".encode() in head
    assert head.endswith(b"\r\n\r\n")


@pytest_twisted.ensureDeferred
async def test_head_on_a_miss(edge, pair):
    head = await edge.get(f"/{NAME}.jpg", method="HEAD")
    assert (head.code, header(head, "X-Cache")) == (200, "MISS")
    assert await head.content() == b""
    assert pair[0].hits == 1


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest_twisted.ensureDeferred
async def test_other_methods_are_405_with_allow_and_reach_no_origin(edge, pair, method):
    response = await edge.get(f"/{NAME}.jpg", method=method)
    assert response.code == 405
    assert header(response, "Allow") == "GET, HEAD"
    assert await response.content() == b"method not allowed\n"
    assert pair[0].hits + pair[1].hits == 0


@pytest.mark.parametrize(
    "path, status",
    [
        ("/", 404),
        ("/robots.txt", 404),
        (f"/{NAME.upper()}.jpg", 404),
        (f"/{NAME}.exe", 404),
        (f"/{NAME}/0x0.jpg", 400),
        (f"/{NAME}/123x0.jpg", 403),
        (f"/{NAME}/huge.jpg", 404),
        (f"/{NAME}/%2e%2e.jpg", 404),
    ],
)
@pytest_twisted.ensureDeferred
async def test_refused_urls_never_reach_an_origin(edge, pair, path, status):
    response = await edge.get(path)
    body = await response.content()
    assert response.code == status
    assert body.count(b"\n") == 1 and len(body) < 100
    assert header(response, "Content-Type") == "text/plain; charset=utf-8"
    assert pair[0].hits + pair[1].hits == 0


@pytest_twisted.ensureDeferred
async def test_unknown_host_is_421_and_query_string_is_not_in_the_key(edge, pair):
    response = await edge.get(f"/{NAME}.jpg", headers={"Host": "evil.example.com"})
    assert response.code == 421
    assert await response.content() == b"unknown host\n"
    assert pair[0].hits == 0
    for query in ("", "?a=1", "?b=2"):
        response = await edge.get(f"/{NAME}.jpg{query}", headers={"Host": "IMG0.example.com:8080"})
        assert response.code == 200
        await response.content()
    assert pair[0].hits == 1


@pytest_twisted.ensureDeferred
async def test_missing_host_is_400(edge):
    answer = await raw(edge, f"GET /{NAME}.jpg HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request")  # a server answers in its own version (RFC 9110 6.2)
    assert answer.endswith(b"\r\n\r\nmissing Host header\n")


@pytest_twisted.ensureDeferred
async def test_client_cookie_is_never_forwarded_and_origin_cookie_never_returned(edge, pair):
    pair[0].set_mode("cookie")
    response = await edge.get(f"/{NAME}.jpg", headers={"Cookie": "session=browser-secret"})
    await response.content()
    assert response.code == 200
    assert header(response, "Set-Cookie") is None
    assert pair[0].resource.requests[0].getHeader(b"cookie") is None


@pytest_twisted.ensureDeferred
async def test_not_found_on_both_members_is_404(edge, pair):
    missing = "f" * 40
    response = await edge.get(f"/{missing}.jpg")
    assert response.code == 404
    assert await response.content() == b"image not found\n"
    assert (pair[0].hits, pair[1].hits) == (1, 1)


@pytest_twisted.ensureDeferred
async def test_pair_down_is_502(tmp_path, backends):
    primary, secondary = backends(FILES), backends(FILES)
    edge = Edge(tmp_path, tokenmap=pair_map(primary, secondary))
    try:
        await primary.stop()
        await secondary.stop()
        response = await edge.get(f"/{NAME}.jpg")
        assert response.code == 502
        assert await response.content() == b"origin failed\n"
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_pair_timing_out_is_504(tmp_path, backends):
    primary, secondary = backends(FILES), backends(FILES)
    primary.set_mode("hang")
    secondary.set_mode("hang")
    edge = Edge(tmp_path, {("origins", "timeout"): "200ms"}, tokenmap=pair_map(primary, secondary))
    try:
        response = await edge.get(f"/{NAME}.jpg")
        assert response.code == 504
        assert await response.content() == b"origin timed out\n"
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_origin_sending_html_with_200_is_502_and_not_cached(tmp_path, backends):
    html = b"<html>Oops, a CMS error page</html>"
    primary = backends({f"/{name_of(html)}.jpg": html})
    edge = Edge(tmp_path, tokenmap=pair_map(primary))
    try:
        for _ in range(2):
            response = await edge.get(f"/{name_of(html)}.jpg")
            assert response.code == 502
            assert await response.content() == b"origin sent something that is not an image\n"
        assert primary.hits == 2
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_bytes_that_do_not_match_their_name_fail_the_hop_and_are_never_cached(tmp_path, backends):
    corrupt = bytearray(IMAGE)
    corrupt[len(corrupt) // 2] ^= 0xFF
    primary, secondary = backends({f"/{NAME}.jpg": bytes(corrupt)}), backends(FILES)
    edge = Edge(tmp_path, tokenmap=pair_map(primary, secondary))
    try:
        for _ in range(2):
            response = await edge.get(f"/{NAME}.jpg")
            assert (response.code, await response.content()) == (200, IMAGE)
        assert (primary.hits, secondary.hits) == (1, 1)
        await secondary.stop()
        response = await edge.get(f"/{PNG_NAME}.jpg")
        assert response.code == 502
        await response.content()
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_object_over_the_memory_limit_is_served_and_kept_on_disk_only(tmp_path, backends):
    primary = backends(FILES)
    edge = Edge(tmp_path, {("cache", "max_object_bytes"): "1KiB"}, tokenmap=pair_map(primary))
    try:
        for expected in ("MISS", "HIT-DISK", "HIT-DISK"):
            response = await edge.get(f"/{NAME}.jpg")
            assert (await response.content()) == IMAGE
            assert header(response, "X-Cache") == expected
        assert primary.hits == 1
        assert len(edge.site.handler.images.memory) == 0
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_client_gone_before_the_origin_answers_is_harmless(tmp_path, backends):
    primary = backends(FILES)
    primary.set_mode("hang")
    edge = Edge(tmp_path, {("origins", "timeout"): "300ms"}, tokenmap=pair_map(primary))
    failures: list[dict] = []
    observer = lambda event: failures.append(event) if "log_failure" in event else None  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        request = ensureDeferred(edge.get(f"/{NAME}.jpg"))
        await deferLater(reactor, 0.1, lambda: None)
        request.cancel()
        request.addErrback(lambda failure: None)  # the client side gives up; only the proxy side matters
        await deferLater(reactor, 0.4, lambda: None)
        primary.set_mode("serve")
        response = await edge.get(f"/{NAME}.jpg")
        assert (response.code, await response.content()) == (200, IMAGE)
        assert failures == []
    finally:
        globalLogPublisher.removeObserver(observer)
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_memory_evictions_spill_to_disk_and_disk_hits_are_promoted(tmp_path, backends):
    images = [photo(seed=s) for s in range(10, 14)]
    primary = backends({f"/{name_of(i)}.jpg": i for i in images})
    budget = max(len(i) for i in images) * 2 + 600
    edge = Edge(tmp_path, {("cache", "memory_bytes"): str(budget)}, tokenmap=pair_map(primary))
    service = edge.site.handler.images
    try:
        for image in images:
            response = await edge.get(f"/{name_of(image)}.jpg")
            assert (response.code, header(response, "X-Cache"), await response.content()) == (200, "MISS", image)
        assert service.disk.spilled >= 2
        first = f"/{name_of(images[0])}.jpg"
        seen = []
        for _ in range(2):
            response = await edge.get(first)
            assert await response.content() == images[0]
            seen.append((header(response, "X-Cache"), header(response, "Server-Timing").split("dur=")[0]))
        assert seen == [("HIT-DISK", "cache;desc=disk;"), ("HIT-MEMORY", "cache;desc=memory")]
        assert service.disk.promoted == 1
        assert primary.hits == len(images)
    finally:
        await edge.stop()
