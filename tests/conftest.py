from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from edgeproxy.origins.http import ClientService
from tests.images import name_of, photo
from tests.loopback import Backend
from tests.s3server import Regions, S3Server


@pytest.fixture
def backends():
    """Make loopback backends; every one still listening is stopped after the test."""
    made: list[Backend] = []

    def make(files: dict[str, bytes] | None = None, tls=None) -> Backend:
        backend = Backend(files, tls)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        if backend.running:
            pytest_twisted.blockon(backend.stop())


@pytest.fixture
def clients():
    """The origins' HTTP client over its own connection pool, closed after the test."""
    service = ClientService(reactor, connect_timeout=1.0, per_host=4)
    service.startService()
    yield service
    pytest_twisted.blockon(service.stopService())


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server):
    """Two fresh buckets on the real S3 server, as two regions, with signatures checked."""
    s3_server.enforce_auth(True)
    return Regions(s3_server, s3_server.bucket("us-east-1"), s3_server.bucket("eu-west-1"), s3_server.user())


@pytest.fixture
def originals(tmp_path):
    """40 small distinct photos named by their SHA-1 in tmp_path/originals (a local origin's root)."""
    folder = tmp_path / "originals"
    folder.mkdir()
    names = []
    for seed in range(40):
        data = photo(160, 120, seed=seed)
        names.append(name_of(data))
        (folder / f"{names[-1]}.jpg").write_bytes(data)
    return names
