"""The S3 adapter: one long-lived aioboto3 client per process, opened and closed by the composition root.

What capabilities get from it: presigned PUTs bound to the bytes (object key, exact `Content-Length` and
`x-amz-checksum-sha256`, so the store itself refuses any other body or length), presigned GETs, `get`
of a whole small object, `head`
with the SHA-256 the store computed (`x-amz-checksum-mode: ENABLED`), copy, delete and listing.

`head` is on every save confirm and chunk-publish check, so it skips botocore: a SigV4-signed HEAD (the
same hand-made signature as the presigned URLs, server/core/s3_presign.py) over one pooled aiohttp
session of the process. Through aiobotocore the same HEAD cost about 3.4 ms of CPU and 13 ms of wall time
here (its request pipeline: endpoint rules, event hooks, signing, response parsing), by hand 0.7 ms and
7 ms. Everything else keeps aiobotocore.

Presigned URLs are bearer credentials: nothing here logs them, and callers must not either. A store that
cannot be reached (refused connection, timeout, a 5xx answer) raises `StoreUnavailable` (UNAVAILABLE,
which clients retry), never INTERNAL; an absent object is `None` from `head`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import aioboto3
import aiohttp
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from server.core import context
from server.core.clock import utc_now
from server.core.config import Settings
from server.core.errors import Unavailable
from server.core.s3_presign import Presigner

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
# What a HEAD signs and sends: without it the store does not report the object's SHA-256.
_CHECKSUM_MODE = {"x-amz-checksum-mode": "ENABLED"}
# A HEAD's signature is used at once; a minute covers any clock skew between us and the store.
_HEAD_SIGNATURE_SECONDS = 60


class StoreUnavailable(Unavailable):
    """The object store did not answer (or answered 5xx)."""

    def __init__(self, reason: str = "UNAVAILABLE"):
        super().__init__("the object store is unavailable; retry later", reason=reason)


@dataclass(frozen=True, slots=True)
class PresignedUpload:
    """A PUT the holder may make once per URL lifetime: exactly these headers, exactly those bytes."""

    url: str
    headers: dict[str, str]
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class PresignedDownload:
    url: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class StoredObject:
    size: int
    # Lowercase hex of the SHA-256 the store holds for the object; None when it keeps none (an object
    # stored without a SHA-256 checksum).
    sha256_hex: str | None


def sha256_header(sha256_hex: str) -> str:
    """The `x-amz-checksum-sha256` value of a hex digest: base64 of the 32 raw bytes."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def _hex_of_header(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True).hex()
    except ValueError:
        return None


@contextlib.asynccontextmanager
async def _store_call(seconds: float) -> AsyncIterator[None]:
    """One call to the store, over within `seconds` (S3_TIMEOUT_SECONDS, retries included; sooner when the
    RPC must answer sooner): a store that hangs is StoreUnavailable like one that is down. Dependency
    failures become StoreUnavailable; a 4xx (a wrong request of ours) propagates."""
    try:
        async with asyncio.timeout(context.time_left(seconds)):
            yield
    except TimeoutError as exc:
        raise StoreUnavailable() from exc
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status >= 500:
            raise StoreUnavailable() from exc
        raise
    except (BotoCoreError, aiohttp.ClientError) as exc:  # connection refused/closed, connect/read timeouts
        raise StoreUnavailable() from exc


class ObjectStore:
    """One bucket of an S3-compatible store. Build it anywhere (no I/O), `open()` once, `close()` at exit."""

    def __init__(self, settings: Settings):
        self.bucket = settings.s3_bucket
        self._timeout = settings.s3_timeout_seconds
        self._attempts = max(1, settings.s3_max_attempts)
        self._http_timeout = aiohttp.ClientTimeout(
            sock_connect=settings.s3_connect_timeout_seconds, sock_read=settings.s3_read_timeout_seconds
        )
        self._pool_size = settings.s3_max_pool_connections
        self._http: aiohttp.ClientSession | None = None
        self._session = aioboto3.Session()
        self._client_args = {
            "endpoint_url": settings.s3_endpoint_url,
            "aws_access_key_id": settings.s3_access_key_id,
            "aws_secret_access_key": settings.s3_secret_access_key,
            "region_name": settings.s3_region,
            "config": Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=settings.s3_connect_timeout_seconds,
                read_timeout=settings.s3_read_timeout_seconds,
                retries={"mode": "standard", "max_attempts": settings.s3_max_attempts},
                max_pool_connections=settings.s3_max_pool_connections,
                # Checksums only where we ask for them: a presigned PUT must carry exactly the headers it
                # was signed with, and the SHA-256 is the one we bind it to.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        }
        self._exit = contextlib.AsyncExitStack()
        self._client = None
        self._presigner = Presigner(
            settings.s3_endpoint_url,
            settings.s3_bucket,
            settings.s3_region,
            settings.s3_access_key_id,
            settings.s3_secret_access_key,
        )

    async def open(self) -> ObjectStore:
        if self._client is None:
            self._client = await self._exit.enter_async_context(
                self._session.client("s3", **self._client_args)
            )
            self._http = await self._exit.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=self._pool_size),
                    timeout=self._http_timeout,
                    auto_decompress=False,
                )
            )
        return self

    async def close(self) -> None:
        await self._exit.aclose()
        self._client = self._http = None

    async def __aenter__(self) -> ObjectStore:
        return await self.open()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def client(self):
        if self._client is None:
            raise RuntimeError("ObjectStore.open() was not called")
        return self._client

    def presign_put(self, key: str, *, size: int, sha256_hex: str, expires_in: int) -> PresignedUpload:
        """A PUT URL for `key` that the store accepts only with this exact length and SHA-256."""
        now = utc_now().replace(microsecond=0)
        headers = {"Content-Length": str(size), "x-amz-checksum-sha256": sha256_header(sha256_hex)}
        url = self._presigner.url(key, expires_in=expires_in, now=now, method="PUT", headers=headers)
        return PresignedUpload(url=url, headers=headers, expires_at=now + timedelta(seconds=expires_in))

    def presign_get(self, key: str, *, expires_in: int) -> PresignedDownload:
        [download] = self.presign_gets([key], expires_in=expires_in)
        return download

    def presign_gets(self, keys: list[str], *, expires_in: int) -> list[PresignedDownload]:
        """Presigned GETs of many objects at once, all valid `expires_in` seconds from now: the same URLs
        presign_get makes, about 15x cheaper each (server/core/s3_presign.py)."""
        now = utc_now().replace(microsecond=0)
        expires_at = now + timedelta(seconds=expires_in)
        sign = self._presigner.url
        return [PresignedDownload(sign(key, expires_in=expires_in, now=now), expires_at) for key in keys]

    async def head(self, key: str) -> StoredObject | None:
        """Size and stored SHA-256 of `key`; None when there is no such object. A refused connection or a
        5xx is tried again (S3_MAX_ATTEMPTS in all, as botocore would), all within S3_TIMEOUT_SECONDS."""
        if self._http is None:
            raise RuntimeError("ObjectStore.open() was not called")
        async with _store_call(self._timeout):
            for attempt in range(1, self._attempts + 1):
                url = self._presigner.url(
                    key,
                    expires_in=_HEAD_SIGNATURE_SECONDS,
                    now=utc_now(),
                    method="HEAD",
                    headers=_CHECKSUM_MODE,
                )
                try:
                    async with self._http.head(url, headers=_CHECKSUM_MODE, allow_redirects=False) as reply:
                        status, headers = reply.status, reply.headers
                except aiohttp.ClientConnectionError:
                    if attempt == self._attempts:
                        raise
                    continue
                if status < 500 or attempt == self._attempts:
                    break
        if status == 404:
            return None
        if status >= 500:
            raise StoreUnavailable()
        if status != 200:  # a request of ours the store refused (credentials, clock): not the caller's fault
            raise RuntimeError(f"the object store answered HEAD with HTTP {status}")
        return StoredObject(
            size=int(headers["Content-Length"]),
            sha256_hex=_hex_of_header(headers.get("x-amz-checksum-sha256")),
        )

    async def get(self, key: str) -> bytes | None:
        """The whole object (for small ones, such as a chunk); None when there is no such object."""
        async with _store_call(self._timeout):
            try:
                reply = await self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _NOT_FOUND_CODES:
                    return None
                raise
            async with reply["Body"] as body:
                return await body.read()

    async def put(self, key: str, body: bytes, *, sha256_hex: str) -> None:
        """A direct PUT with the SHA-256 checked by the store (for operators, tests and the bench)."""
        async with _store_call(self._timeout):
            await self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ChecksumSHA256=sha256_header(sha256_hex)
            )

    async def copy(self, source_key: str, dest_key: str) -> None:
        """Server-side copy; the copy keeps a SHA-256 checksum so `head` can verify it."""
        async with _store_call(self._timeout):
            await self.client.copy_object(
                Bucket=self.bucket,
                Key=dest_key,
                CopySource={"Bucket": self.bucket, "Key": source_key},
                ChecksumAlgorithm="SHA256",
            )

    async def delete(self, key: str) -> None:
        """Deletes `key`; deleting an absent object succeeds (S3 semantics), so retries are safe."""
        async with _store_call(self._timeout):
            await self.client.delete_object(Bucket=self.bucket, Key=key)

    async def keys(self, prefix: str) -> list[str]:
        """Every key under `prefix`, sorted."""
        found: list[str] = []
        async with _store_call(self._timeout):
            paginator = self.client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                found.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(found)
