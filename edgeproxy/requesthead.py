"""
An HTTP/1.1 request head as a pure parser: bytes in, a RequestHead or an EdgeError
out, no socket in sight. It is strict wherever leniency would let one request mean
two things to two parsers (request smuggling, cache poisoning): a body in any form,
repeated or malformed framing headers, folded lines, bare LFs, absolute-form and
asterisk-form targets are refused, and a path is either canonical or refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeproxy.errors import EdgeError

MAX_LINE = 8192  # the request line (414 past it)
MAX_HEAD = 16384  # the whole head (431 past it)
MAX_HEADERS = 100
_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
_FIELDS = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\x20-\x7e\x80-\xff\t]*(?:\r\n|\Z))*")
_HOST = re.compile(rb"(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_PCHARS = re.compile(rb"[A-Za-z0-9._~!$&'()*+,;=:@/%-]*")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SINGLETONS = (b"host", b"content-length", b"transfer-encoding")


class BadFraming(EdgeError):
    """A request whose end cannot be trusted: answered, then the connection is closed."""


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes
    headers: dict[bytes, bytes]  # lowercased names; repeated fields joined with ", "
    keep_alive: bool
    http10: bool  # an HTTP/1.0 client: keep-alive only when asked, and said in the response


def parse_head(head: bytes) -> RequestHead:
    """`head` is everything before the blank line that ends it, CRLFs included."""
    request_line, _, fields = head.partition(b"\r\n")
    if len(request_line) > MAX_LINE:
        raise BadFraming(414, "request line too long")
    match = _REQUEST_LINE.fullmatch(request_line)
    if match is None:
        raise BadFraming(400, "malformed request line")
    method, target, major, minor = match.groups()
    if major != b"1":
        raise BadFraming(505, "HTTP version not supported")
    headers = _parse_fields(fields) if fields else {}
    _check_framing(headers)
    http10 = minor == b"0"
    return RequestHead(method, target, headers, _keep_alive(not http10, headers.get(b"connection", b"")), http10)


def _parse_fields(fields: bytes) -> dict[bytes, bytes]:
    """One regular expression checks every line (a token, a colon, visible characters); then they are split."""
    if not _FIELDS.fullmatch(fields) or fields.endswith(b"\r\n"):
        raise BadFraming(400, "malformed header field")
    lines = fields.split(b"\r\n")
    if len(lines) > MAX_HEADERS:
        raise BadFraming(431, "too many header fields")
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        name, value = name.lower(), value.strip(b" \t")
        if name in headers:
            if name in _SINGLETONS:
                raise BadFraming(400, f"repeated {name.decode()} header")
            value = headers[name] + b", " + value
        headers[name] = value
    return headers


def _check_framing(headers: dict[bytes, bytes]) -> None:
    """GET and HEAD carry no body: one announced in any form ends the connection."""
    if b"transfer-encoding" in headers:
        raise BadFraming(400, "a request body is not allowed")
    length = headers.get(b"content-length")
    if length is not None:
        if not length.isdigit() or len(length) > 18:  # int() of over 4300 digits raises ValueError
            raise BadFraming(400, "malformed Content-Length")
        if int(length):
            raise BadFraming(400, "a request body is not allowed")
    host = headers.get(b"host")
    if host is not None and not _HOST.fullmatch(host):
        raise BadFraming(400, "malformed Host header")


def _keep_alive(http11: bool, connection: bytes) -> bool:
    if not connection:
        return http11
    tokens = {token.strip() for token in connection.lower().split(b",")}
    return b"close" not in tokens and (http11 or b"keep-alive" in tokens)


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """Path and query of an origin-form target; any other form is refused."""
    if not target.startswith(b"/"):
        what = "asterisk-form" if target == b"*" else "absolute-form" if b"://" in target else "that"
        raise EdgeError(400, f"{what} request target is not served")
    path, _, query = target.partition(b"?")
    return path, query


def canonical_path(path: bytes) -> bytes:
    """
    Escapes of unreserved characters are decoded (`%61` is `a`); any other escape
    (an encoded slash or backslash, NUL, overlong UTF-8 such as `%c0%ae`), dot
    segments, empty segments, backslashes and `;` parameters are a 400, so that one
    object has one path and no path can step outside the grammar.
    """
    if not _PCHARS.fullmatch(path):
        raise EdgeError(400, "character not allowed in path")
    if b"%" in path:
        path = _ESCAPE.sub(_decode_unreserved, path)
        if b"%" in path:
            raise EdgeError(400, "malformed percent escape in path")
    if b";" in path:
        raise EdgeError(400, "path parameters are not allowed")
    if b"//" in path or b"/./" in path or b"/../" in path or path.endswith((b"/.", b"/..")):
        raise EdgeError(400, "path is not canonical")
    return path


def _decode_unreserved(match: re.Match[bytes]) -> bytes:
    byte = int(match[1], 16)
    if byte not in _UNRESERVED:
        raise EdgeError(400, "encoded character not allowed in path")
    return bytes((byte,))
