"""The Envoy edge (envoy/envoy.yaml.tmpl): JWT at the edge, error shapes, routing, CORS, header stripping.

Everything goes through Envoy at 127.0.0.1:$ENVOY_PORT, as clients do. The tests in the first part need only
the stack (Envoy answers them itself); the last ones need the gRPC server behind it (`grpc_target`).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scripts.devtokens import KEY_ID, mint
from tests.support.library import grant_entitlements
from tests.support.processes import PrivateEnvoy, free_port, wait_for_port
from tests.support.rest import ENVOY, ERROR_INFO
from tests.support.tokens import JwksServer, SigningKey, claims

ROOT = Path(__file__).resolve().parents[2]
ENVOY_GRPC = f"127.0.0.1:{os.environ.get('ENVOY_PORT', '8080')}"
ADMIN = f"http://127.0.0.1:{os.environ.get('ENVOY_ADMIN_PORT', '9901')}"
ITEMS = "/api/v1/library/me/items"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def _request(method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes | None = None):
    """(status, lower-cased headers, body bytes) of one request through Envoy."""
    request = urllib.request.Request(ENVOY + path, method=method, headers=headers or {}, data=body)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def user_token(**overrides) -> str:
    """A fresh user's token signed with the stack's key: mint's own, or with claims overridden."""
    if not overrides:
        return mint(str(uuid.uuid4()))
    key_file = os.environ.get("JWT_PRIVATE_KEY_FILE") or str(ROOT / ".local" / "jwt" / "private.pem")
    with open(key_file, encoding="utf-8") as f:
        return jwt.encode(claims(**overrides), f.read(), algorithm="RS256", headers={"kid": KEY_ID})


def foreign_key_token() -> str:
    """Well-formed, with the stack's kid, but signed by a key the edge does not know."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return jwt.encode(claims(), pem, algorithm="RS256", headers={"kid": KEY_ID})


def assert_status_body(body: bytes, code: int, reason: str) -> dict:
    document = json.loads(body)
    assert document["code"] == code, document
    assert isinstance(document["message"], str) and document["message"], document
    assert document["details"] == [{"@type": ERROR_INFO, "reason": reason, "domain": "library.platform"}]
    return document


# ---------------------------------------------------------------- JWT at the edge (REST)


def test_rest_without_token_is_401_unauthenticated():
    status, headers, body = _request("GET", ITEMS)
    assert status == 401
    assert headers["content-type"].startswith("application/json")
    assert_status_body(body, 16, "UNAUTHENTICATED")


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda: mint(str(uuid.uuid4()), expired=True), id="expired"),
        pytest.param(lambda: "not-a-jwt", id="garbage"),
        pytest.param(foreign_key_token, id="unknown-signing-key"),
        pytest.param(lambda: user_token(iss="https://evil.example"), id="wrong-issuer"),
        pytest.param(lambda: user_token(aud="another-service"), id="wrong-audience"),
    ],
)
def test_rest_with_bad_token_is_401_unauthenticated(token):
    status, headers, body = _request("GET", ITEMS, headers=bearer(token()))
    assert status == 401
    assert headers["content-type"].startswith("application/json")
    assert_status_body(body, 16, "UNAUTHENTICATED")


def test_token_must_be_a_bearer_authorization_header():
    token = user_token()
    status, _, body = _request("GET", f"{ITEMS}?access_token={token}")
    assert status == 401
    assert_status_body(body, 16, "UNAUTHENTICATED")
    status, _, _ = _request("GET", ITEMS, headers={"Authorization": f"Basic {token}"})
    assert status == 401


def test_websocket_handshake_without_token_is_refused_at_the_edge():
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    for path in ("/api/v1/ws/library", "/ws/library/notifications", "/api/v1/ws/download"):
        status, _, body = _request("GET", path, headers=headers)
        assert status == 401, path
        assert_status_body(body, 16, "UNAUTHENTICATED")


# ---------------------------------------------------------------- routing and validation (REST)


def test_unknown_path_under_api_is_404():
    status, headers, body = _request("GET", "/api/v1/library/nope", headers=bearer(user_token()))
    assert status == 404
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["code"] == 5


def test_unknown_query_parameter_is_400():
    status, _, body = _request("GET", f"{ITEMS}?noSuchParameter=1", headers=bearer(user_token()))
    assert status == 400
    assert_status_body(body, 3, "VALIDATION_FAILED")


# Envoy's transcoder texts for these bodies ("Unexpected end of string…", "Proto field is not repeating,
# cannot start list.", "Unexpected token.\nxx\n^") are its parser's internals: SPEC section 4 keeps them
# from clients.
PARSER_WORDS = ("Unexpected", "Proto field", "token", "^", "Invalid", "Expected", "repeating")


@pytest.mark.parametrize(
    "body",
    [b'{"name": ', b'{"name": [1]}', b"xx", b'{"name": {"a": 1}}', b"\xff\xfe"],
    ids=["truncated", "list-for-string", "not-json", "object-for-string", "not-utf8"],
)
def test_malformed_json_body_is_400_without_the_parsers_text(body):
    status, _, reply = _request(
        "POST",
        "/api/v1/library/me/categories",
        headers={**bearer(user_token()), "Content-Type": "application/json"},
        body=body,
    )
    assert status == 400
    document = assert_status_body(reply, 3, "VALIDATION_FAILED")
    assert not any(word in document["message"] for word in PARSER_WORDS), document["message"]
    assert "/api/v1/docs" in document["message"]


def test_openapi_document_needs_no_token():
    status, headers, body = _request("GET", "/api/v1/docs")
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    document = json.loads(body)
    assert document["openapi"].startswith("3.")
    assert "get" in document["paths"]["/api/v1/library/me/items"]
    assert "post" in document["paths"]["/api/v1/download-client/downloads/{download_id}/pause"]


# ---------------------------------------------------------------- CORS


def test_cors_preflight_is_answered_without_token():
    origin = "http://localhost:5173"
    status, headers, _ = _request(
        "OPTIONS",
        ITEMS,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert status == 200
    assert headers["access-control-allow-origin"] == origin
    assert "PATCH" in headers["access-control-allow-methods"]
    assert "authorization" in headers["access-control-allow-headers"].lower()


def test_cors_headers_on_errors_too():
    origin = "https://app.example"
    status, headers, _ = _request("GET", ITEMS, headers={"Origin": origin})
    assert status == 401
    assert headers["access-control-allow-origin"] == origin
    assert "grpc-status" in headers["access-control-expose-headers"]


# ---------------------------------------------------------------- native gRPC through the edge


def _grpc_call(method: str, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.RpcError:
    with grpc.insecure_channel(ENVOY_GRPC) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as caught:
            call(b"", metadata=metadata, timeout=10)
    return caught.value


@pytest.mark.parametrize(
    "method",
    [
        "/library.v1.LibraryService/ListLibraryItems",
        "/library.v1.PlaytimeTrackerService/RecordPlaytimeHeartbeat",
        "/download.v1.DownloadService/ListDownloads",
    ],
)
def test_grpc_without_token_is_unauthenticated(method):
    error = _grpc_call(method)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not error.details().startswith("{")  # gRPC clients get gRPC status, not the REST JSON body


def test_grpc_with_expired_or_foreign_token_is_unauthenticated():
    for token in (mint(str(uuid.uuid4()), expired=True), foreign_key_token(), user_token(aud="x")):
        error = _grpc_call(
            "/library.v1.LibraryService/ListLibraryItems", (("authorization", f"Bearer {token}"),)
        )
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED


# ---------------------------------------------------------------- identity headers


def test_the_edge_listener_removes_client_identity_headers_from_every_request():
    """The running edge listener (the one on $ENVOY_PORT, serving REST, gRPC and WebSocket alike) removes
    the identity headers in its route configuration, so no route forwards them upstream."""
    with urllib.request.urlopen(f"{ADMIN}/config_dump?resource=static_listeners", timeout=5) as response:
        dump = json.load(response)
    port = int(os.environ.get("ENVOY_PORT", "8080"))
    [edge] = [
        entry["listener"]
        for entry in dump["configs"]
        if entry["listener"].get("address", {}).get("socket_address", {}).get("port_value") == port
    ]
    managers = [
        f["typed_config"]
        for chain in edge["filter_chains"]
        for f in chain["filters"]
        if f["typed_config"]["@type"] == HCM
    ]
    assert managers, "the edge listener has no HTTP connection manager"
    for manager in managers:
        removed = manager["route_config"]["request_headers_to_remove"]
        for header in ("x-user-id", "x-user-roles", "x-jwt-payload", "x-forwarded-user"):
            assert header in removed, (header, removed)


# ---------------------------------------------------------------- through to the gRPC server


async def test_grpc_health_through_the_edge_needs_no_token(grpc_target):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(ENVOY_GRPC) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_rest_with_valid_token_reaches_the_server(grpc_target):
    status, headers, body = await asyncio.to_thread(
        _request, "GET", f"{ITEMS}?pageSize=5", headers=bearer(user_token())
    )
    assert status == 200, body
    assert headers["content-type"].startswith("application/json")
    document = json.loads(body)
    assert document["totalSize"] == 0  # primitive fields are always printed
    assert document.get("items", []) == []


async def test_client_identity_headers_do_not_reach_the_server(grpc_target):
    """User A owns a game; user B, claiming to be A in identity headers, still sees only B's library."""
    from library.v1 import library_service_pb2_grpc

    owner, intruder, product = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with grpc.aio.insecure_channel(ENVOY_GRPC) as channel:
        await grant_entitlements(
            library_service_pb2_grpc.LibraryServiceStub(channel), owner, product, timeout=10
        )
    spoofed = {
        "x-user-id": str(owner),
        "x-user-roles": "service",
        "x-jwt-payload": json.dumps({"sub": str(owner)}),
        "x-forwarded-user": str(owner),
    }
    status, _, body = await asyncio.to_thread(
        _request, "GET", ITEMS, headers={**bearer(mint(str(intruder))), **spoofed}
    )
    assert status == 200, body
    assert json.loads(body)["totalSize"] == 0
    status, _, body = await asyncio.to_thread(_request, "GET", ITEMS, headers=bearer(mint(str(owner))))
    assert status == 200, body
    assert [item["productId"] for item in json.loads(body)["items"]] == [str(product)]


async def test_grpc_reflection_through_the_edge_needs_no_token(grpc_target):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with grpc.aio.insecure_channel(ENVOY_GRPC) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        services = set()
        async for response in call:
            services.update(s.name for s in response.list_services_response.service)
    assert {"library.v1.LibraryService", "download.v1.DownloadService"} <= services


# ---------------------------------------------------------------- what the edge never leaks


def test_www_authenticate_has_a_fixed_realm_and_never_echoes_the_token():
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    for path, headers in (
        (f"/api/v1/ws/library?token={token}", upgrade),
        (ITEMS, bearer(token)),
        (f"{ITEMS}?pageSize=1", bearer(foreign_key_token())),
    ):
        status, response_headers, body = _request("GET", path, headers=headers)
        assert status == 401, path
        assert response_headers["www-authenticate"] == 'Bearer realm="library"'
        assert token not in json.dumps(response_headers) and token.encode() not in body


async def test_rest_responses_carry_no_grpc_headers(grpc_target):
    for method, path, body in (
        ("GET", f"{ITEMS}?pageSize=1", None),  # OK
        (
            "POST",
            "/api/v1/library/me/playtime/sessions/heartbeat",
            json.dumps({"sessionId": str(uuid.uuid4()), "productId": str(uuid.uuid4())}).encode(),
        ),  # an error from the server (SESSION_NOT_FOUND)
    ):
        headers = {**bearer(user_token()), "Content-Type": "application/json"}
        status, response_headers, _ = await asyncio.to_thread(
            _request, method, path, headers=headers, body=body
        )
        assert status in (200, 404), (path, status)
        assert not [h for h in response_headers if h.startswith("grpc-")], response_headers


# ---------------------------------------------------------------- methods, compression, body size


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", ITEMS, "GET"),
        ("PUT", "/api/v1/library/me/categories", "GET, POST"),
        ("GET", "/api/v1/library/me/playtime/sessions/heartbeat", "POST"),
        ("POST", f"/api/v1/library/me/items/{uuid.uuid4()}", "PATCH"),
    ],
)
def test_a_known_path_with_a_wrong_method_is_405_with_allow(method, path, allow):
    status, headers, body = _request(method, path, headers=bearer(user_token()), body=b"{}")
    assert status == 405
    assert headers["allow"] == allow
    assert headers["content-type"].startswith("application/json")
    assert_status_body(body, 12, "METHOD_NOT_ALLOWED")


async def test_a_method_an_overlapping_path_binds_is_not_refused(grpc_target):
    """`/savegames/confirm-upload` (POST) also matches `/savegames/{product_id}` (GET): neither is 405."""
    for method, path in (
        ("POST", "/api/v1/library/me/savegames/confirm-upload"),
        ("GET", f"/api/v1/library/me/savegames/{uuid.uuid4()}"),
    ):
        headers = {**bearer(user_token()), "Content-Type": "application/json"}
        body = None if method == "GET" else b"{}"
        status, _, _ = await asyncio.to_thread(_request, method, path, headers=headers, body=body)
        assert status != 405, (method, path)


async def test_rest_responses_are_gzipped_for_clients_that_accept_it(grpc_target):
    token = user_token()
    status, headers, body = await asyncio.to_thread(
        _request, "GET", f"{ITEMS}?pageSize=5", headers={**bearer(token), "Accept-Encoding": "gzip"}
    )
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(body))["totalSize"] == 0
    status, headers, body = await asyncio.to_thread(
        _request, "GET", f"{ITEMS}?pageSize=5", headers=bearer(token)
    )
    assert status == 200 and "content-encoding" not in headers
    assert json.loads(body)["totalSize"] == 0


def test_a_request_body_over_the_limit_is_413_with_a_json_error():
    limit = int(os.environ.get("ENVOY_MAX_REQUEST_BYTES", "1048576"))
    body = json.dumps({"name": "a" * limit}).encode()
    status, headers, reply = _request(
        "POST",
        "/api/v1/library/me/categories",
        headers={**bearer(user_token()), "Content-Type": "application/json"},
        body=body,
    )
    assert status == 413
    assert headers["content-type"].startswith("application/json")
    assert_status_body(reply, 3, "VALIDATION_FAILED")


# ---------------------------------------------------------------- a private edge: its own settings


@pytest.fixture
async def private_edge(tmp_path):
    """An Envoy of its own whose upstream is down, with configured CORS origins and keys from a JWKS URL
    the test rotates."""
    old, new = SigningKey("edge-old"), SigningKey("edge-new")
    with JwksServer(old).running() as jwks:
        edge = PrivateEnvoy(
            tmp_path,
            GRPC_UPSTREAMS=f"127.0.0.1:{free_port()}",
            CORS_ALLOWED_ORIGINS="https://app.example,https://admin.example",
            JWT_JWKS_URL=jwks.url,
            JWT_JWKS_CACHE_SECONDS="1",
        )
        edge.start()
        try:
            await wait_for_port(edge.port)
            yield edge, jwks, old, new
        finally:
            edge.stop()


def _edge_request(edge: PrivateEnvoy, token: str, origin: str = "https://app.example"):
    request = urllib.request.Request(edge.url + ITEMS, headers={**bearer(token), "Origin": origin})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


async def _until(predicate, timeout: float = 15.0):
    """Polls `predicate()` (run in a thread) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(predicate)
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)


async def test_the_edge_answers_unavailable_upstream_with_the_servers_reason(private_edge):
    edge, _, old, _ = private_edge
    reply = await _until(lambda: (r := _edge_request(edge, old.token()))[0] == 503 and r)
    assert reply, "the edge never accepted the JWKS URL's key"
    _, headers, body = reply
    assert headers["content-type"].startswith("application/json")
    document = assert_status_body(body, 14, "UNAVAILABLE")
    # Envoy's own words ("upstream connect error or disconnect/reset before headers…") stay inside.
    assert "upstream" not in document["message"] and "reset" not in document["message"], document


async def test_the_edge_allows_only_the_configured_cors_origins(private_edge):
    edge, _, old, _ = private_edge
    assert await _until(lambda: _edge_request(edge, old.token())[0] == 503)
    _, headers, _ = await asyncio.to_thread(_edge_request, edge, old.token(), "https://admin.example")
    assert headers["access-control-allow-origin"] == "https://admin.example"
    _, headers, _ = await asyncio.to_thread(_edge_request, edge, old.token(), "https://evil.example")
    assert "access-control-allow-origin" not in headers


async def test_the_edge_takes_rotated_keys_from_the_jwks_url_without_a_restart(private_edge):
    edge, jwks, old, new = private_edge
    assert await _until(lambda: _edge_request(edge, old.token())[0] == 503)
    status, _, _ = await asyncio.to_thread(_edge_request, edge, new.token())
    assert status == 401  # not published yet
    jwks.publish(old, new)
    assert await _until(lambda: _edge_request(edge, new.token())[0] == 503), "rotated key never accepted"
