"""Bearer tokens at the server itself (native gRPC, no Envoy in front) and at the WebSocket relay: forged
tokens are UNAUTHENTICATED, never INTERNAL; keys rotate through a JWKS URL without a restart; issuer and
audience are required settings."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import grpc
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.app import Gateway
from library.v1 import library_service_pb2, library_service_pb2_grpc
from server.core.auth import TokenVerifier
from server.core.config import Settings
from server.core.errors import Unauthenticated
from tests.support.grpc_errors import failure
from tests.support.processes import ROOT, free_port, python_server, wait_serving
from tests.support.tokens import JwksServer, SigningKey, forged_tokens

FORGED = forged_tokens()


async def _list_items(target: str, token: str):
    async with grpc.aio.insecure_channel(target) as channel:
        stub = library_service_pb2_grpc.LibraryServiceStub(channel)
        return await stub.ListLibraryItems(
            library_service_pb2.ListLibraryItemsRequest(page_size=1),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )


@pytest.mark.parametrize("case", sorted(FORGED))
async def test_a_forged_token_is_unauthenticated_at_the_server(grpc_target, case):
    code, reason, _ = await failure(_list_items(grpc_target, FORGED[case]))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


async def test_a_token_of_the_stack_key_still_works(grpc_target):
    from scripts.devtokens import mint

    reply = await _list_items(grpc_target, mint("5b0c43a4-3f76-4b8e-8b39-6b0a1f0d1e11"))
    assert reply.total_size >= 0


# ---------------------------------------------------------------- rotation through a JWKS URL


def _clock():
    """A controlled monotonic clock: `now[0]` is the time."""
    now = [1000.0]
    return now, lambda: now[0]


async def test_an_unknown_kid_refetches_the_jwks_url_at_most_once_per_interval(settings: Settings):
    old, new = SigningKey("old"), SigningKey("new")
    with JwksServer(old).running() as jwks:
        now, monotonic = _clock()
        verifier = TokenVerifier(
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            jwks_url=jwks.url,
            refetch_interval_seconds=30,
            monotonic=monotonic,
        )
        assert jwks.fetches == 1
        assert (await verifier.authenticate(old.token(sub="u-old"))).subject == "u-old"
        jwks.publish(new)
        # Fetched at start, moments ago: forged kids cannot make the verifier hammer the key server.
        for _ in range(3):
            with pytest.raises(Unauthenticated):
                await verifier.authenticate(new.token())
        assert jwks.fetches == 1
        now[0] += 31
        assert (await verifier.authenticate(new.token(sub="u-new"))).subject == "u-new"
        assert jwks.fetches == 2
        # The old key left the document: its fresh tokens no longer verify.
        with pytest.raises(Unauthenticated):
            await verifier.authenticate(old.token())
        assert jwks.fetches == 2


@pytest.fixture
def rotating_server():
    """A server process of its own whose only keys come from a JWKS URL the test rotates."""
    old, new = SigningKey("idp-2026-11"), SigningKey("idp-2026-12")
    port = free_port()
    with (
        JwksServer(old).running() as jwks,
        python_server(
            "test-server-jwks-url.log",
            GRPC_PORT=str(port),
            METRICS_PORT=str(free_port()),
            WORKERS_ENABLED="0",
            JWT_JWKS_FILE="",
            JWT_JWKS_URL=jwks.url,
            JWT_JWKS_REFETCH_SECONDS="0",
        ),
    ):
        yield f"127.0.0.1:{port}", jwks, old, new


async def test_the_server_accepts_a_rotated_key_without_a_restart(rotating_server):
    target, jwks, old, new = rotating_server
    await wait_serving(target)
    assert (await _list_items(target, old.token())).total_size == 0
    code, _, _ = await failure(_list_items(target, new.token()))
    assert code == grpc.StatusCode.UNAUTHENTICATED  # not published yet
    jwks.publish(old, new)
    assert (await _list_items(target, new.token())).total_size == 0
    assert (await _list_items(target, old.token())).total_size == 0


async def test_the_relay_accepts_a_rotated_key_without_a_restart(settings: Settings, redis):
    old, new = SigningKey("relay-old"), SigningKey("relay-new")
    with JwksServer(old).running() as jwks:
        relay_settings = dataclasses.replace(
            settings, jwt_jwks_file="", jwt_jwks_url=jwks.url, jwt_jwks_refetch_seconds=0
        )
        gateway = Gateway(relay_settings, TokenVerifier.from_settings(relay_settings), redis)
        await gateway.start(host="127.0.0.1", port=free_port())
        try:
            url = f"ws://127.0.0.1:{gateway.port}/api/v1/ws/library?token="
            token = new.token(sub="2a4c1b8e-5d6f-4e3a-9b1c-7d8e9f0a1b2c")
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url + token, proxy=None, open_timeout=5):
                    pass
            assert refused.value.response.status_code == 401
            jwks.publish(new)
            async with connect(url + token, proxy=None, open_timeout=5) as ws:
                await ws.send('{"type":"ping","id":"1"}')
                assert "pong" in await ws.recv()
        finally:
            await gateway.stop(grace=5)


# ---------------------------------------------------------------- required settings


@pytest.mark.parametrize("module", ["server", "gateway"])
@pytest.mark.parametrize("missing", ["JWT_ISSUER", "JWT_AUDIENCE"])
def test_the_service_and_the_relay_refuse_to_start_without_issuer_and_audience(module, missing):
    env = {
        **os.environ,
        missing: "",
        "GRPC_PORT": str(free_port()),
        "METRICS_PORT": str(free_port()),
        "WS_PORT": str(free_port()),
        "WS_METRICS_PORT": str(free_port()),
    }
    done = subprocess.run(
        [sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "JWT_ISSUER and JWT_AUDIENCE must be set" in done.stderr
    assert "Traceback" not in done.stderr
