"""
edgeproxy-warm against a real `twistd -n edgeproxy` (run as `python -m edgeproxy.warm`
in a subprocess, as an operator would), and in-process against loopback servers that
count what they are asked.
"""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from edgeproxy.warm import parser, warm
from tests.configs import REPO, SAMPLES, write_config
from tests.twistd import Twistd

IMAGES = sorted(f"/{path.name}" for path in SAMPLES.iterdir())
HASHES = [name[1:41] for name in IMAGES]


@pytest.fixture(scope="module")
def running_proxy(tmp_path_factory):
    """One twistd for the module (starting one costs seconds on a busy host)..."""
    workdir = tmp_path_factory.mktemp("proxy")
    twistd = Twistd(write_config(workdir), workdir)
    yield twistd
    assert twistd.stop() == -signal.SIGTERM


@pytest.fixture
def proxy(running_proxy):
    """...with a cold cache for each test: every sample image and its variants purged from both tiers."""
    for image_hash in HASHES:
        assert running_proxy.get(f"/purge/{image_hash}", admin=True, method="POST")[0] == 200
    return running_proxy


def run_warm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "edgeproxy.warm", *args], env=env, capture_output=True, text=True, timeout=timeout)


def write(tmp_path, name: str, lines: list[str]) -> str:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def summary_line(result: subprocess.CompletedProcess, prefix: str) -> str:
    (line,) = [line for line in result.stdout.splitlines() if line.startswith(prefix)]
    return line


def test_a_list_replayed_without_then_with_dedupe(proxy, tmp_path):
    target = f"http://127.0.0.1:{proxy.port}"
    listing = write(tmp_path, "urls.txt", ["# four images, three times each", "", *IMAGES * 3, "not a url"])
    # One at a time, so no two requests for a cold image are collapsed into one origin fetch (both would say MISS).
    first = run_warm("--target", target, "--no-dedupe", "--concurrency", "1", listing)
    assert first.returncode == 0, first.stderr
    assert summary_line(first, "input:") == "input: 15 lines, 12 replayed, 0 duplicates, 0 filtered (method or status), 1 malformed, 2 blank or comments"
    assert summary_line(first, "hit ratio during replay:") == "hit ratio during replay: 66.7 % (8 of 12 answers X-Cache HIT-*)"
    assert summary_line(first, "replay X-Cache:") == "replay X-Cache: HIT-MEMORY 8, MISS 4"

    again = run_warm("--target", target, "--no-dedupe", "--verify", listing)
    assert summary_line(again, "hit ratio now:") == "hit ratio now: 100.0 % (4 of 4 sampled answers X-Cache HIT-*)"  # distinct URLs

    second = run_warm("--target", target, "--verify", listing)
    assert second.returncode == 0, second.stderr
    assert "12 replayed" not in second.stdout and ", 4 replayed, 8 duplicates," in second.stdout
    assert summary_line(second, "hit ratio during replay:") == "hit ratio during replay: 100.0 % (4 of 4 answers X-Cache HIT-*)"
    assert summary_line(second, "hit ratio now:") == "hit ratio now: 100.0 % (4 of 4 sampled answers X-Cache HIT-*)"


def test_a_json_log_replays_its_hosts_and_skips_failures(proxy, tmp_path):
    a, b, c = HASHES[:3]
    entries = [
        {"host": "localhost", "path": f"/{a}.jpg", "status": 200},
        {"host": "img0.example.com", "path": f"/{a}/thumb.jpg", "status": 200},
        {"host": "localhost", "path": f"/{a}/480x0.jpg?sig=abc&exp=9", "status": 200},
        {"host": "localhost", "path": f"/{b}.jpg", "status": 304},
        {"host": "localhost", "path": f"/{c}.jpg", "status": 404},
        {"host": "localhost", "path": f"/{a}.jpg", "status": 200},
        {"host": "unknown.example.com", "path": f"/{b}.jpg", "status": 200},
    ]
    log = write(tmp_path, "access.log", [json.dumps(entry) for entry in entries] + ['{"host": "localhost", "path": '])
    target = f"http://127.0.0.1:{proxy.port}"
    first = run_warm("--target", target, "--concurrency", "1", log)
    assert first.returncode == 0, first.stderr  # a 421 is the log's fault, not a failure of the proxy
    assert summary_line(first, "input:").startswith("input: 8 lines, 5 replayed, 1 duplicates, 1 filtered (method or status), 1 malformed")
    assert summary_line(first, "replay:").endswith("2xx 4, 3xx 0, 4xx 1, 5xx 0, errors 0")
    assert summary_line(first, "replay X-Cache:") == "replay X-Cache: MISS 2, RENDERED 2, none 1"
    assert summary_line(first, "hit ratio during replay:") == "hit ratio during replay: 0.0 % (0 of 5 answers X-Cache HIT-*)"

    second = run_warm("--target", target, "--verify", log)
    assert summary_line(second, "hit ratio during replay:") == "hit ratio during replay: 80.0 % (4 of 5 answers X-Cache HIT-*)"
    assert summary_line(second, "hit ratio now:") == "hit ratio now: 100.0 % (4 of 4 sampled answers X-Cache HIT-*)"


def test_a_combined_log_with_the_host_forced(proxy, tmp_path):
    a, b = HASHES[:2]
    line = '198.51.100.7 - - [01/Dec/2026:10:00:00 +0000] "{} HTTP/1.1" {} 2326 "-" "Mozilla/5.0"'
    log = write(
        tmp_path,
        "combined.log",
        [
            line.format(f"GET /{a}.jpg", 200),
            line.format(f"HEAD /{b}.jpg", 304),
            line.format(f"POST /{a}.jpg", 200),
            line.format(f"GET /{b}/thumb.jpg", 404),
            '198.51.100.7 - - [01/Dec/2026:10:00:00 +0000] "-" 400 0 "-" "-"',
            line.format(f"GET /{b}/thumb.jpg", 200),
        ],
    )
    result = run_warm("--target", f"http://127.0.0.1:{proxy.port}", "--host", "img0.example.com", "--format", "combined", "--concurrency", "1", log)
    assert result.returncode == 0, result.stderr
    assert summary_line(result, "input:").startswith("input: 6 lines, 3 replayed, 0 duplicates, 2 filtered (method or status), 1 malformed")
    assert summary_line(result, "replay X-Cache:") == "replay X-Cache: MISS 2, RENDERED 1"


def test_the_rate_bounds_requests_per_second(proxy, tmp_path):
    listing = write(tmp_path, "urls.txt", [f"{IMAGES[0]}?n={n}" for n in range(20)])
    started = time.monotonic()
    result = run_warm("--target", f"http://127.0.0.1:{proxy.port}", "--no-dedupe", "--rate", "10", listing)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert summary_line(result, "replay:").startswith("replay: 20 requests in ")
    assert elapsed >= 1.5  # the first at once, then one every 0.1 s: 1.9 s


def test_a_dead_target_is_exit_1_with_a_clear_message(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the test runs: nobody listens there
    listing = write(tmp_path, "urls.txt", [f"/{n}.jpg" for n in range(1000)])
    result = run_warm("--target", f"http://127.0.0.1:{port}", "--verify", listing, timeout=30)
    assert result.returncode == 1
    assert f"edgeproxy-warm: http://127.0.0.1:{port} never answered (connection refused): is the proxy running there?" in result.stderr
    replayed = int(summary_line(result, "replay:").split()[1])
    assert 1 <= replayed <= 8  # it stopped at the first window instead of trying all 1000
    assert "verify:" not in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["/no/such/log"], "edgeproxy-warm: /no/such/log: No such file or directory"),
        (["--concurrency", "0", "x"], "argument --concurrency: '0' is not a positive int"),
        (["--target", "127.0.0.1:8080", "x"], "is not a base URL like http://127.0.0.1:8080"),
        (["--format", "xml", "x"], "argument --format: invalid choice"),
    ],
)
def test_bad_arguments_and_unreadable_input_are_exit_2(args, message):
    result = run_warm(*args)
    assert result.returncode == 2
    assert message in result.stderr


class Counting(Resource):
    """Answers after `delay`, counting the requests in flight at once and the connections used."""

    isLeaf = True

    def __init__(self, delay: float = 0.05):
        super().__init__()
        self.delay = delay
        self.in_flight = self.most_in_flight = self.requests = 0
        self.ports: set[int] = set()
        self.uris: list[bytes] = []

    def render_GET(self, request):
        self.requests += 1
        self.uris.append(request.uri)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.ports.add(request.getClientAddress().port)
        deferLater(reactor, self.delay, self._answer, request)
        return NOT_DONE_YET

    def _answer(self, request) -> None:
        self.in_flight -= 1
        if request.path == b"/hang":
            return
        request.setResponseCode(502 if request.path == b"/broken" else 200)
        request.setHeader(b"X-Cache", b"HIT-DISK")
        request.write(b"x" * 100_000)
        request.finish()


@pytest.fixture
def counting():
    resource = Counting()
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    resource.url = f"http://127.0.0.1:{port.getHost().port}"
    yield resource
    pytest_twisted.blockon(port.stopListening())


async def warm_in_process(*argv: str, lines: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await warm(reactor, parser().parse_args([*argv, "-"]), iter(line + "\n" for line in lines), len(lines), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest_twisted.ensureDeferred
async def test_concurrency_is_bounded_and_connections_are_reused(counting):
    code, out, _ = await warm_in_process("--target", counting.url, "--concurrency", "3", "--quiet", lines=[f"/{n}.jpg?sig=s{n}&exp=9" for n in range(30)])
    assert code == 0
    assert sorted(counting.uris) == sorted(f"/{n}.jpg?sig=s{n}&exp=9".encode() for n in range(30))  # the query is kept
    assert counting.most_in_flight == 3
    assert len(counting.ports) == 3  # persistent: three connections for thirty requests
    assert "hit ratio during replay: 100.0 % (30 of 30 answers X-Cache HIT-*)" in out


@pytest_twisted.ensureDeferred
async def test_a_5xx_and_a_timeout_are_exit_1(counting):
    code, out, _ = await warm_in_process("--target", counting.url, "--timeout", "0.5", "--quiet", lines=["/ok.jpg", "/broken", "/hang"])
    assert code == 1
    assert "2xx 1, 3xx 0, 4xx 0, 5xx 1, errors 1 (timeout 1)" in out
