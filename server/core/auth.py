"""Who is calling: JWT bearer tokens → Principal (SPEC §9).

RS256/ES256 against a JWKS (file or URL, the URL refetched on an unknown kid); HS256 only when a dev secret
is configured; issuer and audience always checked. Verified tokens are cached until they expire (bounded),
so a hot path (heartbeats) pays for one signature check per token, not per call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
import uuid
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial

import jwt

from server.core.config import ConfigurationError, Settings
from server.core.errors import PermissionDenied, Unauthenticated

ROLE_USER = "user"
ROLE_SERVICE = "service"
_ASYMMETRIC = ("RS256", "ES256")
_CACHE_SIZE = 10_000
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    roles: frozenset[str]
    # The subject as a user id, parsed once per token (None when the subject is not a UUID), and as its
    # canonical text (lowercase, hyphenated; what Redis keys and fields hold), printed once per token.
    user: uuid.UUID | None = None
    user_text: str = ""

    @classmethod
    def of(cls, subject: str, roles: frozenset[str]) -> Principal:
        try:
            user = uuid.UUID(subject)
        except ValueError:
            return cls(subject, roles)
        return cls(subject, roles, user, str(user))

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

    @property
    def user_id_text(self) -> str:
        """`user_id` (the same checks) as its canonical text."""
        self.user_id  # noqa: B018 (raises for a caller that is not a user)
        return self.user_text


_current: ContextVar[Principal | None] = ContextVar("principal", default=None)


def current_principal() -> Principal:
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("missing bearer token")
    return principal


def current_user_id() -> uuid.UUID:
    return current_principal().user_id


def current_user_id_text() -> str:
    """`current_user_id()` as canonical UUID text, for paths that only pass it on as text (heartbeats)."""
    return current_principal().user_id_text


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
    """Verifies bearer tokens against the configured keys; `authenticate` is the entry point.

    Asymmetric tokens (RS256/ES256) are checked with the JWKS key their `kid` names, as a `PyJWK`, so the
    token's `alg` must be the key's own (an RSA key never verifies an HS256 or ES256 token). HS256 is
    accepted only when a dev secret is configured. With a JWKS URL, a token naming an unknown `kid`
    refetches the document (at most once per `refetch_interval_seconds`, so forged kids cannot hammer the
    key server): keys rotate without a restart. Anything wrong with a token is Unauthenticated.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_file: str = "",
        jwks_url: str = "",
        hs256_secret: str = "",
        leeway_seconds: float = 0.0,
        refetch_interval_seconds: float = 30.0,
        monotonic=time.monotonic,
    ):
        if not issuer or not audience:
            raise ConfigurationError("JWT_ISSUER and JWT_AUDIENCE must be set (every token is checked)")
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._hs256_secret = hs256_secret
        self._jwks_url = jwks_url
        self._refetch_interval = refetch_interval_seconds
        self._monotonic = monotonic
        self._fetched_at: float | None = None
        self._refetching = asyncio.Lock()
        self._file_keys: dict[str, jwt.PyJWK] = {}
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        # The same entries by whole `Authorization` header value: the call pipeline's lookup per call
        self._headers: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        if jwks_file:
            self._file_keys = _load_jwks(partial(open, jwks_file, encoding="utf-8"), f"file {jwks_file}")
        self._keys = dict(self._file_keys)
        if jwks_url:
            self._keys.update(_load_jwks(self._open_url, f"URL {jwks_url}"))
            self._fetched_at = monotonic()
        if not self._keys and not hs256_secret:
            raise ConfigurationError(
                "no JWT keys configured: set JWT_JWKS_FILE, JWT_JWKS_URL or JWT_HS256_SECRET"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        return cls(
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            jwks_file=settings.jwt_jwks_file,
            jwks_url=settings.jwt_jwks_url,
            hs256_secret=settings.jwt_hs256_secret,
            leeway_seconds=settings.jwt_leeway_seconds,
            refetch_interval_seconds=settings.jwt_jwks_refetch_seconds,
        )

    def cached(self, token: str) -> Principal | None:
        """The principal of a token verified before and not expired yet, else None (no verification)."""
        cached = self._cache.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        return None

    def cached_header(self, authorization: str) -> Principal | None:
        """`cached` for an `Authorization` header value, without parsing it (a hit was a bearer token)."""
        cached = self._headers.get(authorization)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        return None

    async def authenticate_header(self, authorization: str) -> Principal:
        """`authenticate` for an `Authorization` header value, which must hold a bearer token."""
        token = bearer_token(authorization)
        if token is None:
            raise Unauthenticated("missing bearer token")
        principal = await self.authenticate(token)
        entry = self._cache.get(token)
        if entry is not None:
            self._headers[authorization] = entry
            if len(self._headers) > _CACHE_SIZE:
                self._headers.popitem(last=False)
        return principal

    async def authenticate(self, token: str) -> Principal:
        """The token's principal; refetches the JWKS URL (rate-limited) when the token names an unknown
        key. Raises Unauthenticated for any token that does not verify."""
        principal = self.cached(token)
        if principal is not None:
            return principal
        try:
            return self.verify(token)
        except UnknownSigningKey:
            await self._refetch()  # or another call just did: either way, try the keys at hand again
            return self.verify(token)

    async def authenticate_until(self, token: str) -> tuple[Principal, float]:
        """`authenticate`, and when (epoch seconds: exp + leeway) the token stops verifying; connections it
        opened (the WebSocket relay's) end then."""
        principal = await self.authenticate(token)
        return principal, self._cache[token][1]  # just verified or found there: no await since

    def verify(self, token: str) -> Principal:
        """Synchronous verification with the keys at hand (no refetch)."""
        principal = self.cached(token)
        if principal is not None:
            return principal
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
                kid = header.get("kid", "")
                if not isinstance(kid, str):
                    raise Unauthenticated("malformed token key id")
                key: jwt.PyJWK | str | None = self._keys.get(kid)
                if key is None:
                    raise UnknownSigningKey("unknown signing key")
                algorithms = [key.algorithm_name]
            elif alg == "HS256" and self._hs256_secret:
                key, algorithms = self._hs256_secret, ["HS256"]
            else:
                raise Unauthenticated("unsupported token algorithm")
            claims = jwt.decode(
                token,
                key=key,
                algorithms=algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
            principal = Principal.of(claims["sub"], _roles(claims.get("roles")))
            return principal, float(claims["exp"]) + self._leeway
        except Unauthenticated:
            raise
        except jwt.PyJWTError as exc:
            raise Unauthenticated("invalid or expired token") from exc
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # odd shapes PyJWT lets through
            raise Unauthenticated("malformed token") from exc

    async def _refetch(self) -> None:
        """Reloads the JWKS URL unless it was loaded within the refetch interval. The new document
        replaces the URL's keys: a key removed from it (revoked) stops verifying new tokens."""
        if not self._jwks_url:
            return
        async with self._refetching:
            now = self._monotonic()
            if self._fetched_at is not None and now - self._fetched_at < self._refetch_interval:
                return
            self._fetched_at = now
            try:
                fetched = await asyncio.to_thread(_load_jwks, self._open_url, "URL")
                self._keys = {**self._file_keys, **fetched}
            except ConfigurationError:
                log.warning("JWKS refetch from %s failed", self._jwks_url, exc_info=True)

    def _open_url(self):
        return urllib.request.urlopen(self._jwks_url, timeout=5)


class UnknownSigningKey(Unauthenticated):
    """The token names a key id the verifier does not hold (yet: a JWKS URL may be refetched)."""


def _load_jwks(open_source, what: str) -> dict[str, jwt.PyJWK]:
    """kid → key of the JWKS document `open_source()` opens, for the algorithms accepted (others are
    ignored)."""
    try:
        with open_source() as source:
            document = json.load(source)
        keys = jwt.PyJWKSet.from_dict(document).keys
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise ConfigurationError(f"cannot load the JWKS {what}: {exc}") from exc
    return {key.key_id or "": key for key in keys if key.algorithm_name in _ASYMMETRIC}


def _roles(claim: object) -> frozenset[str]:
    if claim is None:
        return frozenset((ROLE_USER,))
    if isinstance(claim, str):
        return frozenset(claim.split())
    if isinstance(claim, list) and all(isinstance(role, str) for role in claim):
        return frozenset(claim) or frozenset((ROLE_USER,))
    raise Unauthenticated("malformed roles claim")


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None
