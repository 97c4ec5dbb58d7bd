"""Settings changes reach the player's other devices: through Envoy, a REST write's notification arrives on
the right WebSocket (`gameSettingsUpdated` on the library socket, `downloadSettingsUpdated` on the download
socket), each on its own channel only (a second write is the sentinel)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid

from websockets.asyncio.client import connect

from scripts.devtokens import mint
from tests.support.ownership import grant
from tests.support.rest import RestClient

ENVOY_WS = f"ws://127.0.0.1:{os.environ.get('ENVOY_PORT', '8080')}"


async def _next(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


async def test_each_settings_write_reaches_its_own_socket_naming_the_writer(
    http, sessions, gateway_on_ws_port, grpc_target
):
    user, game = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, game)
    me = RestClient(http, user)
    token = mint(str(user))
    async with (
        connect(f"{ENVOY_WS}/api/v1/ws/library?token={token}", proxy=None, open_timeout=10) as library,
        connect(f"{ENVOY_WS}/api/v1/ws/download?token={token}", proxy=None, open_timeout=10) as download,
    ):
        for ws in (library, download):  # both subscribed before anything is written
            await ws.send(json.dumps({"type": "ping", "id": "ready"}))
            assert (await _next(ws))["type"] == "pong"

        notes = {"library": [], "download": []}
        for round_ in (1, 2):  # the second round is the sentinel: nothing else may come between
            status, _ = await me.call(
                "PUT",
                f"/api/v1/library/me/game-settings/{game}",
                json={"settingsPayload": {"a": round_}, "deviceId": "pc"},
            )
            assert status == 200
            status, _ = await me.call(
                "PATCH",
                "/api/v1/download-client/settings",
                params={"deviceId": "pc"},
                json={"bandwidthLimitKbps": 800 + round_},
            )
            assert status == 200
        for _ in (1, 2):
            notes["library"].append(await _next(library))
            notes["download"].append(await _next(download))

    assert [(n["type"], n["payload"]["productId"], n["payload"]["deviceId"]) for n in notes["library"]] == [
        ("gameSettingsUpdated", str(game), "pc")
    ] * 2
    assert [n["payload"]["etag"] for n in notes["library"]] == ["v1", "v2"]
    assert [
        (n["type"], n["payload"]["bandwidthLimitKbps"], n["payload"]["deviceId"]) for n in notes["download"]
    ] == [
        ("downloadSettingsUpdated", 801, "pc"),
        ("downloadSettingsUpdated", 802, "pc"),
    ]
