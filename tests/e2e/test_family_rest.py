"""Family sharing over REST through Envoy (JSON transcoding), as the Flutter apps call it: invite, list,
accept, the errors of wrong users and illegal transitions rendered as JSON, the borrower's library and
playtime of a borrowed game, one player per library, and revocation."""

from __future__ import annotations

import uuid

import pytest

from library.v1 import library_service_pb2_grpc
from tests.support.family import products
from tests.support.library import grant_entitlements
from tests.support.rest import RestClient, error_reason

LINKS = "/api/v1/library/me/family/links"
PLAY = "/api/v1/library/me/playtime/sessions"


@pytest.fixture
async def library(channel):
    return library_service_pb2_grpc.LibraryServiceStub(channel)


async def test_a_family_link_lends_the_library_over_rest(http, library):
    owner, borrower, stranger = (RestClient(http, uuid.uuid4()) for _ in range(3))
    game, other = await products(library, ("game", None), ("game", None))
    await grant_entitlements(library, owner.user, game, other)

    status, body = await owner.call("POST", LINKS, json={"sharedUserId": str(borrower.user)})
    assert status == 200 and body["link"]["status"] == "PENDING_APPROVAL"
    link_id = body["link"]["linkId"]
    status, body = await owner.call("POST", LINKS, json={"sharedUserId": str(borrower.user)})
    assert (status, error_reason(body)) == (409, "FAMILY_SHARING_LINK_ALREADY_EXISTS")
    status, body = await borrower.call("GET", LINKS, params={"role": "SHARED_USER"})
    assert status == 200 and [link["linkId"] for link in body["links"]] == [link_id]
    status, body = await stranger.call("GET", LINKS)
    assert status == 200 and body.get("links", []) == [] and body.get("totalSize", 0) == 0

    status, body = await stranger.call("POST", f"{LINKS}/{link_id}/accept", json={})
    assert (status, error_reason(body)) == (404, "FAMILY_SHARING_LINK_NOT_FOUND")
    status, body = await owner.call("POST", f"{LINKS}/{link_id}/accept", json={})
    assert (status, error_reason(body)) == (403, "PERMISSION_DENIED")
    status, body = await borrower.call("POST", f"{LINKS}/{link_id}/accept", json={})
    assert status == 200 and body["link"]["status"] == "ACTIVE"
    status, body = await borrower.call("POST", f"{LINKS}/{link_id}/accept", json={})
    assert (status, error_reason(body)) == (400, "FAMILY_SHARING_LINK_INVALID_STATE")
    status, body = await owner.call("POST", f"{LINKS}/{link_id}/cancel", json={})
    assert (status, error_reason(body)) == (400, "FAMILY_SHARING_LINK_INVALID_STATE")

    status, page = await borrower.call("GET", "/api/v1/library/me/items")
    assert status == 200 and page["totalSize"] == 2
    for item in page["items"]:
        assert (item["acquisitionType"], item["lenderUserId"]) == ("FAMILY_SHARED", str(owner.user))

    start = {"productId": str(game), "deviceId": "phone"}
    status, started = await borrower.call("POST", f"{PLAY}/start", json=start)
    assert status == 200
    status, _ = await borrower.call(
        "POST", f"{PLAY}/end", json={"sessionId": started["sessionId"], "productId": str(game)}
    )
    assert status == 200
    status, _ = await owner.call("POST", f"{PLAY}/start", json={"productId": str(other), "deviceId": "pc"})
    assert status == 200
    status, body = await borrower.call("POST", f"{PLAY}/start", json=start)
    assert (status, error_reason(body)) == (400, "FAMILY_SHARED_GAME_IN_USE")

    status, body = await borrower.call("POST", f"{LINKS}/{link_id}/revoke", json={})
    assert status == 200 and body["link"]["endReason"] == "REVOKED_BY_SHARED_USER"
    status, page = await borrower.call("GET", "/api/v1/library/me/items")
    assert status == 200 and page.get("items", []) == []
    status, body = await borrower.call("POST", f"{PLAY}/start", json=start)
    assert (status, error_reason(body)) == (403, "PRODUCT_ACCESS_DENIED")
