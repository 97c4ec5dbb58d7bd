"""LibraryService over REST through Envoy (JSON transcoding), as the Flutter apps call it: seed flows 14.1
(browse, hide, categorise, filter, sort, search, page) and 14.6 (wishlist), with the events on Kafka,
isolation between users and validation errors rendered as JSON. Envoy's address: ENVOY_PORT (default 8080)."""

from __future__ import annotations

import uuid

import pytest

from library.v1 import library_service_pb2 as pb
from library.v1 import library_service_pb2_grpc
from server.core.events.cloudevents import LIBRARY_EVENTS_TOPIC
from tests.support.kafka import TopicReader, about, assert_cloud_event
from tests.support.library import grant_entitlements, upsert_products
from tests.support.rest import ENVOY, RestClient, error_reason, violations

ME = "/api/v1/library/me"


@pytest.fixture
async def library(channel):
    return library_service_pb2_grpc.LibraryServiceStub(channel)


async def own(library, user: uuid.UUID, titles: list[str]) -> dict[str, str]:
    """Caches the products and gives them to the user (the internal RPCs have no REST route): title → id."""
    products = {uuid.uuid4(): title for title in titles}
    await upsert_products(library, products)
    await grant_entitlements(library, user, *products, acquisition_type=pb.LibraryItem.GIFT)
    return {title: str(product) for product, title in products.items()}


async def test_flow_14_1_browse_hide_categorise_filter_sort_search_and_page_over_rest(
    http, library, settings
):
    me = RestClient(http, uuid.uuid4())
    products = await own(library, me.user, ["Stardew Valley", "Slay the Spire", "Hades", "Spelunky 2"])

    status, page = await me.call("GET", f"{ME}/items", params={"sortBy": "LAST_PLAYED_DESC"})
    assert status == 200 and page["totalSize"] == 4
    item = next(i for i in page["items"] if i["productId"] == products["Hades"])
    assert item["product"]["name"] == "Hades"
    assert item["acquisitionType"] == "GIFT" and item["installationStatus"] == "NOT_INSTALLED"

    status, body = await me.call("PATCH", f"{ME}/items/{item['id']}", json={"isHidden": True})
    assert status == 200 and body["libraryItem"]["isHidden"] is True
    _, page = await me.call("GET", f"{ME}/items")
    assert [i["product"]["name"] for i in page["items"]] == ["Slay the Spire", "Spelunky 2", "Stardew Valley"]
    _, page = await me.call("GET", f"{ME}/items", params={"includeHidden": "true"})
    assert page["totalSize"] == 4

    status, created = await me.call("POST", f"{ME}/categories", json={"name": "Roguelikes"})
    assert status == 200
    category_id = created["category"]["id"]
    for title in ("Slay the Spire", "Spelunky 2", "Hades"):
        [target] = [i for i in page["items"] if i["productId"] == products[title]]
        status, _ = await me.call(
            "PATCH",
            f"{ME}/items/{target['id']}",
            json={
                "categoryIds": [category_id],
                "installationStatus": "INSTALLED",
                "updateMask": "categoryIds",
            },
        )
        assert status == 200
    _, listed = await me.call("GET", f"{ME}/categories")
    assert [c["name"] for c in listed["categories"]] == ["Roguelikes"]

    _, in_category = await me.call("GET", f"{ME}/items", params={"categoryId": category_id})
    assert [i["product"]["name"] for i in in_category["items"]] == ["Slay the Spire", "Spelunky 2"]
    _, searched = await me.call("GET", f"{ME}/items", params={"search": "SP", "includeHidden": "true"})
    assert [i["product"]["name"] for i in searched["items"]] == ["Slay the Spire", "Spelunky 2"]
    _, installed = await me.call("GET", f"{ME}/items", params={"status": "INSTALLED"})
    assert installed.get("totalSize", 0) == 0  # the mask named only categoryIds

    seen, token = [], ""
    while True:
        params = {"pageSize": "1", "sortBy": "ADDED_AT_DESC", "includeHidden": "true"}
        if token:
            params["pageToken"] = token
        status, page = await me.call("GET", f"{ME}/items", params=params)
        assert status == 200 and page["totalSize"] == 4
        seen += [i["id"] for i in page["items"]]
        token = page.get("nextPageToken", "")
        if not token:
            break
    assert len(seen) == len(set(seen)) == 4

    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        added = await reader.wait_for(
            about(me.user, "com.platform.library.item.added.v1"),
            count=4,
        )
    assert len(added) == 4
    for event in added:
        assert_cloud_event(event)
        assert event["data"]["acquisitionType"] == "gift"
    assert {e["data"]["productId"] for e in added} == set(products.values())


async def test_flow_14_6_wishlist_add_duplicate_and_remove_over_rest(http, library, settings):
    me = RestClient(http, uuid.uuid4())
    product = str(uuid.uuid4())
    status, body = await me.call(
        "POST", f"{ME}/wishlist", json={"productId": product, "priority": 2, "notes": "xmas"}
    )
    assert status == 200
    assert (body["wishlistItem"]["productId"], body["wishlistItem"]["priority"]) == (product, 2)

    status, body = await me.call("POST", f"{ME}/wishlist", json={"productId": product})
    assert status == 409 and error_reason(body) == "WISHLIST_ITEM_ALREADY_EXISTS"
    _, listed = await me.call("GET", f"{ME}/wishlist")
    assert [i["productId"] for i in listed["items"]] == [product] and listed["items"][0]["notes"] == "xmas"

    status, body = await me.call("DELETE", f"{ME}/wishlist/{product}")
    assert status == 200 and body["removed"] is True
    status, body = await me.call("DELETE", f"{ME}/wishlist/{product}")
    assert status == 200 and not body.get("removed", False)
    _, listed = await me.call("GET", f"{ME}/wishlist")
    assert listed.get("items", []) == []

    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        await reader.wait_for(about(me.user, "com.platform.library.wishlist.item.removed.v1"))
        await reader.drain(1.0)
    mine = reader.matching(about(me.user))
    assert [e["type"] for e in mine] == [
        "com.platform.library.wishlist.item.added.v1",
        "com.platform.library.wishlist.item.removed.v1",
    ]
    assert all(e["data"] == {**e["data"], "userId": str(me.user), "productId": product} for e in mine)


async def test_another_user_cannot_see_or_change_items_over_rest(http, library):
    alice, bob = RestClient(http, uuid.uuid4()), RestClient(http, uuid.uuid4())
    await own(library, alice.user, ["Celeste"])
    _, page = await alice.call("GET", f"{ME}/items")
    item_id = page["items"][0]["id"]
    status, body = await alice.call("POST", f"{ME}/wishlist", json={"productId": str(uuid.uuid4())})
    assert status == 200, body

    status, body = await bob.call("PATCH", f"{ME}/items/{item_id}", json={"isHidden": True})
    assert status == 404 and error_reason(body) == "LIBRARY_ITEM_NOT_FOUND"
    _, page = await bob.call("GET", f"{ME}/items", params={"includeHidden": "true"})
    assert page.get("items", []) == []
    _, wishlist = await bob.call("GET", f"{ME}/wishlist")
    assert wishlist.get("items", []) == []
    _, page = await alice.call("GET", f"{ME}/items")
    assert page["items"][0]["isHidden"] is False

    async with http.get(f"{ENVOY}{ME}/items") as resp:
        assert resp.status == 401


async def test_invalid_rest_input_is_a_400_with_field_violations(http, library):
    me = RestClient(http, uuid.uuid4())
    status, body = await me.call("GET", f"{ME}/items", params={"pageSize": "-1", "categoryId": "nope"})
    assert status == 400 and error_reason(body) == "VALIDATION_FAILED"
    assert violations(body) == ["category_id", "page_size"]
    status, body = await me.call("POST", f"{ME}/categories", json={"name": "x" * 65})
    assert status == 400 and violations(body) == ["name"]
    status, body = await me.call("POST", f"{ME}/wishlist", json={"productId": "nope", "priority": -3})
    assert status == 400 and violations(body) == ["product_id", "priority"]
    _, listed = await me.call("GET", f"{ME}/categories")
    _, wishlist = await me.call("GET", f"{ME}/wishlist")
    assert listed.get("categories", []) == [] and wishlist.get("items", []) == []
