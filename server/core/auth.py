"""Who is calling: JWT bearer tokens → Principal (SPEC §9).

RS256/ES256 against a JWKS (file or URL); HS256 only when a dev secret is configured. Verified tokens are
cached until they expire, so a hot path (heartbeats) pays for one signature check per token,
not per call.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass

import jwt

from server.core.config import Settings
from server.core.errors import PermissionDenied, Unauthenticated

ROLE_USER = "user"
ROLE_SERVICE = "service"
_ASYMMETRIC = ("RS256", "ES256")
_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    roles: frozenset[str]
    # The subject as a user id, parsed once per token (None when the subject is not a UUID).
    user: uuid.UUID | None = None

    @classmethod
    def of(cls, subject: str, roles: frozenset[str]) -> Principal:
        try:
            user = uuid.UUID(subject)
        except ValueError:
            user = None
        return cls(subject, roles, user)

    @property
    def is_service(self) -> bool:
        return ROLE_SERVICE in self.roles

    @property
    def user_id(self) -> uuid.UUID:
        """The caller as a user; self-service RPCs act on this id only."""
        if ROLE_USER not in self.roles:
            raise PermissionDenied("this method needs a user token")
        if self.user is None:
            raise Unauthenticated("token subject is not a user id")
        return self.user


_current: ContextVar[Principal | None] = ContextVar("principal", default=None)


def current_principal() -> Principal:
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("missing bearer token")
    return principal


def current_user_id() -> uuid.UUID:
    return current_principal().user_id


def require_service() -> Principal:
    principal = current_principal()
    if not principal.is_service:
        raise PermissionDenied("this method needs the service role")
    return principal


def set_current_principal(principal: Principal | None):
    return _current.set(principal)


def reset_current_principal(token) -> None:
    _current.reset(token)


class TokenVerifier:
    def __init__(
        self,
        *,
        jwks_file: str = "",
        jwks_url: str = "",
        hs256_secret: str = "",
        issuer: str = "",
        audience: str = "",
    ):
        self._keys: dict[str, jwt.PyJWK] = {}
        self._hs256_secret = hs256_secret
        self._issuer = issuer or None
        self._audience = audience or None
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        if jwks_file:
            with open(jwks_file, encoding="utf-8") as f:
                self._load_jwks(json.load(f))
        if jwks_url:
            with urllib.request.urlopen(jwks_url, timeout=5) as resp:
                self._load_jwks(json.load(resp))
        if not self._keys and not hs256_secret:
            raise ValueError("no JWT keys configured: set JWT_JWKS_FILE, JWT_JWKS_URL or JWT_HS256_SECRET")

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        return cls(
            jwks_file=settings.jwt_jwks_file,
            jwks_url=settings.jwt_jwks_url,
            hs256_secret=settings.jwt_hs256_secret,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )

    def _load_jwks(self, document: dict) -> None:
        for key in jwt.PyJWKSet.from_dict(document).keys:
            self._keys[key.key_id or ""] = key

    def verify(self, token: str) -> Principal:
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        principal, expires_at = self._decode(token)
        self._cache[token] = (principal, expires_at)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
            alg = header.get("alg")
            if alg in _ASYMMETRIC:
                jwk = self._keys.get(header.get("kid") or "")
                if jwk is None:
                    raise Unauthenticated("unknown signing key")
                key = jwk.key
            elif alg == "HS256" and self._hs256_secret:
                key = self._hs256_secret
            else:
                raise Unauthenticated("unsupported token algorithm")
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated("invalid or expired token") from exc
        roles = claims.get("roles") or [ROLE_USER]
        if isinstance(roles, str):
            roles = roles.split()
        principal = Principal.of(str(claims["sub"]), frozenset(roles))
        return principal, float(claims["exp"])


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None
