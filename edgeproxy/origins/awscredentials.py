"""
The AWS credentials an S3 region signs with: keys from the config, none (a public
bucket), or botocore's standard chain. The chain reads files, environment and
instance metadata, so it is resolved in a thread, never on the reactor thread,
and kept until shortly before it expires.
"""

from __future__ import annotations

import botocore.session
from botocore.credentials import Credentials, ReadOnlyCredentials
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer

from edgeproxy.errors import FailureKind, OriginFailure
from edgeproxy.singleflight import SingleFlight

log = Logger()
# Requests wait for fresh credentials only this close to expiry; before that (from
# botocore's advisory window, 15 minutes ahead) they are refreshed in the background.
_WAIT_WITHIN_SECONDS = 60


class ICredentialSource(Interface):
    """Where the keys for signing a request come from."""

    def current() -> Deferred[ReadOnlyCredentials | None]:
        """Fire with keys valid now, or None to send the request unsigned."""


@implementer(ICredentialSource)
class AnonymousCredentials:
    """A public bucket: requests go unsigned."""

    def current(self) -> Deferred[ReadOnlyCredentials | None]:
        return succeed(None)


@implementer(ICredentialSource)
class StaticCredentials:
    """An access key and secret from the configuration file."""

    def __init__(self, access_key: str, secret_key: str):
        self._credentials = ReadOnlyCredentials(access_key, secret_key, None)

    def current(self) -> Deferred[ReadOnlyCredentials | None]:
        return succeed(self._credentials)


@implementer(ICredentialSource)
class ChainCredentials:
    """
    botocore's standard chain (environment, config files, container and instance
    metadata, credential_process...), resolved once in `pool` and shared by every
    region that uses it. Temporary credentials are refreshed in the background from
    botocore's advisory window on; concurrent requests share one resolution.
    """

    name = "AWS credential chain"

    def __init__(self, reactor: IReactorFromThreads, pool: ThreadPool):
        self._reactor = reactor
        self._pool = pool
        self._source: Credentials | None = None
        self._frozen: ReadOnlyCredentials | None = None
        self._resolving: SingleFlight[ReadOnlyCredentials] = SingleFlight()

    def current(self) -> Deferred[ReadOnlyCredentials | None]:
        if self._frozen is None or _expires_within(self._source, _WAIT_WITHIN_SECONDS):
            return self._resolve()
        if _expires_within(self._source, None):
            self._resolve().addErrback(self._refresh_failed)
        return succeed(self._frozen)

    def _resolve(self) -> Deferred[ReadOnlyCredentials]:
        return self._resolving.run(None, self._start)

    def _start(self) -> Deferred[ReadOnlyCredentials]:
        d = deferToThreadPool(self._reactor, self._pool, _load, self._source)
        return d.addCallbacks(self._keep, self._as_origin_failure)

    def _keep(self, loaded: tuple[Credentials, ReadOnlyCredentials]) -> ReadOnlyCredentials:
        self._source, self._frozen = loaded
        return self._frozen

    def _as_origin_failure(self, failure: Failure) -> Failure:
        reason = failure.getErrorMessage() or failure.type.__name__
        return Failure(OriginFailure(FailureKind.UPSTREAM, self.name, reason))

    def _refresh_failed(self, failure: Failure) -> None:
        log.warn("refreshing AWS credentials failed, the current ones still serve: {reason}", reason=failure.value)


def _load(source: Credentials | None) -> tuple[Credentials, ReadOnlyCredentials]:
    """In a thread: find the credentials (first time), then freeze them, refreshing if due."""
    if source is None:
        source = botocore.session.Session().get_credentials()
        if source is None:
            raise LookupError("the AWS credential chain found no credentials")
    return source, source.get_frozen_credentials()


def _expires_within(source: Credentials | None, seconds: float | None) -> bool:
    """Static keys never expire; None asks botocore's own advisory window."""
    refresh_needed = getattr(source, "refresh_needed", None)
    return refresh_needed is not None and refresh_needed(seconds)
