"""Presigned S3 GETs (SigV4 query authentication) in bulk, for manifests of thousands of chunk links.

botocore's generate_presigned_url costs about 0.6 ms a link here (its request pipeline runs per URL),
so a 10,000-chunk manifest would spend seconds signing. This is the same algorithm for the one shape we
need (GET, path-style, host the only signed header, unsigned payload), with the signing key derived once
per day; tests/unit/test_s3_presign.py checks it produces botocore's URL byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


class GetPresigner:
    def __init__(self, endpoint_url: str, bucket: str, region: str, access_key: str, secret_key: str):
        parts = urlsplit(endpoint_url)
        self._base = f"{parts.scheme}://{parts.netloc}"
        self._host = parts.netloc
        self._bucket_path = "/" + quote(bucket, safe="")
        self._region = region
        self._access_key = access_key
        self._secret = secret_key
        self._keys: dict[str, bytes] = {}

    def _signing_key(self, day: str) -> bytes:
        key = self._keys.get(day)
        if key is None:
            key = _hmac(
                _hmac(_hmac(_hmac(f"AWS4{self._secret}".encode(), day), self._region), "s3"), "aws4_request"
            )
            self._keys = {day: key}
        return key

    def url(self, key: str, *, expires_in: int, now: datetime) -> str:
        """The presigned GET URL of object `key`, valid `expires_in` seconds from `now` (UTC)."""
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        scope = f"{day}/{self._region}/s3/aws4_request"
        path = f"{self._bucket_path}/{quote(key, safe='/~')}"
        query = (
            f"X-Amz-Algorithm={ALGORITHM}"
            f"&X-Amz-Credential={quote(f'{self._access_key}/{scope}', safe='~')}"
            f"&X-Amz-Date={stamp}&X-Amz-Expires={expires_in}&X-Amz-SignedHeaders=host"
        )
        canonical = f"GET\n{path}\n{query}\nhost:{self._host}\n\nhost\nUNSIGNED-PAYLOAD"
        to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        return f"{self._base}{path}?{query}&X-Amz-Signature={signature}"
