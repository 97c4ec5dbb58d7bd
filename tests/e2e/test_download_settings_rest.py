"""Download settings through Envoy: REST (GET / PATCH /api/v1/download-client/settings) as the Flutter apps
call it, with the notification in the user's stream."""

from __future__ import annotations

import uuid

from tests.support.achievements import wait_notifications
from tests.support.ownership import grant
from tests.support.publishing import publish_files
from tests.support.rest import RestClient, error_reason, violations

SETTINGS = "/api/v1/download-client/settings"


async def test_get_and_patch_over_rest_with_mask_etag_and_notification(
    http, sessions, redis, grpc_target, tmp_path
):
    user, game = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, game)
    await publish_files(grpc_target, game, "2.0-beta", {"game.txt": game.bytes}, tmp_path, branch="beta")
    me = RestClient(http, user)

    status, body = await me.call("GET", SETTINGS)
    assert status == 200, body
    defaults = body["settings"]
    assert (defaults["maxConcurrentDownloads"], defaults["bandwidthLimitKbps"], defaults["etag"]) == (
        3,
        0,
        "v0",
    )

    status, body = await me.call(
        "PATCH",
        SETTINGS,
        params={"deviceId": "phone"},
        json={
            "maxConcurrentDownloads": 4,
            "bandwidthLimitKbps": 5000,
            "etag": "v0",
            "schedule": {"startTime": "01:00", "endTime": "07:00", "timeZone": "America/New_York"},
            "productBranches": [{"productId": str(game), "branch": "beta"}],
        },
    )
    assert status == 200, body
    written = body["settings"]
    assert (written["maxConcurrentDownloads"], written["bandwidthLimitKbps"], written["etag"]) == (
        4,
        5000,
        "v1",
    )
    assert written["schedule"] == {"startTime": "01:00", "endTime": "07:00", "timeZone": "America/New_York"}
    assert written["productBranches"] == [{"productId": str(game), "branch": "beta"}]
    assert await me.call("GET", SETTINGS) == (200, {"settings": written})

    status, body = await me.call("PATCH", SETTINGS, params={"updateMask": "schedule"}, json={"etag": "v1"})
    assert status == 200, body
    assert "schedule" not in body["settings"]
    assert body["settings"]["bandwidthLimitKbps"] == 5000

    status, body = await me.call("PATCH", SETTINGS, json={"bandwidthLimitKbps": 1, "etag": "v1"})
    assert (status, error_reason(body)) == (409, "ETAG_MISMATCH")

    notes = await wait_notifications(redis, user, 2)
    assert [(kind, n["etag"], n["deviceId"]) for kind, n in notes] == [
        ("downloadSettingsUpdated", "v1", "phone"),
        ("downloadSettingsUpdated", "v2", ""),
    ]


async def test_rest_validation_and_ownership_errors(http, grpc_target):
    me = RestClient(http, uuid.uuid4())

    status, body = await me.call(
        "PATCH", SETTINGS, json={"maxConcurrentDownloads": 11, "bandwidthLimitKbps": -5}
    )
    assert (status, error_reason(body), violations(body)) == (
        400,
        "VALIDATION_FAILED",
        ["settings.max_concurrent_downloads", "settings.bandwidth_limit_kbps"],
    )

    status, body = await me.call("PATCH", SETTINGS, json={"maxConcurrentDownloads": "many"})
    assert (status, error_reason(body)) == (400, "VALIDATION_FAILED")

    status, body = await me.call(
        "PATCH", SETTINGS, json={"productBranches": [{"productId": str(uuid.uuid4()), "branch": "beta"}]}
    )
    assert (status, error_reason(body)) == (403, "PRODUCT_ACCESS_DENIED")
    assert (await me.call("GET", SETTINGS))[1]["settings"]["etag"] == "v0"


async def test_user_b_does_not_see_user_a_settings_over_rest(http, grpc_target):
    alice, bob = RestClient(http, uuid.uuid4()), RestClient(http, uuid.uuid4())
    await alice.call("PATCH", SETTINGS, json={"maxConcurrentDownloads": 9})

    status, body = await bob.call("GET", SETTINGS)

    assert status == 200
    assert (body["settings"]["maxConcurrentDownloads"], body["settings"]["etag"]) == (3, "v0")
