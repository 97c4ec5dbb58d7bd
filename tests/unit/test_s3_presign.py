"""The presigner makes exactly the URLs botocore makes for the same object, time and lifetime: GETs, and PUTs
bound to a length and checksum (the store's own check of those URLs is in tests/e2e/test_download_content.py
and tests/integration/test_s3.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from unittest import mock

import pytest

from server.core.config import Settings
from server.core.s3 import ObjectStore, sha256_header
from server.core.s3_presign import Presigner


def _presigner(settings: Settings) -> Presigner:
    return Presigner(
        settings.s3_endpoint_url,
        settings.s3_bucket,
        settings.s3_region,
        settings.s3_access_key_id,
        settings.s3_secret_access_key,
    )


@pytest.mark.parametrize("key", ["chunks/ab/abcdef/0123", "odd name/with+plus~tilde%&=?.bin", "ünï/cødé"])
@pytest.mark.parametrize(
    "when", [datetime(2026, 12, 1, 9, 30, 5, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)]
)
async def test_the_url_is_botocores_url(key, when):
    settings = Settings()
    async with ObjectStore(settings) as store:  # no I/O: signing is local
        with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
            expected = await store.client.generate_presigned_url(
                "get_object", Params={"Bucket": settings.s3_bucket, "Key": key}, ExpiresIn=600
            )
    presigner = _presigner(settings)
    assert presigner.url(key, expires_in=600, now=when) == expected


@pytest.mark.parametrize("key", ["saves/u/p/abc", "odd name/with+plus~tilde%&=?.bin", "ünï/cødé"])
async def test_the_put_url_is_botocores_url_for_the_same_length_and_checksum(key):
    settings = Settings()
    when = datetime(2026, 12, 1, 9, 30, 5, tzinfo=UTC)
    checksum = sha256_header("ab" * 32)
    async with ObjectStore(settings) as store:  # no I/O: signing is local
        with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
            expected = await store.client.generate_presigned_url(
                "put_object",
                Params={
                    "Bucket": settings.s3_bucket,
                    "Key": key,
                    "ContentLength": 123,
                    "ChecksumSHA256": checksum,
                },
                ExpiresIn=600,
            )
    presigner = _presigner(settings)
    headers = {"Content-Length": "123", "x-amz-checksum-sha256": checksum}
    assert presigner.url(key, expires_in=600, now=when, method="PUT", headers=headers) == expected
