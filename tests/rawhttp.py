"""A blocking HTTP/1.1 client over a raw socket, for requests no real client would send."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Exchange:
    answers: list[Answer] = field(default_factory=list)
    closed: bool = False  # the server closed the connection after its answers

    @property
    def status(self) -> int:
        return self.answers[0].status if self.answers else 0


def send(port: int, data: bytes, expect: int = 1, settle: float = 0.3, timeout: float = 5.0, head: bool = False) -> Exchange:
    """Send `data`, read `expect` answers, then wait `settle` seconds to see whether the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(data)
        return read_answers(conn, expect, settle, head)


def read_answers(conn: socket.socket, expect: int, settle: float = 0.3, head: bool = False) -> Exchange:
    exchange, buffer = Exchange(), b""
    while len(exchange.answers) < expect:
        answer, buffer, closed = _read_one(conn, buffer, head)
        if answer is None:
            exchange.closed = closed
            return exchange
        exchange.answers.append(answer)
    conn.settimeout(settle)
    try:
        exchange.closed = conn.recv(1) == b""
    except (TimeoutError, socket.timeout):
        exchange.closed = False
    except ConnectionResetError:
        exchange.closed = True
    return exchange


def _read_one(conn: socket.socket, buffer: bytes, head: bool) -> tuple[Answer | None, bytes, bool]:
    while b"\r\n\r\n" not in buffer:
        chunk = _recv(conn)
        if not chunk:
            return None, buffer, True
        buffer += chunk
    raw_head, _, buffer = buffer.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    status = int(lines[0].split()[1])
    length = 0 if head or status == 304 else int(headers.get("Content-Length", "0"))
    while len(buffer) < length:
        chunk = _recv(conn)
        if not chunk:
            return None, buffer, True
        buffer += chunk
    return Answer(status, headers, buffer[:length]), buffer[length:], False


def _recv(conn: socket.socket) -> bytes:
    try:
        return conn.recv(65536)
    except ConnectionResetError:
        return b""


def wait_closed(conn: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closes `conn` (reading and dropping what it sends), or None if it did not."""
    started = time.monotonic()
    conn.settimeout(0.2)
    while time.monotonic() - started < seconds:
        try:
            if conn.recv(65536) == b"":
                return time.monotonic() - started
        except (TimeoutError, socket.timeout):
            continue
        except ConnectionResetError:
            return time.monotonic() - started
    return None
