"""LibraryService over native gRPC against the real stack (Postgres, Redis, Kafka): seed flows 14.1 and 14.6,
entitlement grants (RPC and payment event) and revocation, the product cache, filters, sorts and pages,
isolation between users, the service role, and input validation."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from sqlalchemy import func, select, update

from library.v1 import library_service_pb2 as pb
from library.v1 import library_service_pb2_grpc
from server.core.db import create_engine, create_sessionmaker
from server.core.events.cloudevents import (
    CATALOG_EVENTS_TOPIC,
    LIBRARY_EVENTS_TOPIC,
    PAYMENT_EVENTS_TOPIC,
    make_cloud_event,
)
from server.core.uow import UnitOfWorkFactory
from server.library import use_cases
from server.library.tables import Category, LibraryItem, Product, WishlistItem
from tests.support.auth import service_metadata, user_metadata
from tests.support.grpc_errors import failure
from tests.support.kafka import TopicReader, about, assert_cloud_event, publish
from tests.support.library import grant_entitlements, upsert_products
from tests.support.waiting import wait_until

Item = pb.LibraryItem
SortBy = pb.ListLibraryItemsRequest.SortBy
ITEM_ADDED = "com.platform.library.item.added.v1"
ITEM_REVOKED = "com.platform.library.item.revoked.v1"
WISHLIST_ADDED = "com.platform.library.wishlist.item.added.v1"
WISHLIST_REMOVED = "com.platform.library.wishlist.item.removed.v1"


@pytest.fixture
def stub(channel) -> library_service_pb2_grpc.LibraryServiceStub:
    return library_service_pb2_grpc.LibraryServiceStub(channel)


async def list_all(stub, user: uuid.UUID, **filters) -> list[pb.LibraryItem]:
    """Every page of a listing, two items at a time."""
    items, token = [], ""
    while True:
        page = await stub.ListLibraryItems(
            pb.ListLibraryItemsRequest(page_size=2, page_token=token, **filters), metadata=user_metadata(user)
        )
        items.extend(page.items)
        assert page.total_size >= len(items)
        token = page.next_page_token
        if not token:
            assert page.total_size == len(items)
            return items


def names(items) -> list[str]:
    return [i.product.name for i in items]


async def test_flow_14_1_granted_games_are_listed_with_metadata_and_announced_once(stub, settings):
    user, game, dlc = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await upsert_products(stub, {game: "Hollow Knight", dlc: "Hollow Knight OST"})
    order = str(uuid.uuid4())
    granted = await grant_entitlements(stub, user, game, dlc, order_id=order)
    assert sorted(granted.newly_granted_product_ids) == sorted([str(game), str(dlc)])

    page = await stub.ListLibraryItems(
        pb.ListLibraryItemsRequest(sort_by=SortBy.LAST_PLAYED_DESC), metadata=user_metadata(user)
    )
    assert page.total_size == 2
    [item] = [i for i in page.items if i.product_id == str(game)]
    assert item.product.name == "Hollow Knight"
    assert item.product.product_type == pb.Product.GAME
    assert item.acquisition_type == Item.PURCHASE
    assert item.installation_status == Item.NOT_INSTALLED
    assert not item.is_hidden

    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        await reader.wait_for(about(user, ITEM_ADDED), count=2)
        await reader.drain(1.0)
    added = reader.matching(about(user, ITEM_ADDED))
    assert len(added) == 2
    for event in added:
        assert_cloud_event(event)
        assert set(event["data"]) == {"userId", "productId", "acquisitionType", "timestamp"}
        assert event["data"]["userId"] == str(user)
        assert event["data"]["acquisitionType"] == "purchase"
    assert {e["data"]["productId"] for e in added} == {str(game), str(dlc)}


async def test_same_order_granted_twice_adds_nothing_and_emits_nothing_the_second_time(stub, settings):
    user, game = uuid.uuid4(), uuid.uuid4()
    order = str(uuid.uuid4())
    first = await grant_entitlements(stub, user, game, order_id=order)
    second = await grant_entitlements(stub, user, game, order_id=order)
    assert list(first.newly_granted_product_ids) == [str(game)]
    assert list(second.newly_granted_product_ids) == []
    assert [i.id for i in second.library_items] == [i.id for i in first.library_items]
    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        await reader.wait_for(about(user))
        await reader.drain(1.5)
    assert len(reader.matching(about(user, ITEM_ADDED))) == 1


async def test_concurrent_grants_of_one_order_and_concurrent_retries_apply_once(stub, settings):
    user, game = uuid.uuid4(), uuid.uuid4()
    order = str(uuid.uuid4())
    results = await asyncio.gather(*(grant_entitlements(stub, user, game, order_id=order) for _ in range(10)))
    assert sum(len(r.newly_granted_product_ids) for r in results) == 1
    assert {r.library_items[0].id for r in results} == {results[0].library_items[0].id}

    me, request_id = user_metadata(user), str(uuid.uuid4())
    created = await asyncio.gather(
        *(
            stub.CreateCategory(pb.CreateCategoryRequest(name="Same", request_id=request_id), metadata=me)
            for _ in range(10)
        )
    )
    assert len({c.category.id for c in created}) == 1
    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        await reader.wait_for(about(user, ITEM_ADDED))
        await reader.drain(1.5)
    assert len(reader.matching(about(user, ITEM_ADDED))) == 1


async def test_grant_replayed_with_the_same_request_id_returns_the_first_response(stub):
    user, game, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    request_id = str(uuid.uuid4())
    first = await grant_entitlements(stub, user, game, request_id=request_id)
    replay = await grant_entitlements(stub, user, game, request_id=request_id)
    assert replay == first
    assert list(replay.newly_granted_product_ids) == [str(game)]
    # Another grant without the request id sees the product as already owned.
    again = await grant_entitlements(stub, user, game, other)
    assert list(again.newly_granted_product_ids) == [str(other)]


async def test_replayed_payment_event_grants_once_and_emits_one_item_added(stub, settings):
    user, game, dlc = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    order = str(uuid.uuid4())
    data = {
        "userId": str(user),
        "orderId": order,
        "items": [
            {"productId": str(game), "productType": "game"},
            {"productId": str(dlc), "productType": "dlc"},
        ],
        "timestamp": "2026-11-20T10:00:00Z",
    }
    event = make_cloud_event(
        event_type="com.platform.payment.transaction.completed.v1",
        source="/payment-service",
        subject=str(user),
        data=data,
    )
    resent = {**event, "id": str(uuid.uuid4())}  # the payment service re-sends the same order
    await publish(
        settings.kafka_bootstrap_servers, PAYMENT_EVENTS_TOPIC, [event, event, resent], key=str(user)
    )

    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        await reader.wait_for(about(user, ITEM_ADDED), count=2, timeout=30)
        await reader.drain(2.0)
    added = reader.matching(about(user, ITEM_ADDED))
    assert sorted(e["data"]["productId"] for e in added) == sorted([str(game), str(dlc)])

    items = await list_all(stub, user)
    assert sorted(i.product_id for i in items) == sorted([str(game), str(dlc)])
    assert {i.acquisition_type for i in items} == {Item.PURCHASE}
    acquired = items[0].acquisition_timestamp.ToDatetime(tzinfo=UTC)
    assert acquired == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


async def test_catalog_product_updated_event_refreshes_the_cache_and_stale_ones_are_ignored(
    stub, settings, sessions
):
    user, game = uuid.uuid4(), uuid.uuid4()
    await grant_entitlements(stub, user, game)
    now = datetime.now(UTC)

    def updated(name: str, at: datetime) -> dict:
        return make_cloud_event(
            event_type="com.platform.catalog.product.updated.v1",
            source="/catalog-service",
            subject=str(game),
            data={
                "productId": str(game),
                "updatedFields": ["name", "developer"],
                "name": name,
                "developer": "Team Cherry",
                "updatedAt": at.isoformat(),
            },
        )

    marker_id = uuid.uuid4()
    marker = make_cloud_event(
        event_type="com.platform.catalog.product.updated.v1",
        source="/catalog-service",
        subject=str(marker_id),
        data={"productId": str(marker_id), "name": "marker", "updatedAt": now.isoformat()},
    )
    # One key for all three: one partition, consumed in the order sent, so the stale update is handled
    # after the newer one and the marker after both.
    await publish(
        settings.kafka_bootstrap_servers,
        CATALOG_EVENTS_TOPIC,
        [updated("Silksong", now), updated("Old Name", now - timedelta(days=1)), marker],
        key=str(game),
    )

    async def marker_cached() -> bool:
        async with sessions() as session:
            name = await session.scalar(select(Product.name).where(Product.product_id == marker_id))
        return name is not None

    await wait_until(marker_cached, what="the marker product update to reach the product cache")
    [item] = await list_all(stub, user)
    assert item.product.name == "Silksong"
    assert item.product.developer == "Team Cherry"


async def test_upsert_products_skips_entries_older_than_the_cache(stub):
    product = uuid.uuid4()
    now = datetime.now(UTC).replace(microsecond=0)

    def entry(name: str, at: datetime) -> pb.Product:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(at)
        return pb.Product(product_id=str(product), name=name, updated_at=stamp)

    first = await stub.UpsertProducts(
        pb.UpsertProductsRequest(products=[entry("New", now)]), metadata=service_metadata()
    )
    stale = await stub.UpsertProducts(
        pb.UpsertProductsRequest(products=[entry("Old", now - timedelta(hours=1))]),
        metadata=service_metadata(),
    )
    assert (first.upserted_count, first.skipped_count) == (1, 0)
    assert (stale.upserted_count, stale.skipped_count) == (0, 1)
    user = uuid.uuid4()
    await grant_entitlements(stub, user, product)
    [item] = await list_all(stub, user)
    assert item.product.name == "New"


async def test_filters_sorts_search_and_pages_are_stable(stub, sessions):
    user = uuid.uuid4()
    titles = ["dark souls", "Celeste", "DARKEST Dungeon", "Braid", "50% Off_Sale", "Axiom Verge"]
    products = {uuid.uuid4(): t for t in titles}
    await upsert_products(stub, products)
    await grant_entitlements(stub, user, *products)
    by_name = {t: p for p, t in products.items()}
    base = datetime(2026, 1, 1, tzinfo=UTC)
    async with sessions() as session, session.begin():
        for i, title in enumerate(titles):
            played = base + timedelta(days=i) if title in ("Celeste", "Braid", "Axiom Verge") else None
            await session.execute(
                update(LibraryItem)
                .where(LibraryItem.user_id == user, LibraryItem.product_id == by_name[title])
                .values(
                    last_played_timestamp=played,
                    added_to_library_at=base + timedelta(hours=i % 3),  # ties: broken by item id
                    installation_status="installed" if title in ("Braid", "Celeste") else "not_installed",
                )
            )

    assert names(await list_all(stub, user)) == [
        "50% Off_Sale", "Axiom Verge", "Braid", "Celeste", "dark souls", "DARKEST Dungeon"
    ]  # fmt: skip
    assert names(await list_all(stub, user, sort_by=SortBy.LAST_PLAYED_DESC)) == [
        "Axiom Verge", "Braid", "Celeste", "50% Off_Sale", "dark souls", "DARKEST Dungeon"
    ]  # fmt: skip
    added = await list_all(stub, user, sort_by=SortBy.ADDED_AT_DESC)
    keys = [(-i.added_to_library_at.ToDatetime().timestamp(), i.id) for i in added]
    assert keys == sorted(keys) and len(added) == 6
    assert names(await list_all(stub, user, search="dArK")) == ["dark souls", "DARKEST Dungeon"]
    assert names(await list_all(stub, user, search="%")) == ["50% Off_Sale"]
    assert names(await list_all(stub, user, search="f_s")) == ["50% Off_Sale"]
    assert names(await list_all(stub, user, search="_")) == ["50% Off_Sale"]
    assert names(await list_all(stub, user, status=Item.INSTALLED)) == ["Braid", "Celeste"]

    # A page token belongs to its query.
    first = await stub.ListLibraryItems(pb.ListLibraryItemsRequest(page_size=2), metadata=user_metadata(user))
    code, reason, fields = await failure(
        stub.ListLibraryItems(
            pb.ListLibraryItemsRequest(page_size=2, page_token=first.next_page_token, search="dark"),
            metadata=user_metadata(user),
        )
    )
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["page_token"])
    # Rows added between pages neither shift nor repeat the rest.
    more = uuid.uuid4()
    await upsert_products(stub, {more: "Aaa First"})
    await grant_entitlements(stub, user, more)
    rest = await stub.ListLibraryItems(
        pb.ListLibraryItemsRequest(page_size=10, page_token=first.next_page_token),
        metadata=user_metadata(user),
    )
    assert names(first.items) + names(rest.items) == [
        "50% Off_Sale", "Axiom Verge", "Braid", "Celeste", "dark souls", "DARKEST Dungeon"
    ]  # fmt: skip


async def test_hide_categorise_and_install_status_follow_the_update_mask(stub):
    user, game, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await upsert_products(stub, {game: "Outer Wilds", other: "Tunic"})
    granted = await grant_entitlements(stub, user, game, other)
    item_id = granted.library_items[0].id
    me = user_metadata(user)
    favourites = (
        await stub.CreateCategory(pb.CreateCategoryRequest(name="  Favourites "), metadata=me)
    ).category
    assert favourites.name == "Favourites"
    coop = (await stub.CreateCategory(pb.CreateCategoryRequest(name="Co-op"), metadata=me)).category

    # No mask: the fields present change.
    updated = await stub.UpdateLibraryItem(
        pb.UpdateLibraryItemRequest(library_item_id=item_id, is_hidden=True, category_ids=[favourites.id]),
        metadata=me,
    )
    assert updated.library_item.is_hidden
    assert list(updated.library_item.category_ids) == [favourites.id]
    assert names(await list_all(stub, user)) == ["Tunic"]  # hidden, but still owned
    assert names(await list_all(stub, user, include_hidden=True)) == ["Outer Wilds", "Tunic"]
    assert names(await list_all(stub, user, category_id=favourites.id, include_hidden=True)) == [
        "Outer Wilds"
    ]
    assert names(await list_all(stub, user, category_id=coop.id, include_hidden=True)) == []

    # Masked: only the named field changes; an empty category list clears.
    updated = await stub.UpdateLibraryItem(
        pb.UpdateLibraryItemRequest(
            library_item_id=item_id,
            is_hidden=False,
            installation_status=Item.INSTALLED,
            update_mask=field_mask_pb2.FieldMask(paths=["installation_status"]),
        ),
        metadata=me,
    )
    assert updated.library_item.is_hidden
    assert updated.library_item.installation_status == Item.INSTALLED
    assert list(updated.library_item.category_ids) == [favourites.id]
    updated = await stub.UpdateLibraryItem(
        pb.UpdateLibraryItemRequest(
            library_item_id=item_id, update_mask=field_mask_pb2.FieldMask(paths=["category_ids", "is_hidden"])
        ),
        metadata=me,
    )
    assert list(updated.library_item.category_ids) == []
    assert not updated.library_item.is_hidden
    assert updated.library_item.installation_status == Item.INSTALLED
    # Duplicated ids count once; the item carries both categories.
    updated = await stub.UpdateLibraryItem(
        pb.UpdateLibraryItemRequest(library_item_id=item_id, category_ids=[coop.id, favourites.id, coop.id]),
        metadata=me,
    )
    assert sorted(updated.library_item.category_ids) == sorted([coop.id, favourites.id])

    for mask, field in (
        (["is_hidden", "owner"], "update_mask"),
        (["installation_status"], "installation_status"),
    ):
        refused = await failure(
            stub.UpdateLibraryItem(
                pb.UpdateLibraryItemRequest(
                    library_item_id=item_id, update_mask=field_mask_pb2.FieldMask(paths=mask)
                ),
                metadata=me,
            )
        )
        assert refused == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", [field])
    [after] = [i for i in await list_all(stub, user) if i.id == item_id]
    assert sorted(after.category_ids) == sorted([coop.id, favourites.id])


async def test_categories_are_unique_per_user_case_insensitively_and_retries_replay(stub, sessions):
    user = uuid.uuid4()
    me = user_metadata(user)
    request_id = str(uuid.uuid4())
    first = await stub.CreateCategory(
        pb.CreateCategoryRequest(name="RPG", request_id=request_id), metadata=me
    )
    replay = await stub.CreateCategory(
        pb.CreateCategoryRequest(name="RPG", request_id=request_id), metadata=me
    )
    assert replay == first
    code, reason, _ = await failure(stub.CreateCategory(pb.CreateCategoryRequest(name="  rpg "), metadata=me))
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "CATEGORY_ALREADY_EXISTS")
    await stub.CreateCategory(pb.CreateCategoryRequest(name="action"), metadata=me)
    await stub.CreateCategory(pb.CreateCategoryRequest(name="Puzzle"), metadata=me)
    page = await stub.ListCategories(pb.ListCategoriesRequest(page_size=2), metadata=me)
    rest = await stub.ListCategories(pb.ListCategoriesRequest(page_token=page.next_page_token), metadata=me)
    assert [c.name for c in page.categories] + [c.name for c in rest.categories] == [
        "action",
        "Puzzle",
        "RPG",
    ]
    assert page.total_size == 3 and not rest.next_page_token
    # Another user may use the same name.
    await stub.CreateCategory(pb.CreateCategoryRequest(name="RPG"), metadata=user_metadata(uuid.uuid4()))
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(Category).where(Category.user_id == user)
        )
    assert count == 3


async def test_flow_14_6_wishlist_add_duplicate_and_remove_emit_one_event_per_real_change(stub, settings):
    user, game, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await upsert_products(stub, {game: "Hades II"})
    me = user_metadata(user)
    request_id = str(uuid.uuid4())
    added = await stub.AddWishlistItem(
        pb.AddWishlistItemRequest(product_id=str(game), priority=1, notes="on sale?", request_id=request_id),
        metadata=me,
    )
    item = added.wishlist_item
    assert (item.product_id, item.product.name, item.priority, item.notes) == (
        str(game),
        "Hades II",
        1,
        "on sale?",
    )
    replay = await stub.AddWishlistItem(
        pb.AddWishlistItemRequest(product_id=str(game), priority=1, notes="on sale?", request_id=request_id),
        metadata=me,
    )
    assert replay == added
    code, reason, _ = await failure(
        stub.AddWishlistItem(pb.AddWishlistItemRequest(product_id=str(game)), metadata=me)
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "WISHLIST_ITEM_ALREADY_EXISTS")
    await stub.AddWishlistItem(pb.AddWishlistItemRequest(product_id=str(other)), metadata=me)
    listed = await stub.ListWishlist(pb.ListWishlistRequest(), metadata=me)
    assert [i.product_id for i in listed.items] == [str(other), str(game)]  # newest first
    assert listed.items[0].product.product_id == str(other) and not listed.items[0].product.name

    removed = await stub.RemoveWishlistItem(pb.RemoveWishlistItemRequest(product_id=str(game)), metadata=me)
    again = await stub.RemoveWishlistItem(pb.RemoveWishlistItemRequest(product_id=str(game)), metadata=me)
    assert (removed.removed, again.removed) == (True, False)
    listed = await stub.ListWishlist(pb.ListWishlistRequest(), metadata=me)
    assert [i.product_id for i in listed.items] == [str(other)] and listed.total_size == 1

    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        await reader.wait_for(about(user, WISHLIST_REMOVED))
        await reader.drain(1.5)
    adds = [e["data"] for e in reader.matching(about(user, WISHLIST_ADDED))]
    removes = [e["data"] for e in reader.matching(about(user, WISHLIST_REMOVED))]
    assert sorted(d["productId"] for d in adds) == sorted([str(game), str(other)])
    assert [d["productId"] for d in removes] == [str(game)]
    assert set(removes[0]) == {"userId", "productId", "timestamp"} and removes[0]["userId"] == str(user)


async def test_revoked_entitlement_leaves_the_library_and_fails_ownership_checks(stub, sessions):
    user, game = uuid.uuid4(), uuid.uuid4()
    await grant_entitlements(stub, user, game)
    revoke = pb.RevokeEntitlementRequest(
        user_id=str(user), product_id=str(game), reason=pb.RevokeEntitlementRequest.REFUND
    )
    assert (await stub.RevokeEntitlement(revoke, metadata=service_metadata())).revoked
    assert not (await stub.RevokeEntitlement(revoke, metadata=service_metadata())).revoked
    assert await list_all(stub, user, include_hidden=True) == []
    check = await stub.CheckEntitlement(
        pb.CheckEntitlementRequest(user_id=str(user), product_id=str(game)), metadata=service_metadata()
    )
    assert not check.owned and not check.HasField("library_item")
    async with sessions() as session:
        active = select(LibraryItem).where(
            LibraryItem.user_id == user, LibraryItem.product_id == game, LibraryItem.revoked_at.is_(None)
        )
        assert await session.scalar(active) is None
        revoked = await session.scalar(select(LibraryItem).where(LibraryItem.user_id == user))
    assert revoked.revoked_at is not None and revoked.revoke_reason == "refund"

    # Buying it again restores the entitlement.
    regrant = await grant_entitlements(stub, user, game)
    assert list(regrant.newly_granted_product_ids) == [str(game)]
    check = await stub.CheckEntitlement(
        pb.CheckEntitlementRequest(user_id=str(user), product_id=str(game)), metadata=service_metadata()
    )
    assert (
        check.owned and check.acquisition_type == Item.PURCHASE and check.library_item.id == str(revoked.id)
    )


async def test_a_revocation_emits_item_revoked_once(stub, settings):
    user, game = uuid.uuid4(), uuid.uuid4()
    await grant_entitlements(stub, user, game)
    revoke = pb.RevokeEntitlementRequest(
        user_id=str(user), product_id=str(game), reason=pb.RevokeEntitlementRequest.REFUND
    )
    for _ in range(2):  # the second revokes nothing and emits nothing
        await stub.RevokeEntitlement(revoke, metadata=service_metadata())
    await grant_entitlements(stub, user, game)  # sentinel: its item.added follows any second item.revoked
    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        added = await reader.wait_for(about(user, ITEM_ADDED), count=2)
        revoked = reader.matching(about(user, ITEM_REVOKED))
    assert len(added) == 2 and len(revoked) == 1
    assert_cloud_event(revoked[0])
    assert revoked[0]["data"] == {
        "userId": str(user),
        "productId": str(game),
        "reason": "refund",
        "timestamp": revoked[0]["data"]["timestamp"],
    }


async def test_mark_installed_sets_the_active_items_version_only(stub, sessions, settings):
    user, game, revoked_game = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await grant_entitlements(stub, user, game, revoked_game)
    await stub.RevokeEntitlement(
        pb.RevokeEntitlementRequest(
            user_id=str(user), product_id=str(revoked_game), reason=pb.RevokeEntitlementRequest.REFUND
        ),
        metadata=service_metadata(),
    )
    version = uuid.uuid4()
    engine = create_engine(settings.database_url, pool_size=1)
    uow_factory = UnitOfWorkFactory(create_sessionmaker(engine), "/test", lambda: None)
    try:
        async with uow_factory() as uow:
            assert await use_cases.mark_installed_in(uow, user, game, version)
            assert not await use_cases.mark_installed_in(uow, user, revoked_game, version)
            assert not await use_cases.mark_installed_in(uow, uuid.uuid4(), game, version)
            await uow.commit()
    finally:
        await engine.dispose()
    [item] = await list_all(stub, user)
    assert item.installation_status == Item.INSTALLED and item.installed_version_id == str(version)


async def test_user_b_cannot_read_or_change_user_a_data(stub, sessions):
    alice, bob, game = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    a, b = user_metadata(alice), user_metadata(bob)
    item = (await grant_entitlements(stub, alice, game)).library_items[0]
    category = (await stub.CreateCategory(pb.CreateCategoryRequest(name="Mine"), metadata=a)).category
    await stub.AddWishlistItem(pb.AddWishlistItemRequest(product_id=str(game)), metadata=a)

    assert (await stub.ListLibraryItems(pb.ListLibraryItemsRequest(), metadata=b)).total_size == 0
    assert (
        await stub.ListLibraryItems(pb.ListLibraryItemsRequest(category_id=category.id), metadata=b)
    ).total_size == 0
    assert (await stub.ListCategories(pb.ListCategoriesRequest(), metadata=b)).total_size == 0
    assert (await stub.ListWishlist(pb.ListWishlistRequest(), metadata=b)).total_size == 0
    foreign = await failure(
        stub.UpdateLibraryItem(
            pb.UpdateLibraryItemRequest(library_item_id=item.id, is_hidden=True), metadata=b
        )
    )
    assert foreign == (grpc.StatusCode.NOT_FOUND, "LIBRARY_ITEM_NOT_FOUND", [])
    unknown = await failure(
        stub.UpdateLibraryItem(
            pb.UpdateLibraryItemRequest(library_item_id=str(uuid.uuid4()), is_hidden=True), metadata=b
        )
    )
    assert unknown == foreign  # another user's item looks exactly like a missing one
    # Bob can't file his own item under Alice's category.
    bob_item = (await grant_entitlements(stub, bob, game)).library_items[0]
    refused = await failure(
        stub.UpdateLibraryItem(
            pb.UpdateLibraryItemRequest(library_item_id=bob_item.id, category_ids=[category.id]), metadata=b
        )
    )
    assert refused == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["category_ids[0]"])
    # Bob's "Mine" category is his own; removing the product from his wishlist leaves Alice's alone.
    await stub.CreateCategory(pb.CreateCategoryRequest(name="Mine"), metadata=b)
    removed = await stub.RemoveWishlistItem(pb.RemoveWishlistItemRequest(product_id=str(game)), metadata=b)
    assert not removed.removed

    [alice_item] = await list_all(stub, alice)
    assert not alice_item.is_hidden and list(alice_item.category_ids) == []
    assert [
        c.name for c in (await stub.ListCategories(pb.ListCategoriesRequest(), metadata=a)).categories
    ] == ["Mine"]
    assert (await stub.ListWishlist(pb.ListWishlistRequest(), metadata=a)).total_size == 1
    async with sessions() as session:
        links = await session.scalar(
            select(func.count()).select_from(WishlistItem).where(WishlistItem.user_id == alice)
        )
    assert links == 1


async def test_internal_rpcs_refuse_user_tokens_and_self_service_rpcs_refuse_service_tokens(stub):
    user, game = uuid.uuid4(), uuid.uuid4()
    me = user_metadata(user)
    internal = [
        stub.GrantEntitlements(
            pb.GrantEntitlementsRequest(
                user_id=str(user),
                items=[pb.EntitlementGrant(product_id=str(game), acquisition_type=Item.GIFT)],
            ),
            metadata=me,
        ),
        stub.RevokeEntitlement(
            pb.RevokeEntitlementRequest(
                user_id=str(user), product_id=str(game), reason=pb.RevokeEntitlementRequest.FRAUD
            ),
            metadata=me,
        ),
        stub.CheckEntitlement(
            pb.CheckEntitlementRequest(user_id=str(user), product_id=str(game)), metadata=me
        ),
        stub.UpsertProducts(
            pb.UpsertProductsRequest(products=[pb.Product(product_id=str(game), name="Mine now")]),
            metadata=me,
        ),
    ]
    for call in internal:
        code, reason, _ = await failure(call)
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert await list_all(stub, user) == []
    code, reason, _ = await failure(
        stub.ListLibraryItems(pb.ListLibraryItemsRequest(), metadata=service_metadata())
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    code, reason, _ = await failure(stub.ListWishlist(pb.ListWishlistRequest()))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


async def test_invalid_input_is_refused_with_field_violations_and_writes_nothing(stub, sessions):
    user = uuid.uuid4()
    me, svc = user_metadata(user), service_metadata()
    future = timestamp_pb2.Timestamp()
    future.FromDatetime(datetime.now(UTC) + timedelta(days=2))
    item_id = (await grant_entitlements(stub, user, uuid.uuid4())).library_items[0].id
    cases = [
        (stub.ListLibraryItems(pb.ListLibraryItemsRequest(page_size=-1, status=42, sort_by=9, category_id="x",
                                                          search="s" * 201), metadata=me),
         ["status", "category_id", "search", "sort_by", "page_size"]),
        (stub.ListLibraryItems(pb.ListLibraryItemsRequest(page_token="garbage!"), metadata=me),
         ["page_token"]),
        (stub.UpdateLibraryItem(pb.UpdateLibraryItemRequest(library_item_id="nope", category_ids=["bad"],
                                                            installation_status=77), metadata=me),
         ["library_item_id", "category_ids[0]", "installation_status"]),
        (stub.UpdateLibraryItem(pb.UpdateLibraryItemRequest(library_item_id=item_id,
                                                            category_ids=[str(uuid.uuid4())]), metadata=me),
         ["category_ids[0]"]),
        (stub.ListCategories(pb.ListCategoriesRequest(page_size=-5), metadata=me), ["page_size"]),
        (stub.CreateCategory(pb.CreateCategoryRequest(name="   ", request_id="r1"), metadata=me),
         ["name", "request_id"]),
        (stub.CreateCategory(pb.CreateCategoryRequest(name="x" * 65), metadata=me), ["name"]),
        (stub.ListWishlist(pb.ListWishlistRequest(page_size=-1), metadata=me), ["page_size"]),
        (stub.AddWishlistItem(pb.AddWishlistItemRequest(product_id="p", priority=-1, notes="n" * 1001),
                              metadata=me), ["product_id", "priority", "notes"]),
        (stub.RemoveWishlistItem(pb.RemoveWishlistItemRequest(product_id="1234"), metadata=me),
         ["product_id"]),
        (stub.GrantEntitlements(pb.GrantEntitlementsRequest(user_id=str(user), items=[
            pb.EntitlementGrant(product_id=str(uuid.UUID(int=1)), acquisition_type=Item.PURCHASE),
            pb.EntitlementGrant(product_id=str(uuid.UUID(int=1))),
            pb.EntitlementGrant(product_id="zz", acquisition_type=99)], order_id="o-1"), metadata=svc),
         ["items[1].acquisition_type", "items[2].product_id", "items[2].acquisition_type", "order_id"]),
        (stub.GrantEntitlements(pb.GrantEntitlementsRequest(user_id=str(user), items=[
            pb.EntitlementGrant(product_id=str(uuid.UUID(int=1)), acquisition_type=Item.PURCHASE),
            pb.EntitlementGrant(product_id=str(uuid.UUID(int=1)), acquisition_type=Item.GIFT)]),
            metadata=svc),
         ["items[1].product_id"]),
        (stub.GrantEntitlements(pb.GrantEntitlementsRequest(user_id="u"), metadata=svc),
         ["user_id", "items"]),
        (stub.RevokeEntitlement(pb.RevokeEntitlementRequest(user_id=str(user), product_id="x"), metadata=svc),
         ["product_id", "reason"]),
        (stub.CheckEntitlement(pb.CheckEntitlementRequest(user_id="", product_id="x"), metadata=svc),
         ["user_id", "product_id"]),
        (stub.UpsertProducts(pb.UpsertProductsRequest(products=[pb.Product(
            product_id="nope", name="", product_type=12, genres=["g" * 101])]), metadata=svc),
         ["products[0].product_id", "products[0].name", "products[0].product_type", "products[0].genres[0]"]),
        (stub.UpsertProducts(pb.UpsertProductsRequest(products=[pb.Product(
            product_id=str(uuid.uuid4()), name="Later", updated_at=future)]), metadata=svc),
         ["products[0].updated_at"]),
        (stub.UpsertProducts(pb.UpsertProductsRequest(), metadata=svc), ["products"]),
    ]  # fmt: skip
    for call, expected in cases:
        assert await failure(call) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", expected)
    async with sessions() as session:
        items = await session.scalar(
            select(func.count()).select_from(LibraryItem).where(LibraryItem.user_id == user)
        )
        categories = await session.scalar(
            select(func.count()).select_from(Category).where(Category.user_id == user)
        )
        wishes = await session.scalar(
            select(func.count()).select_from(WishlistItem).where(WishlistItem.user_id == user)
        )
        grantee = await session.scalar(
            select(func.count()).select_from(LibraryItem).where(LibraryItem.product_id == uuid.UUID(int=1))
        )
    assert (items, categories, wishes, grantee) == (1, 0, 0, 0)
    [item] = await list_all(stub, user)
    assert list(item.category_ids) == [] and item.installation_status == Item.NOT_INSTALLED
