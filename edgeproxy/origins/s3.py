"""
Originals from S3, one origin per region, tried in order after the shards. Requests
are path-style GETs signed with botocore's SigV4 signer and sent over our own pool
by HTTPBackend, so the size cap and the one deadline hold as for a shard. An S3
error answer is a failed hop naming S3's error Code, never a body to keep.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse
from zope.interface import implementer

from edgeproxy.errors import FailureKind, OriginFailure
from edgeproxy.origins import IOrigin, check_content, render_template
from edgeproxy.origins.awscredentials import ICredentialSource
from edgeproxy.origins.guard import OnHeaders
from edgeproxy.origins.http import HTTPBackend, read_body

if TYPE_CHECKING:
    from edgeproxy.config import S3RegionConfig

log = Logger()
_ERROR_DOCUMENT_LIMIT = 16 * 1024
_ERROR_CODE = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")


@implementer(IOrigin)
class S3RegionOrigin:
    """One bucket in one region; `name` (`s3:REGION`) is what logs and metrics show."""

    def __init__(
        self,
        region: S3RegionConfig,
        credentials: ICredentialSource,
        client: HTTPClient,
        clock: IReactorTime,
        timeout: float,
        max_body: int,
        verify: bool = True,
    ):
        self.name = f"s3:{region.name}"
        self._verify = verify
        self._prefix = f"/{region.bucket}/"
        self._key_template = region.key_template
        signing = SigningS3Client(client, credentials, region.region, self.name)
        scheme, _, address = region.endpoint.partition("://")
        self._backend = HTTPBackend(signing, address, clock, timeout, max_body, scheme)  # type: ignore[arg-type]

    def fetch(self, image_hash: str, ext: str, until: float | None = None, on_headers: OnHeaders = lambda: None) -> Deferred[bytes]:
        """`until` and `on_headers` as for HTTPBackend.get."""
        key = render_template(self._key_template, image_hash, ext)
        d = self._backend.get(self._prefix + key, on_headers, until)
        if self._verify:
            d.addCallback(check_content, image_hash, self.name)
        return d.addErrback(self._name_failure)

    def _name_failure(self, failure: Failure) -> Failure:
        """Regions may share an endpoint: a failure names the region, not the address."""
        failure.trap(OriginFailure)
        error = failure.value
        return Failure(OriginFailure(error.kind, self.name, error.reason, error.status))


class SigningS3Client:
    """
    The one method of treq's HTTPClient that HTTPBackend calls, over our shared client:
    signs each request for the exact URL that is sent (HTTPBackend builds it, and keys
    hold only characters a URL carries unescaped), and turns any answer but a 200 into
    an OriginFailure, so an error document never reaches the image path.
    """

    def __init__(self, client: HTTPClient, credentials: ICredentialSource, region: str, where: str):
        self._client = client
        self._credentials = credentials
        self._region = region
        self._where = where

    def get(self, url: str, headers: dict[bytes, bytes], **kwargs: Any) -> Deferred[IResponse]:
        return ensureDeferred(self._get(url, headers, kwargs))

    async def _get(self, url: str, headers: dict[bytes, bytes], kwargs: dict[str, Any]) -> IResponse:
        credentials = await self._credentials.current()
        if credentials is not None:
            headers = {**headers, **sign(url, credentials, self._region)}
        response = await self._client.get(url, headers=headers, **kwargs)
        if response.code == 200:
            return response
        raise await self._refusal(response)

    async def _refusal(self, response: IResponse) -> OriginFailure:
        """
        A 404 NoSuchKey (or a 404 naming no code) is absent: the chain goes on. Anything
        else is a failure of this region, a 404 NoSuchBucket too: the bucket is misnamed
        or gone, which says nothing of the image, and must neither be remembered as a 404
        for negative_ttl nor go unnoticed.
        """
        found = _ERROR_CODE.search(await _error_document(response, self._where))
        code = found[1].decode() if found else None
        reason = f"HTTP {response.code}" + (f" {code}" if code else "")
        if response.code in (401, 403):
            log.warn("{where} refused our request, check its credentials: {reason}", where=self._where, reason=reason)
        absent = response.code == 404 and code in (None, "NoSuchKey")
        if response.code == 404 and not absent:
            log.warn("{where} has no such bucket or endpoint, check its configuration: {reason}", where=self._where, reason=reason)
        kind = FailureKind.NOT_FOUND if absent else FailureKind.UPSTREAM
        return OriginFailure(kind, self._where, reason, response.code)


def sign(url: str, credentials: ReadOnlyCredentials, region: str) -> dict[bytes, bytes]:
    """SigV4 headers for a GET of `url`, with the empty payload's hash S3 asks for."""
    request = AWSRequest(method="GET", url=url)
    S3SigV4Auth(credentials, "s3", region).add_auth(request)
    return {name.encode(): value.encode() for name, value in request.headers.items()}


async def _error_document(response: IResponse, where: str) -> bytes:
    """
    An error answer's document; one too long or cut short only loses its Code. Read so
    that the hop's deadline can cut a document that stalls, and its connection with it.
    """
    try:
        return await read_body(response, where, _ERROR_DOCUMENT_LIMIT)
    except OriginFailure:
        return b""  # the status decides; the document only names the reason
