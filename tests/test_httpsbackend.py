"""Backends over https: the chain must lead to the configured CA bundle and name the backend, or the hop fails."""

import pytest
import pytest_twisted
from prometheus_client import REGISTRY
from twisted.internet import reactor

from edgeproxy.config import ConfigError, load_config
from edgeproxy.errors import FailureKind, OriginFailure
from edgeproxy.origins.http import ClientService, trust_bundle
from edgeproxy.tokenmap import parse_tokenmap
from tests.configs import write_config
from tests.images import name_of, photo
from tests.shards import pair_origin
from tests.tlscerts import LoopbackCA

IMAGE = photo(64, 48, seed=55)
NAME = name_of(IMAGE)
FILES = {f"/{NAME}.jpg": IMAGE}


@pytest.fixture
def ca(tmp_path):
    return LoopbackCA(tmp_path)


@pytest.fixture
def trusting(ca):
    service = ClientService(reactor, connect_timeout=1.0, per_host=4, trust=trust_bundle(str(ca.path)))
    service.startService()
    yield service
    pytest_twisted.blockon(service.stopService())


def named(*backends):
    """A one-pair map naming each backend as localhost:PORT, so its certificate is checked for `localhost`."""
    return parse_tokenmap([("ffff", " ".join(f"localhost:{b.port.getHost().port}" for b in backends))])


def errors_of(backend) -> float:
    labels = {"backend": f"localhost:{backend.port.getHost().port}", "code": "error"}
    return REGISTRY.get_sample_value("edgeproxy_origin_requests_total", labels) or 0.0


@pytest_twisted.ensureDeferred
async def test_a_backend_with_a_valid_certificate_serves(backends, trusting, ca):
    primary = backends(FILES, tls=ca.issue("localhost", "localhost"))
    origin = pair_origin(trusting, [primary], scheme="https", addresses=named(primary))
    assert await origin.fetch(NAME, "jpg") == IMAGE
    assert primary.hits == 1


@pytest_twisted.ensureDeferred
async def test_a_certificate_for_another_name_is_refused_and_counted(backends, trusting, ca):
    wrong = backends(FILES, tls=ca.issue("wrong", "images.example.com"))
    good = backends(FILES, tls=ca.issue("good", "localhost"))
    origin = pair_origin(trusting, [wrong, good], scheme="https", addresses=named(wrong, good))
    assert await origin.fetch(NAME, "jpg") == IMAGE
    assert (wrong.hits, good.hits) == (0, 1), "no request reaches a backend that failed verification"
    assert errors_of(wrong) == 1


@pytest_twisted.ensureDeferred
async def test_a_chain_to_another_ca_is_refused(backends, trusting, tmp_path):
    stranger = LoopbackCA(tmp_path, name="stranger CA")
    primary = backends(FILES, tls=stranger.issue("localhost", "localhost"))
    origin = pair_origin(trusting, [primary], scheme="https", addresses=named(primary))
    with pytest.raises(OriginFailure) as caught:
        await origin.fetch(NAME, "jpg")
    assert caught.value.kind is FailureKind.UPSTREAM
    assert "certificate verify failed" in caught.value.reason


def test_the_ca_bundle_is_checked_at_start(tmp_path):
    (tmp_path / "empty.pem").write_text("nothing here\n")
    with pytest.raises(ConfigError, match=r"\[origins\] ca_bundle: .*empty.pem holds no PEM certificate"):
        load_config(write_config(tmp_path, {("origins", "ca_bundle"): "empty.pem"}))
    with pytest.raises(ConfigError, match=r"\[shards\] scheme: 'ftp' is not one of http, https"):
        load_config(write_config(tmp_path, {("origins", "chain"): "shards", ("shards", "scheme"): "ftp"}))
