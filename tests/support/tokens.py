"""Hostile and rotating tokens: forged JWTs (each a way a verifier can be fooled) and a JWKS served over
HTTP whose keys a test rotates."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.server
import json
import os
import threading
import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm

from scripts.devtokens import KEY_ID

ROOT = Path(__file__).resolve().parents[2]


def claims(**overrides) -> dict:
    """A fresh user's claims as the stack's issuer gives them (for ten minutes), overridden."""
    now = int(time.time())
    return {
        "sub": str(uuid.uuid4()),
        "roles": ["user"],
        "iss": os.environ.get("JWT_ISSUER", "https://auth.platform.local"),
        "aud": os.environ.get("JWT_AUDIENCE", "library"),
        "iat": now,
        "exp": now + 600,
        **overrides,
    }


def stack_private_key() -> str:
    key_file = os.environ.get("JWT_PRIVATE_KEY_FILE") or str(ROOT / ".local" / "jwt" / "private.pem")
    return Path(key_file).read_text()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, payload: object, sign) -> str:
    """A compact JWS of any header and payload, signed by `sign(signing_input) -> bytes` (PyJWT's encoder
    refuses most of what a forger sends)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def _rs256(private_pem: str):
    algorithm = RSAAlgorithm(RSAAlgorithm.SHA256)
    key = algorithm.prepare_key(private_pem)
    return lambda data: algorithm.sign(data, key)


def _public_pem(private_pem: str) -> bytes:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def forged_tokens() -> dict[str, str]:
    """Every token a verifier must refuse (UNAUTHENTICATED, never INTERNAL), by what is wrong with it."""
    private = stack_private_key()
    rs256 = _rs256(private)
    public_pem = _public_pem(private)
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_pem = other_rsa.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    ec_key = ec.generate_private_key(ec.SECP256R1())
    good = {"alg": "RS256", "typ": "JWT", "kid": KEY_ID}
    return {
        "list-valued-kid": forge({**good, "kid": [KEY_ID]}, claims(), rs256),
        "object-valued-kid": forge({**good, "kid": {"id": KEY_ID}}, claims(), rs256),
        "unknown-kid": forge({**good, "kid": "no-such-key"}, claims(), rs256),
        "alg-none": forge({"alg": "none", "typ": "JWT", "kid": KEY_ID}, claims(), lambda _: b""),
        "alg-none-capitalised": forge({"alg": "None", "kid": KEY_ID}, claims(), lambda _: b""),
        "hs256-with-the-public-key-as-secret": forge(
            {**good, "alg": "HS256"},
            claims(),
            lambda data: hmac.new(public_pem, data, hashlib.sha256).digest(),
        ),
        "es256-claimed-for-the-rsa-key": jwt.encode(
            claims(), ec_key, algorithm="ES256", headers={"kid": KEY_ID}
        ),
        "list-valued-alg": forge({**good, "alg": ["RS256"]}, claims(), rs256),
        "foreign-signing-key": forge(good, claims(), _rs256(other_pem)),
        "wrong-issuer": forge(good, claims(iss="https://evil.example"), rs256),
        "wrong-audience": forge(good, claims(aud="another-service"), rs256),
        "no-audience": forge(good, {k: v for k, v in claims().items() if k != "aud"}, rs256),
        "no-expiry": forge(good, {k: v for k, v in claims().items() if k != "exp"}, rs256),
        "expired": forge(good, claims(exp=int(time.time()) - 3600), rs256),
        "string-expiry": forge(good, claims(exp="tomorrow"), rs256),
        "numeric-subject": forge(good, claims(sub=12345), rs256),
        "numeric-roles": forge(good, claims(roles=7), rs256),
        "roles-of-objects": forge(good, claims(roles=[{"name": "service"}]), rs256),
        "payload-is-a-list": forge(good, ["sub", "exp"], rs256),
        "header-is-a-list": forge(["RS256"], claims(), rs256),  # type: ignore[arg-type]
        "tampered-payload": _tampered(forge(good, claims(), rs256)),
        "garbage": "not-a-jwt",
        "three-dots": "a.b.c",
        "bad-base64": "!!!.@@@.###",
    }


def _tampered(token: str) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{_b64(json.dumps(claims(roles=['service'])).encode())}.{signature}"


class SigningKey:
    """An RSA key of an identity provider: signs tokens under its kid and publishes its public JWK."""

    def __init__(self, kid: str):
        self.kid = kid
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict:
        document = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return {**document, "kid": self.kid, "alg": "RS256", "use": "sig"}

    def token(self, **overrides) -> str:
        return jwt.encode(claims(**overrides), self._key, algorithm="RS256", headers={"kid": self.kid})


class JwksServer:
    """An identity provider's JWKS endpoint on a free local port; `publish` changes what it serves."""

    def __init__(self, *keys: SigningKey):
        self.fetches = 0
        self._document = {"keys": [key.jwk() for key in keys]}
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps(owner._document).encode()
                owner.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"

    def publish(self, *keys: SigningKey) -> None:
        self._document = {"keys": [key.jwk() for key in keys]}

    @contextlib.contextmanager
    def running(self):
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
