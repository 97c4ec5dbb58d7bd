"""Dev JWTs the local stack accepts: RS256, signed with the key `make stack-up` generates (kid $JWT_KID).

Used by `scripts/mint-token` and by the tests. Never used by the service itself.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import jwt

ROOT = Path(__file__).resolve().parents[1]
KEY_ID = os.environ.get("JWT_KID", "dev-1")  # the kid stack-up writes into the JWKS


def _private_key() -> str:
    path = os.environ.get("JWT_PRIVATE_KEY_FILE") or str(ROOT / ".local" / "jwt" / "private.pem")
    return Path(path).read_text()


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
