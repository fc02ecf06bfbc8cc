"""S3 regions against a real S3 server (moto) that checks signatures and permissions."""

import os
import sys

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.threadpool import ThreadPool

from edgeproxy.errors import FailureKind, OriginFailure
from edgeproxy.origins.awscredentials import (
    AnonymousCredentials,
    ChainCredentials,
    StaticCredentials,
)
from edgeproxy.origins.fallback import FallbackOrigin
from edgeproxy.origins.s3 import S3RegionOrigin
from tests.edge import Edge, pair_map
from tests.images import name_of, photo

IMAGE = photo(seed=5)
NAME = name_of(IMAGE)
KEY = f"{NAME[:6]}/{NAME}.jpg"


def region(s3, clients, name, source=None, max_body=1 << 20, timeout=5.0, **changes):
    config = s3.config(name, **changes)
    source = source or StaticCredentials(config.access_key, config.secret_key)
    return S3RegionOrigin(config, source, clients.client, reactor, timeout, max_body)


def chain(s3, clients, east=None):
    return FallbackOrigin([east or region(s3, clients, "east"), region(s3, clients, "west")], reactor, 10.0)


async def fetch_failure(origin, name=NAME):
    with pytest.raises(OriginFailure) as caught:
        await origin.fetch(name, "jpg")
    return caught.value


@pytest.fixture
def logged():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield lambda: [formatEvent(event) for event in events]
    globalLogPublisher.removeObserver(events.append)


@pytest_twisted.ensureDeferred
async def test_found_in_the_first_region_with_a_signed_request(s3, clients):
    s3.server.put(s3.east, KEY, IMAGE)
    assert await chain(s3, clients).fetch(NAME, "jpg") == IMAGE
    (seen,) = s3.server.gets(s3.east)
    assert seen.path == f"/{s3.east}/{KEY}"
    assert seen.authorization.startswith(f"AWS4-HMAC-SHA256 Credential={s3.reader.access_key}/")
    assert s3.server.gets(s3.west) == []


@pytest_twisted.ensureDeferred
async def test_missing_in_the_first_region_found_in_the_second(s3, clients):
    s3.server.put(s3.west, KEY, IMAGE)
    assert await chain(s3, clients).fetch(NAME, "jpg") == IMAGE
    assert (len(s3.server.gets(s3.east)), len(s3.server.gets(s3.west))) == (1, 1)


@pytest_twisted.ensureDeferred
async def test_missing_everywhere_is_not_found_with_the_s3_code(s3, clients):
    failure = await fetch_failure(chain(s3, clients))
    assert failure.kind is FailureKind.NOT_FOUND
    assert "s3:east: HTTP 404 NoSuchKey" in failure.reason
    assert "s3:west: HTTP 404 NoSuchKey" in failure.reason


@pytest.mark.parametrize(
    "wrong, code",
    [({"secret_key": "not-the-secret"}, "SignatureDoesNotMatch"), ({"access_key": "AKIANOSUCHKEY"}, "InvalidAccessKeyId")],
)
@pytest_twisted.ensureDeferred
async def test_wrong_credentials_are_a_logged_failure_and_the_next_region_serves(s3, clients, logged, wrong, code):
    s3.server.put(s3.east, KEY, IMAGE)
    s3.server.put(s3.west, KEY, IMAGE)
    east = region(s3, clients, "east", **wrong)
    failure = await fetch_failure(east)
    assert (failure.kind, failure.where, failure.reason) == (FailureKind.UPSTREAM, "s3:east", f"HTTP 403 {code}")
    assert await chain(s3, clients, east).fetch(NAME, "jpg") == IMAGE
    assert f"s3:east refused our request, check its credentials: HTTP 403 {code}" in logged()


@pytest_twisted.ensureDeferred
async def test_a_bucket_that_does_not_exist_is_a_logged_failure_of_the_region(s3, clients, logged):
    """
    A misnamed or deleted bucket answers 404 NoSuchBucket: it was read as "image absent",
    so the chain answered 404 for an image that may well exist, remembered it for
    negative_ttl, and logged nothing at all.
    """
    s3.server.put(s3.west, KEY, IMAGE)
    east = region(s3, clients, "east", bucket="images-no-such-bucket")
    failure = await fetch_failure(east)
    assert (failure.kind, failure.reason) == (FailureKind.UPSTREAM, "HTTP 404 NoSuchBucket")
    assert await chain(s3, clients, east).fetch(NAME, "jpg") == IMAGE
    assert "s3:east has no such bucket or endpoint, check its configuration: HTTP 404 NoSuchBucket" in logged()


@pytest_twisted.ensureDeferred
async def test_an_error_document_is_never_cached(tmp_path, s3):
    """Denied first (403 AccessDenied: 502), allowed then: the next request gets the image."""
    s3.server.put(s3.east, KEY, IMAGE)
    denied = s3.server.user(actions=None)
    regions = s3.ini("east", access_key=denied.access_key, secret_key=denied.secret_key)
    edge = Edge(tmp_path, {**regions, ("origins", "chain"): "s3"})
    try:
        response = await edge.get(f"/{NAME}.jpg")
        assert (response.code, await response.content()) == (502, b"origin failed\n")
        s3.server.allow(denied.user, ["s3:GetObject"])
        response = await edge.get(f"/{NAME}.jpg")
        assert (response.code, await response.content()) == (200, IMAGE)
        assert response.headers.getRawHeaders("X-Cache") == ["MISS"]
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_a_body_over_the_cap_is_refused(s3, clients):
    big = photo(1200, 900, seed=6)
    s3.server.put(s3.east, f"{name_of(big)[:6]}/{name_of(big)}.jpg", big)
    failure = await fetch_failure(region(s3, clients, "east", max_body=len(big) // 2), name_of(big))
    assert failure.kind is FailureKind.UPSTREAM
    assert f"over {len(big) // 2}" in failure.reason


@pytest_twisted.ensureDeferred
async def test_an_object_that_does_not_match_its_name_is_refused_and_the_next_region_serves(s3, clients):
    corrupt = bytearray(IMAGE)
    corrupt[len(corrupt) // 2] ^= 0xFF
    s3.server.put(s3.east, KEY, bytes(corrupt))
    s3.server.put(s3.west, KEY, IMAGE)
    failure = await fetch_failure(region(s3, clients, "east"))
    assert (failure.kind, failure.reason) == (FailureKind.UPSTREAM, "content does not match its SHA-1 name")
    assert await chain(s3, clients).fetch(NAME, "jpg") == IMAGE


@pytest.mark.parametrize("mode", ["500", "truncate", "hang", "stopped"])
@pytest_twisted.ensureDeferred
async def test_a_broken_endpoint_fails_and_the_next_region_serves(s3, clients, backends, mode):
    broken = backends({f"/{s3.east}/{KEY}": IMAGE})
    if mode == "stopped":
        await broken.stop()
    else:
        broken.set_mode(mode)
    s3.server.put(s3.west, KEY, IMAGE)
    east = region(s3, clients, "east", timeout=0.5, endpoint=f"http://{broken.address}")
    failure = await fetch_failure(east)
    assert failure.kind is (FailureKind.TIMEOUT if mode == "hang" else FailureKind.UPSTREAM)
    assert await chain(s3, clients, east).fetch(NAME, "jpg") == IMAGE


@pytest_twisted.ensureDeferred
async def test_an_error_document_that_stalls_is_cut_off_with_its_connection(s3, clients, backends):
    """
    An error answer whose document never ends: the hop timed out, but the read of the
    document could not be cancelled, so each such request left one more connection to
    the endpoint open for as long as the endpoint kept it (forever here).
    """
    endpoint = backends({})

    def stalled_error(request):
        request.setResponseCode(503)
        request.setHeader(b"Content-Length", b"1000")
        request.write(b"<Error><Code>SlowDown</Code>")
        return 1  # NOT_DONE_YET

    endpoint.resource._serve = stalled_error
    east = region(s3, clients, "east", timeout=0.3, endpoint=f"http://{endpoint.address}")
    for _ in range(3):
        assert (await fetch_failure(east)).kind is FailureKind.TIMEOUT
    await deferLater(reactor, 0.2, lambda: None)
    assert (endpoint.hits, len(endpoint.factory.protocols)) == (3, 0)


@pytest_twisted.ensureDeferred
async def test_the_key_template_is_signed_as_sent(s3, clients):
    key = f"img~v1/{NAME[:2]}/{NAME[:4]}/{NAME}_o.jpg"
    s3.server.put(s3.east, key, IMAGE)
    east = region(s3, clients, "east", key_template="img~v1/{p2}/{p4}/{hash}_o.{ext}")
    assert await east.fetch(NAME, "jpg") == IMAGE
    assert [seen.path for seen in s3.server.gets(s3.east)] == [f"/{s3.east}/{key}"]


@pytest_twisted.ensureDeferred
async def test_anonymous_requests_are_unsigned_and_read_public_objects_only(s3, clients):
    """moto checks the ACL of unsigned requests itself, but 500s on them with its IAM checks on."""
    s3.server.enforce_auth(False)
    s3.server.put(s3.east, KEY, IMAGE, acl="public-read")
    private = photo(seed=7)
    s3.server.put(s3.east, f"{name_of(private)[:6]}/{name_of(private)}.jpg", private)
    east = region(s3, clients, "east", AnonymousCredentials(), credentials="anonymous", access_key="", secret_key="")
    assert await east.fetch(NAME, "jpg") == IMAGE
    failure = await fetch_failure(east, name_of(private))
    assert (failure.kind, failure.reason) == (FailureKind.UPSTREAM, "HTTP 403")
    assert [seen.authorization for seen in s3.server.gets(s3.east)] == [None, None]


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """botocore's chain sees only what a test sets: no files of this host, no instance metadata."""
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.fixture
def credential_pool():
    pool = ThreadPool(minthreads=1, maxthreads=1, name="test-credentials")
    pool.start()
    yield pool
    pool.stop()


def chain_region(s3, clients, source):
    return region(s3, clients, "east", source, credentials="chain", access_key="", secret_key="")


@pytest_twisted.ensureDeferred
async def test_chain_with_nothing_to_find_fails_then_finds_keys_set_later(s3, clients, aws_env, credential_pool):
    s3.server.put(s3.east, KEY, IMAGE)
    east = chain_region(s3, clients, ChainCredentials(reactor, credential_pool))
    failure = await fetch_failure(east)
    assert (failure.kind, failure.reason) == (FailureKind.UPSTREAM, "the AWS credential chain found no credentials")
    aws_env.setenv("AWS_ACCESS_KEY_ID", s3.reader.access_key)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", s3.reader.secret_key)
    assert await east.fetch(NAME, "jpg") == IMAGE


CREDENTIAL_PROCESS = """
import datetime, json, os, sys, time
folder, minutes, key, secret = sys.argv[1:]
with open(os.path.join(folder, "runs"), "a") as log:
    log.write("start\\n")
deadline = time.monotonic() + 10
while not os.path.exists(os.path.join(folder, "gate")):
    if time.monotonic() > deadline:
        sys.exit("the gate never opened")
    time.sleep(0.01)
if os.path.exists(os.path.join(folder, "fail")):
    sys.exit("no credentials today")
expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=int(minutes))
print(json.dumps({"Version": 1, "AccessKeyId": key, "SecretAccessKey": secret, "Expiration": expiry.isoformat()}))
with open(os.path.join(folder, "runs"), "a") as log:
    log.write("done\\n")
"""


class CredentialProcess:
    """
    A real credential_process in the AWS config file: it logs its runs, waits for a
    `gate` file, fails while a `fail` file exists, and hands out keys that expire in
    `minutes`. Anything under 15 is inside botocore's advisory window: every use refreshes.
    """

    def __init__(self, folder, keys, minutes):
        self.folder = folder
        (folder / "process.py").write_text(CREDENTIAL_PROCESS)
        command = f"{sys.executable} {folder / 'process.py'} {folder} {minutes} {keys.access_key} {keys.secret_key}"
        (folder / "aws-config").write_text(f"[default]\ncredential_process = {command}\n")

    def runs(self):
        log = self.folder / "runs"
        return log.read_text().split() if log.exists() else []

    def open_gate(self):
        (self.folder / "gate").touch()

    def close_gate(self):
        (self.folder / "gate").unlink()

    def fail(self):
        (self.folder / "fail").touch()


async def wait_until(check, seconds=10.0):
    for _ in range(int(seconds / 0.01)):
        if check():
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("condition never met")


@pytest_twisted.ensureDeferred
async def test_chain_resolves_off_the_reactor_thread_and_refreshes_in_the_background(
    s3, clients, aws_env, credential_pool, tmp_path
):
    """The process waits for a file only the reactor writes: resolving on the reactor thread would never see it."""
    process = CredentialProcess(tmp_path, s3.reader, minutes=12)
    s3.server.put(s3.east, KEY, IMAGE)
    east = chain_region(s3, clients, ChainCredentials(reactor, credential_pool))

    first = east.fetch(NAME, "jpg")
    await wait_until(lambda: process.runs() == ["start"])
    assert not first.called
    process.open_gate()
    assert await first == IMAGE
    resolved = len(process.runs())

    process.close_gate()
    assert await east.fetch(NAME, "jpg") == IMAGE
    await wait_until(lambda: len(process.runs()) == resolved + 1)
    assert process.runs()[-1] == "start"
    process.open_gate()
    await wait_until(lambda: process.runs()[-1] == "done")
    assert await east.fetch(NAME, "jpg") == IMAGE


@pytest_twisted.ensureDeferred
async def test_a_failed_background_refresh_is_logged_and_the_current_keys_still_serve(
    s3, clients, aws_env, credential_pool, tmp_path, logged
):
    """Keys with 5 minutes left are in botocore's mandatory window: a failed refresh raises."""
    process = CredentialProcess(tmp_path, s3.reader, minutes=5)
    process.open_gate()
    s3.server.put(s3.east, KEY, IMAGE)
    east = chain_region(s3, clients, ChainCredentials(reactor, credential_pool))
    assert await east.fetch(NAME, "jpg") == IMAGE
    process.fail()
    assert await east.fetch(NAME, "jpg") == IMAGE
    await wait_until(lambda: any("refreshing AWS credentials failed" in line for line in logged()))
    assert "no credentials today" in next(line for line in logged() if "refreshing AWS credentials failed" in line)
    assert await east.fetch(NAME, "jpg") == IMAGE


@pytest_twisted.ensureDeferred
async def test_the_status_page_knows_an_s3_regions_time_to_headers(tmp_path, s3):
    """README: /status shows every backend "with its recent time to headers"; an S3 region's stayed a dash."""
    images = [photo(16, 16, seed=400 + i) for i in range(20)]  # the samples a LatencyWindow needs
    for image in images:
        s3.server.put(s3.east, f"{name_of(image)[:6]}/{name_of(image)}.jpg", image)
    edge = Edge(tmp_path, {**s3.ini("east"), ("origins", "chain"): "s3"})
    try:
        for image in images:
            response = await edge.get(f"/{name_of(image)}.jpg")
            assert (response.code, await response.content()) == (200, image)
        (east,) = [guard for guard in edge.parts.backends if guard.name == "s3:east"]
        assert east.latency.measured, "20 answers from s3:east, and its time to headers is still unknown"
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_a_hung_shard_pair_still_leaves_s3_its_share_of_the_deadline(tmp_path, s3, backends):
    """
    The default timeout (10 s a hop) and deadline (20 s the chain), scaled by 1/20: a pair
    whose two members accept and never answer used the whole deadline once the hedge
    burst was spent, so S3, which holds every image, was never asked (504 x3 after 200 x5);
    and once both members were down, panic mode kept asking them before S3.
    """
    images = [photo(48, 32, seed=300 + i) for i in range(8)]
    for image in images:
        s3.server.put(s3.east, f"{name_of(image)[:6]}/{name_of(image)}.jpg", image)
    primary, secondary = backends({}), backends({})
    primary.set_mode("hang")
    secondary.set_mode("hang")
    changes = {**s3.ini("east"), ("origins", "chain"): "shards s3", ("origins", "timeout"): "500ms", ("origins", "deadline"): "1s"}
    edge = Edge(tmp_path, changes, tokenmap=pair_map(primary, secondary))
    try:
        codes = []
        for image in images:
            response = await edge.get(f"/{name_of(image)}.jpg")
            await response.content()
            codes.append(response.code)
        assert codes == [200] * len(images)
        assert (primary.hits, secondary.hits) == (5, 5), "down_after = 5, then both are skipped for S3"
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_shards_down_then_s3_region_two_serves_and_memory_hits(tmp_path, s3, backends):
    s3.server.put(s3.west, KEY, IMAGE)
    primary, secondary = backends({f"/{NAME}.jpg": IMAGE}), backends({f"/{NAME}.jpg": IMAGE})
    await primary.stop()
    await secondary.stop()
    edge = Edge(tmp_path, {**s3.ini(), ("origins", "chain"): "shards s3"}, tokenmap=pair_map(primary, secondary))
    try:
        for expected in ("MISS", "HIT-MEMORY"):
            response = await edge.get(f"/{NAME}.jpg")
            assert (response.code, await response.content()) == (200, IMAGE)
            assert response.headers.getRawHeaders("X-Cache") == [expected]
        assert (primary.hits, secondary.hits) == (0, 0)
        assert (len(s3.server.gets(s3.east)), len(s3.server.gets(s3.west))) == (1, 1)
    finally:
        await edge.stop()
