"""Library extras over REST through Envoy (issue 12), as the Flutter apps call them: wishlist items updated
in place (PATCH), categories renamed (PATCH) and deleted (DELETE) with their AIP-134/135 semantics and
errors, another user's data out of reach, hidden achievements masked completely in the JSON, and offline
sessions refused before the acquisition or beyond the age limit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from library.v1 import library_service_pb2_grpc
from server.core.events.cloudevents import rfc3339
from tests.support.achievements import achievement, define
from tests.support.library import grant_entitlements
from tests.support.ownership import grant
from tests.support.rest import RestClient, error_reason, violations

ME = "/api/v1/library/me"


@pytest.fixture
async def library(channel):
    return library_service_pb2_grpc.LibraryServiceStub(channel)


async def test_wishlist_item_is_patched_in_place_and_another_users_is_not_found(http):
    me, other = RestClient(http, uuid.uuid4()), RestClient(http, uuid.uuid4())
    game = str(uuid.uuid4())
    status, added = await me.call("POST", f"{ME}/wishlist", json={"productId": game, "notes": "maybe"})
    assert status == 200

    status, body = await me.call("PATCH", f"{ME}/wishlist/{game}", json={"priority": 2})
    assert status == 200
    item = body["wishlistItem"]
    assert (item["id"], item["priority"], item["notes"]) == (added["wishlistItem"]["id"], 2, "maybe")
    status, body = await me.call("PATCH", f"{ME}/wishlist/{game}", json={"notes": "", "updateMask": "notes"})
    assert status == 200 and (body["wishlistItem"]["notes"], body["wishlistItem"]["priority"]) == ("", 2)

    status, body = await other.call("PATCH", f"{ME}/wishlist/{game}", json={"priority": 1})
    assert status == 404 and error_reason(body) == "WISHLIST_ITEM_NOT_FOUND"
    status, body = await me.call("PATCH", f"{ME}/wishlist/{game}", json={"priority": -1})
    assert status == 400 and violations(body) == ["priority"]
    _, listed = await me.call("GET", f"{ME}/wishlist")
    assert [(i["priority"], i.get("notes", "")) for i in listed["items"]] == [(2, "")]


async def test_categories_are_renamed_and_deleted_over_rest_for_their_owner_only(http, library):
    me, other = RestClient(http, uuid.uuid4()), RestClient(http, uuid.uuid4())
    game = uuid.uuid4()
    await grant_entitlements(library, me.user, game)
    ids = {}
    for name in ("Shooters", "Strategy"):
        status, body = await me.call("POST", f"{ME}/categories", json={"name": name})
        assert status == 200
        ids[name] = body["category"]["id"]
    _, page = await me.call("GET", f"{ME}/items")
    item_id = page["items"][0]["id"]
    await me.call("PATCH", f"{ME}/items/{item_id}", json={"categoryIds": list(ids.values())})

    status, body = await me.call("PATCH", f"{ME}/categories/{ids['Shooters']}", json={"name": "FPS"})
    assert status == 200 and body["category"] == {**body["category"], "id": ids["Shooters"], "name": "FPS"}
    status, body = await me.call("PATCH", f"{ME}/categories/{ids['Shooters']}", json={"name": "strategy"})
    assert status == 409 and error_reason(body) == "CATEGORY_ALREADY_EXISTS"
    status, body = await me.call("PATCH", f"{ME}/categories/{ids['Shooters']}", json={"name": " "})
    assert status == 400 and violations(body) == ["name"]

    for method, json in (("PATCH", {"name": "Mine now"}), ("DELETE", None)):
        status, body = await other.call(method, f"{ME}/categories/{ids['Strategy']}", json=json)
        assert status == 404 and error_reason(body) == "CATEGORY_NOT_FOUND"

    status, body = await me.call("DELETE", f"{ME}/categories/{ids['Strategy']}")
    assert (status, body) == (200, {})
    status, body = await me.call("DELETE", f"{ME}/categories/{ids['Strategy']}")
    assert status == 404 and error_reason(body) == "CATEGORY_NOT_FOUND"
    _, page = await me.call("GET", f"{ME}/items")
    assert page["items"][0]["categoryIds"] == [ids["Shooters"]]
    _, categories = await me.call("GET", f"{ME}/categories")
    assert [c["name"] for c in categories["categories"]] == ["FPS"]


async def test_hidden_locked_achievements_show_no_api_name_or_progress_over_rest(http, achievements, owner):
    user, game = owner
    me = RestClient(http, user)
    await define(
        achievements,
        game,
        achievement("VISIBLE", max_progress=4),
        achievement("SECRET", hidden=True, max_progress=4),
    )
    for name in ("VISIBLE", "SECRET"):
        body = {"productId": str(game), "achievementApiName": name, "progress": 2}
        status, _ = await me.call("POST", f"{ME}/achievements/progress", json=body)
        assert status == 200
    status, body = await me.call("GET", f"{ME}/achievements/status", params={"productIds": str(game)})
    assert status == 200
    [visible] = [s for s in body["achievementStatuses"] if not s.get("hidden")]
    [secret] = [s for s in body["achievementStatuses"] if s.get("hidden")]
    assert (visible["achievementApiName"], visible["progress"], visible["progressPercentage"]) == (
        "VISIBLE",
        "2",
        50,
    )
    assert secret["hidden"] is True
    masked = (
        "achievementApiName",
        "displayName",
        "description",
        "progress",
        "maxProgress",
        "progressPercentage",
    )
    assert [secret.get(k) for k in masked] == ["", "", "", "0", "0", 0]


async def test_offline_sessions_before_the_acquisition_or_too_old_are_refused_over_rest(http, sessions):
    user, game = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    await grant(sessions, user, game, acquired_at=now - timedelta(days=3))
    me = RestClient(http, user)

    def session(days_ago: float) -> dict:
        start = now - timedelta(days=days_ago)
        return {
            "clientSessionId": str(uuid.uuid4()),
            "productId": str(game),
            "deviceId": "deck",
            "startTime": rfc3339(start),
            "endTime": rfc3339(start + timedelta(hours=1)),
        }

    body = {"sessions": [session(4), session(2), session(45)]}
    status, recorded = await me.call("POST", f"{ME}/playtime/sessions/offline", json=body)
    assert status == 200, recorded
    assert [(r["outcome"], r.get("rejectionReason")) for r in recorded["results"]] == [
        ("REJECTED", "BEFORE_ACQUISITION"),
        ("ACCEPTED", "REJECTION_REASON_UNSPECIFIED"),
        ("REJECTED", "TOO_OLD"),
    ]
    assert recorded["stats"][0]["totalPlaytimeSeconds"] == "3600"
