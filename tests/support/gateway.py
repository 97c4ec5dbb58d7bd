"""The WebSocket relay for tests: one started in-process, and the one Envoy routes to."""

from __future__ import annotations

import socket

import pytest

from gateway.app import Gateway
from server.core.auth import TokenVerifier
from server.core.config import Settings
from tests.support.processes import free_port


async def start_gateway(settings: Settings, redis, port: int | None = None) -> Gateway:
    gateway = Gateway(settings, TokenVerifier.from_settings(settings), redis)
    await gateway.start(host="127.0.0.1", port=free_port() if port is None else port)
    return gateway


@pytest.fixture(scope="module")
async def gateway_on_ws_port(settings: Settings, redis):
    """The gateway Envoy routes to (127.0.0.1:$WS_PORT): started here unless one listens already."""
    port = settings.ws_port
    with socket.socket() as probe:
        in_use = probe.connect_ex(("127.0.0.1", port)) == 0
    if in_use:
        yield None
        return
    gw = await start_gateway(settings, redis, port=port)
    yield gw
    await gw.stop(grace=5)
