"""Presigned S3 URLs (SigV4 query authentication) without botocore's request pipeline: GETs in bulk, for
manifests of thousands of chunk links, and the PUTs bound to a length and checksum that save uploads and
chunk publishing hand out.

botocore's generate_presigned_url costs about 0.6 ms a URL here (its request pipeline runs per URL), so a
10,000-chunk manifest would spend seconds signing, and every save sync pays it on its way. This is the same
algorithm for the shapes we need (path-style, host plus the given headers signed, unsigned payload), with
the signing key derived once per day; tests/unit/test_s3_presign.py checks it produces botocore's URLs
byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


class Presigner:
    def __init__(self, endpoint_url: str, bucket: str, region: str, access_key: str, secret_key: str):
        parts = urlsplit(endpoint_url)
        self._base = f"{parts.scheme}://{parts.netloc}"
        self._host = parts.netloc
        self._host_header = f"host:{parts.netloc}\n"
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

    def url(
        self,
        key: str,
        *,
        expires_in: int,
        now: datetime,
        method: str = "GET",
        headers: dict[str, str] | None = None,
    ) -> str:
        """The presigned URL of `method` on object `key`, valid `expires_in` seconds from `now` (UTC). The
        store accepts it only with exactly `headers` (name → value; signed along with host)."""
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        scope = f"{day}/{self._region}/s3/aws4_request"
        path = f"{self._bucket_path}/{quote(key, safe='/~')}"
        if headers:
            signed = {"host": self._host, **{name.lower(): value.strip() for name, value in headers.items()}}
            names = sorted(signed)
            signed_names = ";".join(names)
            canonical_headers = "".join(f"{name}:{signed[name]}\n" for name in names)
        else:  # a GET of a manifest's thousands: host alone, nothing to build per link
            signed_names, canonical_headers = "host", self._host_header
        query = (
            f"X-Amz-Algorithm={ALGORITHM}"
            f"&X-Amz-Credential={quote(f'{self._access_key}/{scope}', safe='~')}"
            f"&X-Amz-Date={stamp}&X-Amz-Expires={expires_in}"
            f"&X-Amz-SignedHeaders={quote(signed_names, safe='~')}"
        )
        canonical = f"{method}\n{path}\n{query}\n{canonical_headers}\n{signed_names}\nUNSIGNED-PAYLOAD"
        to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        return f"{self._base}{path}?{query}&X-Amz-Signature={signature}"
