"""HTTPS on a real `twistd`: TLS 1.2+, SNI between two certificates, HTTP/2 and HTTP/1.1 by ALPN, plain HTTP closed."""

import shutil
import socket
import subprocess

import pytest

from edgeproxy.config import ConfigError, load_config
from tests.configs import write_config
from tests.tlscerts import LoopbackCA
from tests.twistd import Twistd

SAMPLE = "a6fc62329945ddc6aa13a641fe0a90d0885d04a4"
needs = pytest.mark.skipif(not (shutil.which("openssl") and shutil.which("curl")), reason="needs openssl and curl")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def https(tmp_path):
    ca = LoopbackCA(tmp_path)
    images = ca.issue("images", "img0.example.com", "*.static.example.com")
    other = ca.issue("other", "photos.example.net")
    port = free_port()
    changes = {
        ("tls", "listen"): f"tcp:{port}:interface=127.0.0.1",
        ("tls", "certificates"): f"{images[0]}:{images[1]} {other[0]}:{other[1]}",
        ("edge", "hostnames"): "img0.example.com a.static.example.com photos.example.net",
    }
    twistd = Twistd(write_config(tmp_path, changes), tmp_path)
    twistd.tls_port, twistd.ca = port, ca.path
    yield twistd
    twistd.stop()


def s_client(proxy, *args: str) -> str:
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{proxy.tls_port}", "-CAfile", str(proxy.ca), *args]
    return subprocess.run(command, input="", capture_output=True, text=True, timeout=30).stdout


def s_client_stderr(proxy, *args: str) -> str:
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{proxy.tls_port}", *args]
    return subprocess.run(command, input="", capture_output=True, text=True, timeout=30).stderr


def curl(proxy, host: str, *args: str) -> subprocess.CompletedProcess:
    url = f"https://{host}:{proxy.tls_port}/{SAMPLE}.jpg"
    command = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_version} %{http_code} %{size_download}", "--cacert", str(proxy.ca),
               "--resolve", f"{host}:{proxy.tls_port}:127.0.0.1", *args, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


@needs
def test_sni_picks_the_certificate_for_the_name(https):
    assert "subject=CN = img0.example.com" in s_client(https, "-servername", "img0.example.com")
    assert "subject=CN = photos.example.net" in s_client(https, "-servername", "photos.example.net")
    assert "subject=CN = img0.example.com" in s_client(https, "-servername", "a.static.example.com")
    assert "Verify return code: 0 (ok)" in s_client(https, "-servername", "photos.example.net")


@needs
def test_http2_and_http1_by_alpn_with_a_verified_chain(https):
    assert curl(https, "img0.example.com", "--http2").stdout == "2 200 15019"
    assert curl(https, "photos.example.net", "--http1.1").stdout == "1.1 200 15019"
    assert "ALPN protocol: h2" in s_client(https, "-servername", "img0.example.com", "-alpn", "h2,http/1.1")


@needs
def test_old_tls_and_plain_http_are_refused(https):
    old = s_client_stderr(https, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert "alert protocol version" in old, "the server itself refuses TLS 1.1"
    assert "Cipher is ECDHE-ECDSA-AES128-GCM-SHA256" in s_client(https, "-servername", "img0.example.com", "-tls1_2")
    with socket.create_connection(("127.0.0.1", https.tls_port), timeout=5) as plain:
        plain.sendall(f"GET /{SAMPLE}.jpg HTTP/1.1\r\nHost: img0.example.com\r\n\r\n".encode())
        answer = plain.recv(4096)
    assert not answer.startswith(b"HTTP/")


def test_a_bad_certificate_pair_stops_startup(tmp_path):
    ca = LoopbackCA(tmp_path)
    chain, _ = ca.issue("one", "a.example.com")
    _, other_key = ca.issue("two", "b.example.com")
    with pytest.raises(ConfigError, match=r"\[tls\] certificates: .*one.pem with .*two.key: key values mismatch"):
        load_config(write_config(tmp_path, {("tls", "listen"): "tcp:0", ("tls", "certificates"): f"{chain}:{other_key}"}))
