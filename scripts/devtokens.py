"""Dev JWTs the local stack accepts: RS256, signed with the key `make stack-up` generates (kid $JWT_KID).

Used by `scripts/mint-token` and by the tests. Never used by the service itself.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization

ROOT = Path(__file__).resolve().parents[1]
KEY_ID = os.environ.get("JWT_KID", "dev-1")  # the kid stack-up writes into the JWKS


def _private_key():
    """The signing key, parsed once per file version (parsing an RSA key costs far more than signing)."""
    path = Path(os.environ.get("JWT_PRIVATE_KEY_FILE") or str(ROOT / ".local" / "jwt" / "private.pem"))
    return _load_key(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_key(path: Path, _mtime_ns: int):
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def mint(subject: str, *, roles: tuple[str, ...] = ("user",), ttl: int = 3600, expired: bool = False) -> str:
    now = int(time.time())
    claims = {
        "sub": subject,
        "roles": list(roles),
        "iss": os.environ.get("JWT_ISSUER", "https://auth.platform.local"),
        "aud": os.environ.get("JWT_AUDIENCE", "library"),
        "iat": now - (2 * ttl if expired else 0),
        "exp": now - ttl if expired else now + ttl,
    }
    return jwt.encode(claims, _private_key(), algorithm="RS256", headers={"kid": KEY_ID})
