"""CloudSaveService end to end through Envoy, over REST (JSON transcoding, as the Flutter apps call it)
and over native gRPC (as game clients do), with the real PUT and GET to SeaweedFS, the event on Kafka as a
CloudEvent and the notifications in the user's Redis stream.

Seed flow 14.4 (a game uploads a save) and 14.5 (a new device downloads the latest one).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import UTC, datetime
from urllib.parse import quote

import grpc
import httpx

from library.v1 import cloud_save_service_pb2 as pb
from library.v1 import cloud_save_service_pb2_grpc
from server.core.events.cloudevents import LIBRARY_EVENTS_TOPIC
from tests.support.achievements import wait_notifications
from tests.support.kafka import TopicReader, about, assert_cloud_event
from tests.support.ownership import grant
from tests.support.rest import ERROR_INFO, RestClient, error_reason, violations
from tests.support.saves import UPLOADED, SaveFile, fetch, push

SAVES = "/api/v1/library/me/savegames"
ENVOY_GRPC = f"127.0.0.1:{os.environ.get('ENVOY_PORT', '8080')}"


def upload_body(save: SaveFile, *, base: int = 0, device: str = "phone", **fields) -> dict:
    return {
        "fileSizeBytes": str(len(save.body)),
        "fileHashSha256": save.sha256,
        "baseVersion": base,
        "clientModifiedAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "deviceId": device,
        **fields,
    }


async def rest_push(
    me: RestClient, product: uuid.UUID, slot: str, save: SaveFile, **fields
) -> tuple[int, dict]:
    status, ticket = await me.call(
        "POST", f"{SAVES}/{product}/slots/{quote(slot)}/upload-url", json=upload_body(save, **fields)
    )
    assert status == 200, ticket
    async with httpx.AsyncClient() as http:
        stored = await http.put(ticket["uploadUrl"], content=save.body, headers=ticket["requiredHeaders"])
    assert stored.status_code == 200, stored.text
    return await me.call("POST", f"{SAVES}/confirm-upload", json={"savegameId": ticket["savegameId"]})


async def test_seed_flows_14_4_and_14_5_over_rest(http, sessions, redis, settings):
    user, product = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    me = RestClient(http, user)
    save = SaveFile.random(100 * 1024)

    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        status, confirmed = await rest_push(me, product, "Chapter 3.autosave", save, progressPercentage=42.5)
        [event] = await reader.wait_for(about(user, UPLOADED))

    assert status == 200, confirmed
    assert confirmed["outcome"] == "COMMITTED"
    assert confirmed["saveGame"]["versionNumber"] == 1
    assert confirmed["saveGame"]["slotName"] == "Chapter 3.autosave"
    assert_cloud_event(event)
    assert event["data"]["savegameId"] == confirmed["saveGame"]["savegameId"]
    assert event["data"]["slotName"] == "Chapter 3.autosave"
    [(kind, payload)] = await wait_notifications(redis, user, 1)
    assert (kind, payload["deviceId"], payload["versionNumber"]) == ("cloudSaveSynced", "phone", 1)

    # 14.5: a new device lists the product's saves and downloads the latest.
    status, listing = await me.call("GET", f"{SAVES}/{product}")
    assert status == 200, listing
    [slot] = listing["slots"]
    assert slot["head"]["progressPercentage"] == 42.5
    assert listing["usedBytes"] == str(len(save.body))
    status, link = await me.call("GET", f"{SAVES}/{slot['head']['savegameId']}/download-url")
    assert status == 200, link
    async with httpx.AsyncClient() as client:
        downloaded = await client.get(link["downloadUrl"])
    assert hashlib.sha256(downloaded.content).hexdigest() == link["saveGame"]["fileHashSha256"] == save.sha256


async def test_seed_flows_14_4_and_14_5_over_native_grpc_through_envoy(sessions):
    user, product = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    save = SaveFile.random(100 * 1024)
    async with grpc.aio.insecure_channel(ENVOY_GRPC) as channel:
        stub = cloud_save_service_pb2_grpc.CloudSaveServiceStub(channel)
        confirmed = await push(stub, user, product, "slot_1", save)
        assert confirmed.outcome == pb.ConfirmSaveGameUploadResponse.COMMITTED
        assert await fetch(stub, user, confirmed.save_game.savegame_id) == save.body


async def test_a_conflict_over_rest_is_409_with_both_sides_then_resolved_and_restored(http, sessions, redis):
    user, product = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    me = RestClient(http, user)
    first = SaveFile.random()
    await rest_push(me, product, "s", first, device="pc")
    await rest_push(me, product, "s", SaveFile.random(), base=1, device="pc")

    status, body = await rest_push(
        me, product, "s", SaveFile.random(), base=1, device="phone", playtimeSeconds="90"
    )

    assert status == 409
    assert error_reason(body) == "SAVEGAME_CONFLICT_RESOLUTION_REQUIRED"
    [info] = [d for d in body["details"] if d["@type"] == ERROR_INFO]
    sides = info["metadata"]
    assert (sides["localDeviceId"], sides["cloudDeviceId"], sides["cloudVersionNumber"]) == (
        "phone",
        "pc",
        "2",
    )
    assert sides["localPlaytimeSeconds"] == "90" and "cloudPlaytimeSeconds" not in sides
    kinds = [kind for kind, _ in await wait_notifications(redis, user, 3)]
    assert kinds == ["cloudSaveSynced", "cloudSaveSynced", "cloudSaveConflict"]

    _, listing = await me.call("GET", f"{SAVES}/{product}")
    [slot] = listing["slots"]
    status, resolved = await me.call(
        "POST",
        f"{SAVES}/{product}/slots/s/resolve",
        json={
            "savegameId": sides["savegameId"],
            "resolution": "KEEP_BOTH",
            "newSlotName": "s phone",
            "etag": slot["etag"],
        },
    )
    assert status == 200, resolved
    assert resolved["newSlot"]["head"]["deviceId"] == "phone"
    status, stale = await me.call(
        "POST",
        f"{SAVES}/{product}/slots/s/restore",
        json={"versionNumber": 1, "deviceId": "pc", "etag": slot["etag"]},  # the conflict is gone: stale
    )
    assert (status, error_reason(stale)) == (409, "ETAG_MISMATCH")
    status, restored = await me.call(
        "POST", f"{SAVES}/{product}/slots/s/restore", json={"versionNumber": 1, "deviceId": "pc"}
    )
    assert status == 200, restored
    assert restored["head"]["versionNumber"] == 3
    assert restored["head"]["fileHashSha256"] == first.sha256


async def test_rest_errors_name_the_field_and_other_users_saves_are_404(http, sessions):
    user, other, product = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    me, them = RestClient(http, user), RestClient(http, other)
    save = SaveFile.random()

    status, body = await me.call(
        "POST",
        f"{SAVES}/{product}/slots/{quote('no*stars')}/upload-url",
        json={
            **upload_body(save),
            "fileSizeBytes": "0",
            "fileHashSha256": "abc",
            "conflictPolicy": "SOMETIMES",
        },
    )
    assert status == 400
    assert error_reason(body) == "VALIDATION_FAILED"

    status, body = await me.call(
        "POST", f"{SAVES}/{product}/slots/s/upload-url", json={**upload_body(save), "fileSizeBytes": "0"}
    )
    assert (status, violations(body)) == (400, ["file_size_bytes"])

    _, confirmed = await rest_push(me, product, "s", save)
    savegame_id = confirmed["saveGame"]["savegameId"]
    status, body = await them.call("GET", f"{SAVES}/{savegame_id}/download-url")
    assert (status, error_reason(body)) == (404, "SAVEGAME_NOT_FOUND")
    status, body = await them.call("GET", f"{SAVES}/{product}")
    assert (status, body.get("slots", [])) == (200, [])
    status, body = await them.call("POST", f"{SAVES}/{product}/slots/s/upload-url", json=upload_body(save))
    assert (status, error_reason(body)) == (403, "PRODUCT_ACCESS_DENIED")
