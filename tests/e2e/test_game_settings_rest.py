"""GameSettingsSyncService through Envoy: REST (JSON transcoding) as the Flutter apps call it, and native
gRPC through the same edge, as game clients do. Ownership is a library item row."""

from __future__ import annotations

import asyncio
import os
import uuid

import grpc
import pytest

from library.v1 import game_settings_service_pb2_grpc
from tests.support.achievements import wait_notifications
from tests.support.game_settings import get, payload, put
from tests.support.ownership import grant
from tests.support.rest import RestClient, error_reason, violations

ENVOY_GRPC = f"127.0.0.1:{os.environ.get('ENVOY_PORT', '8080')}"


def path(product: uuid.UUID | str) -> str:
    return f"/api/v1/library/me/game-settings/{product}"


async def test_get_put_and_merge_patch_over_rest_with_the_notification(http, owner, redis):
    user, product = owner
    me = RestClient(http, user)

    status, body = await me.call("GET", path(product))
    assert status == 200, body
    empty = body["gameSettings"]
    assert empty["settingsPayload"] == {}
    assert empty["etag"]
    assert "lastSyncedAt" not in empty

    status, body = await me.call(
        "PUT",
        path(product),
        json={
            "settingsPayload": {"graphics": {"quality": "high", "vsync": True, "fov": 90}, "sound": 0.7},
            "etag": empty["etag"],
            "deviceId": "steam-deck",
        },
    )
    assert status == 200, body
    written = body["gameSettings"]
    assert written["settingsPayload"] == {
        "graphics": {"quality": "high", "vsync": True, "fov": 90},
        "sound": 0.7,
    }
    assert written["updatedByDeviceId"] == "steam-deck"

    status, body = await me.call(
        "PUT",
        path(product),
        json={
            "settingsPayload": {"graphics": {"vsync": None, "quality": "ultra"}},
            "merge": True,
            "etag": written["etag"],
        },
    )
    assert status == 200, body
    merged = body["gameSettings"]
    assert merged["settingsPayload"] == {"graphics": {"quality": "ultra", "fov": 90}, "sound": 0.7}
    assert (await me.call("GET", path(product))) == (200, {"gameSettings": merged})

    notes = await wait_notifications(redis, user, 2)
    assert [(kind, n["etag"], n["deviceId"]) for kind, n in notes] == [
        ("gameSettingsUpdated", written["etag"], "steam-deck"),
        ("gameSettingsUpdated", merged["etag"], ""),
    ]


async def test_a_stale_etag_over_rest_is_409_etag_mismatch(http, owner):
    user, product = owner
    me = RestClient(http, user)
    _, body = await me.call("PUT", path(product), json={"settingsPayload": {"a": 1}})
    stale = body["gameSettings"]["etag"]
    await me.call("PUT", path(product), json={"settingsPayload": {"a": 2}, "etag": stale})

    status, body = await me.call("PUT", path(product), json={"settingsPayload": {"a": 3}, "etag": stale})

    assert (status, error_reason(body)) == (409, "ETAG_MISMATCH")
    assert (await me.call("GET", path(product)))[1]["gameSettings"]["settingsPayload"] == {"a": 2}


@pytest.mark.parametrize("document", [[1, 2], "text", 3, True])
async def test_a_payload_that_is_not_a_json_object_is_400_and_writes_nothing(http, owner, document):
    user, product = owner
    me = RestClient(http, user)

    status, body = await me.call("PUT", path(product), json={"settingsPayload": document})

    assert (status, error_reason(body)) == (400, "VALIDATION_FAILED"), body
    assert (await me.call("GET", path(product)))[1]["gameSettings"]["settingsPayload"] == {}


async def test_rest_validation_and_ownership_errors(http, owner):
    user, product = owner
    me = RestClient(http, user)

    status, body = await me.call("PUT", path(product), json={"deviceId": "x" * 129})
    assert status == 400
    assert (error_reason(body), violations(body)) == ("VALIDATION_FAILED", ["settings_payload", "device_id"])

    status, body = await me.call("PUT", path(product), json={"settingsPayload": {"blob": "x" * (64 * 1024)}})
    assert (status, error_reason(body), violations(body)) == (400, "VALIDATION_FAILED", ["settings_payload"])

    status, body = await me.call("GET", path("not-a-uuid"))
    assert (status, error_reason(body), violations(body)) == (400, "VALIDATION_FAILED", ["product_id"])

    unowned = uuid.uuid4()
    for method, body_json in (("GET", None), ("PUT", {"settingsPayload": {"a": 1}})):
        status, body = await me.call(method, path(unowned), json=body_json)
        assert (status, error_reason(body)) == (403, "PRODUCT_ACCESS_DENIED")


async def test_user_b_cannot_read_or_write_user_a_settings_over_rest(http, sessions):
    a, b, product = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await grant(sessions, a, product)
    alice, bob = RestClient(http, a), RestClient(http, b)
    _, body = await alice.call("PUT", path(product), json={"settingsPayload": {"who": "a"}})
    mine = body["gameSettings"]

    for method, body_json in (
        ("GET", None),
        ("PUT", {"settingsPayload": {"who": "b"}, "etag": mine["etag"]}),
    ):
        status, body = await bob.call(method, path(product), json=body_json)
        assert (status, error_reason(body)) == (403, "PRODUCT_ACCESS_DENIED")
    assert await alice.call("GET", path(product)) == (200, {"gameSettings": mine})


async def test_native_grpc_through_the_edge_writes_races_and_replays(owner, redis, grpc_target):
    user, product = owner
    async with grpc.aio.insecure_channel(ENVOY_GRPC) as channel:
        stub = game_settings_service_pb2_grpc.GameSettingsSyncServiceStub(channel)
        base = (await put(stub, user, product, {"lang": "en"}, device_id="pc")).game_settings

        results = await asyncio.gather(
            put(stub, user, product, {"lang": "de"}, etag=base.etag, merge=True),
            put(stub, user, product, {"lang": "fr"}, etag=base.etag, merge=True),
            return_exceptions=True,
        )
        [won] = [r for r in results if not isinstance(r, Exception)]
        [lost] = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert lost.code() == grpc.StatusCode.ABORTED
        assert payload(won.game_settings)["lang"] in ("de", "fr")
        assert await get(stub, user, product) == won.game_settings

        request_id = str(uuid.uuid4())
        first = await put(
            stub, user, product, {"lang": "it"}, etag=won.game_settings.etag, request_id=request_id
        )
        replay = await put(
            stub, user, product, {"lang": "xx"}, etag=won.game_settings.etag, request_id=request_id
        )
        assert replay == first
        assert await get(stub, user, product) == first.game_settings
    notes = await wait_notifications(redis, user, 3)
    assert [n["etag"] for _, n in notes] == [base.etag, won.game_settings.etag, first.game_settings.etag]
