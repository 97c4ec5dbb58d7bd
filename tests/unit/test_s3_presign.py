"""The bulk GET presigner makes exactly the URL botocore makes for the same object, time and lifetime
(the store's own check of those URLs is in tests/e2e/test_download_content.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from unittest import mock

import pytest

from server.core.config import Settings
from server.core.s3 import ObjectStore
from server.core.s3_presign import GetPresigner


@pytest.mark.parametrize("key", ["chunks/ab/abcdef/0123", "odd name/with+plus~tilde%&=?.bin", "ünï/cødé"])
@pytest.mark.parametrize(
    "when", [datetime(2026, 12, 1, 9, 30, 5, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)]
)
async def test_the_url_is_botocores_url(key, when):
    settings = Settings()
    async with ObjectStore(settings) as store:  # no I/O: signing is local
        with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
            expected = (await store.presign_get(key, expires_in=600)).url
    presigner = GetPresigner(
        settings.s3_endpoint_url,
        settings.s3_bucket,
        settings.s3_region,
        settings.s3_access_key_id,
        settings.s3_secret_access_key,
    )
    assert presigner.url(key, expires_in=600, now=when) == expected
