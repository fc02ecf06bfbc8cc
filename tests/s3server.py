"""
A real S3 for the tests: moto's server on 127.0.0.1 port 0, in a thread, with its
IAM checks switched on, so a request signed wrongly or with a key that lacks the
permission is refused with a 403 and S3's error document, as AWS does. Every
request it receives is recorded, so tests can count what reached S3.

moto checks signatures and IAM policies once its "initial no-auth action count" is
used up; in server mode `POST /moto-api/reset-auth` sets that count (0: check from
now on, inf: never). The setting is process-wide, so the server restores it on stop.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import urllib.request
from dataclasses import dataclass

import botocore.session
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    create_backend_app,
)
from werkzeug.serving import make_server

from edgeproxy.config import S3RegionConfig

READ = ["s3:GetObject", "s3:ListBucket"]


@dataclass(frozen=True)
class Keys:
    user: str
    access_key: str
    secret_key: str


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    authorization: str | None


class S3Server:
    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.requests: list[Seen] = []
        self._names = itertools.count(1)
        self._regions: dict[str, str] = {}
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", 0, self._recorded(app), threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        self.enforce_auth(False)
        admin = self._user(botocore.session.Session().create_client("iam", **self._client_args(Keys("setup", "x", "x"))), ["*"])
        self._iam = self._client("iam", admin, "us-east-1")
        self._s3 = {region: self._client("s3", admin, region) for region in ("us-east-1", "eu-west-1")}
        self.enforce_auth(True)

    def _recorded(self, app):
        def record(environ, start_response):
            seen = Seen(environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("HTTP_AUTHORIZATION"))
            self.requests.append(seen)
            return app(environ, start_response)

        return record

    def _client_args(self, keys: Keys, region: str = "us-east-1") -> dict:
        return {
            "region_name": region,
            "endpoint_url": self.endpoint,
            "aws_access_key_id": keys.access_key,
            "aws_secret_access_key": keys.secret_key,
        }

    def _client(self, service: str, keys: Keys, region: str):
        return botocore.session.Session().create_client(service, **self._client_args(keys, region))

    def enforce_auth(self, on: bool) -> None:
        request = urllib.request.Request(
            self.endpoint + "/moto-api/reset-auth", data=b"0" if on else b"inf", headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(request, timeout=10).close()

    def _user(self, iam, actions: list[str] | None) -> Keys:
        name = f"user{next(self._names)}"
        iam.create_user(UserName=name)
        if actions:
            self.allow(name, actions, iam)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return Keys(name, key["AccessKeyId"], key["SecretAccessKey"])

    def user(self, actions: list[str] | None = READ) -> Keys:
        """A new IAM user allowed `actions` on every resource (none: every request is denied)."""
        return self._user(self._iam, actions)

    def allow(self, user: str, actions: list[str], iam=None) -> None:
        statement = {"Effect": "Allow", "Action": actions, "Resource": "*"}
        document = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
        (iam or self._iam).put_user_policy(UserName=user, PolicyName="access", PolicyDocument=document)

    def bucket(self, region: str) -> str:
        name = f"images-{next(self._names)}"
        config = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        self._s3[region].create_bucket(Bucket=name, **config)
        self._regions[name] = region
        return name

    def put(self, bucket: str, key: str, body: bytes, acl: str = "private") -> None:
        self._s3[self._regions[bucket]].put_object(Bucket=bucket, Key=key, Body=body, ACL=acl)

    def gets(self, bucket: str) -> list[Seen]:
        """The GETs of objects in `bucket` that reached S3."""
        return [seen for seen in self.requests if seen.method == "GET" and seen.path.startswith(f"/{bucket}/")]

    def stop(self) -> None:
        self.enforce_auth(False)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@dataclass
class Regions:
    """Two buckets as two regions, and a key allowed to read them."""

    server: S3Server
    east: str
    west: str
    reader: Keys

    def config(self, name: str, **changes: str) -> S3RegionConfig:
        bucket, region = (self.east, "us-east-1") if name == "east" else (self.west, "eu-west-1")
        settings = {
            "name": name,
            "endpoint": self.server.endpoint,
            "bucket": bucket,
            "region": region,
            "credentials": "static",
            "access_key": self.reader.access_key,
            "secret_key": self.reader.secret_key,
            "key_template": "{p6}/{hash}.{ext}",
            **changes,
        }
        return S3RegionConfig(**settings)

    def ini(self, *names: str, **changes: str) -> dict[tuple[str, str], str]:
        """Regions (both by default) as config file changes for tests/configs.write_config."""
        names = names or ("east", "west")
        settings = {("s3", "regions"): " ".join(names)}
        for name in names:
            region = self.config(name, **changes)
            for key in ("endpoint", "bucket", "region", "credentials", "access_key", "secret_key"):
                settings[(f"s3:{name}", key)] = getattr(region, key)
        return settings
