"""The S3 adapter against the stack's SeaweedFS: presigned PUTs are bound to the bytes, head reports the
stored SHA-256, and an unreachable store is UNAVAILABLE."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import uuid

import grpc
import httpx
import pytest

from server.core.s3 import ObjectStore, StoreUnavailable
from tests.support.processes import free_port


@pytest.fixture
async def store(settings):
    async with ObjectStore(settings) as opened:
        yield opened


def _key() -> str:
    return f"tests/s3/{uuid.uuid4()}"


async def test_a_presigned_put_accepts_exactly_the_bytes_it_was_signed_for(store):
    key, body = _key(), os.urandom(4096)
    digest = hashlib.sha256(body).hexdigest()
    upload = store.presign_put(key, size=len(body), sha256_hex=digest, expires_in=60)
    async with httpx.AsyncClient() as http:
        tampered = await http.put(upload.url, content=os.urandom(4096), headers=upload.headers)
        shorter = await http.put(
            upload.url, content=body[:-1], headers={**upload.headers, "Content-Length": str(len(body) - 1)}
        )
        assert (tampered.status_code, shorter.status_code) == (400, 403)
        assert "BadDigest" in tampered.text
        assert await store.head(key) is None

        accepted = await http.put(upload.url, content=body, headers=upload.headers)
        assert accepted.status_code == 200, accepted.text
        stored = await store.head(key)
        assert (stored.size, stored.sha256_hex) == (len(body), digest)

        download = store.presign_get(key, expires_in=60)
        fetched = await http.get(download.url)
    assert fetched.content == body
    await store.delete(key)
    await store.delete(key)  # deleting what is gone succeeds: retries are safe
    assert await store.head(key) is None


async def test_a_copy_keeps_a_sha256_that_head_reports(store):
    source, copy, body = _key(), _key(), os.urandom(1000)
    digest = hashlib.sha256(body).hexdigest()
    await store.put(source, body, sha256_hex=digest)
    await store.copy(source, copy)
    copied = await store.head(copy)
    assert (copied.size, copied.sha256_hex) == (len(body), digest)
    assert await store.keys(copy) == [copy]
    for key in (source, copy):
        await store.delete(key)


async def test_the_hand_signed_head_answers_what_botocore_head_object_answers(store):
    """head signs its HEAD by hand (server/core/s3.py): the store must accept that signature for any key
    and report the same size and SHA-256 as botocore's head_object with ChecksumMode."""
    key, body = f"tests/s3/{uuid.uuid4()} a+b~c%&=?ü", os.urandom(1500)
    digest = hashlib.sha256(body).hexdigest()
    await store.put(key, body, sha256_hex=digest)
    oracle = await store.client.head_object(Bucket=store.bucket, Key=key, ChecksumMode="ENABLED")
    stored = await store.head(key)
    assert (stored.size, stored.sha256_hex) == (len(body), digest)
    assert oracle["ContentLength"] == stored.size
    assert base64.b64decode(oracle["ChecksumSHA256"]).hex() == stored.sha256_hex
    await store.delete(key)
    assert await store.head(key) is None


async def test_an_unreachable_store_is_unavailable_not_internal(settings):
    dead = dataclasses.replace(settings, s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    async with ObjectStore(dead) as store:
        with pytest.raises(StoreUnavailable) as raised:
            await store.head(_key())
        assert raised.value.code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(StoreUnavailable):
            await store.delete(_key())
