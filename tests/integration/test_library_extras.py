"""Library extras over native gRPC against the real stack (issue 12): refunds from the payment service,
wishlist sales fanned out through the outbox, purchases leaving the wishlist, in-place wishlist and category
updates, achievement definitions from catalog events, complete masking of hidden achievements, owner counts
that follow grants and revokes, and offline sessions bounded in the past. Time rules run in-process on the
real stack with a controlled clock."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from sqlalchemy import text

from library.v1 import achievement_service_pb2 as apb
from library.v1 import library_service_pb2 as pb
from library.v1 import library_service_pb2_grpc, playtime_service_pb2_grpc
from library.v1 import playtime_service_pb2 as ppb
from server.core.events.cloudevents import (
    CATALOG_EVENTS_TOPIC,
    LIBRARY_EVENTS_TOPIC,
    PAYMENT_EVENTS_TOPIC,
    make_cloud_event,
)
from server.library import use_cases
from server.playtime.rules import Interval, OfflineRejection
from server.playtime.use_cases import OfflineSession, Playtime
from tests.support.achievements import wait_notifications
from tests.support.auth import service_metadata, user_metadata
from tests.support.grpc_errors import failure
from tests.support.kafka import TopicReader, about, publish
from tests.support.library import grant_entitlements, upsert_products
from tests.support.ownership import grant
from tests.support.saves import in_process
from tests.support.waiting import wait_until

ITEM_ADDED = "com.platform.library.item.added.v1"
ITEM_REVOKED = "com.platform.library.item.revoked.v1"
WISHLIST_REMOVED = "com.platform.library.wishlist.item.removed.v1"
WISHLIST_UPDATED = "com.platform.library.wishlist.item.updated.v1"
PAID = "com.platform.payment.transaction.completed.v1"
REFUNDED = "com.platform.payment.transaction.refunded.v1"
PRODUCT_UPDATED = "com.platform.catalog.product.updated.v1"


@pytest.fixture
def stub(channel) -> library_service_pb2_grpc.LibraryServiceStub:
    return library_service_pb2_grpc.LibraryServiceStub(channel)


@pytest.fixture
def playtime(channel) -> playtime_service_pb2_grpc.PlaytimeTrackerServiceStub:
    return playtime_service_pb2_grpc.PlaytimeTrackerServiceStub(channel)


def payment_event(event_type: str, user: uuid.UUID, order: str, *products: uuid.UUID) -> dict:
    data = {"userId": str(user), "orderId": order, "items": [{"productId": str(p)} for p in products]}
    return make_cloud_event(event_type=event_type, source="/payment-service", subject=str(user), data=data)


def catalog_event(product: uuid.UUID, **data) -> dict:
    return make_cloud_event(
        event_type=PRODUCT_UPDATED,
        source="/catalog-service",
        subject=str(product),
        data={"productId": str(product), "updatedAt": datetime.now(UTC).isoformat(), **data},
    )


async def library_items(stub, user: uuid.UUID) -> dict[str, pb.LibraryItem]:
    page = await stub.ListLibraryItems(
        pb.ListLibraryItemsRequest(include_hidden=True, page_size=200), metadata=user_metadata(user)
    )
    return {i.product_id: i for i in page.items}


def ts(when: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


# ------------------------------------------------------------------------------------------------ refunds
async def test_refund_event_replayed_twice_revokes_once_emits_one_event_and_keeps_the_history(
    stub, settings, sessions
):
    user, game, kept = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    order, other_order = uuid.uuid4(), uuid.uuid4()
    bootstrap = settings.kafka_bootstrap_servers
    # The payment service spells the order in upper case: one order, one key, whoever names it.
    bought = payment_event(PAID, user, str(order).upper(), game)
    await publish(bootstrap, PAYMENT_EVENTS_TOPIC, [bought], key=str(user))
    await wait_until(lambda: _owns(stub, user, game), what="the purchase to reach the library")
    regrant = await grant_entitlements(stub, user, game, order_id=str(order))
    assert list(regrant.newly_granted_product_ids) == []
    await grant_entitlements(stub, user, kept, order_id=str(other_order))
    created = await stub.CreateCategory(
        pb.CreateCategoryRequest(name="Favourites"), metadata=user_metadata(user)
    )
    item = (await library_items(stub, user))[str(game)]
    await stub.UpdateLibraryItem(
        pb.UpdateLibraryItemRequest(library_item_id=item.id, category_ids=[created.category.id]),
        metadata=user_metadata(user),
    )
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                "UPDATE library_items SET total_playtime_seconds = 3600 "
                "WHERE user_id = :u AND product_id = :p"
            ),
            {"u": user, "p": game},
        )

    refund = payment_event(REFUNDED, user, str(order), game)
    resent = {**refund, "id": str(uuid.uuid4())}  # the payment service sends the refund again
    not_ours = payment_event(REFUNDED, user, str(uuid.uuid4()), kept)  # an order that granted nothing here
    sentinel = payment_event(PAID, user, str(uuid.uuid4()), uuid.uuid4())
    await publish(
        bootstrap, PAYMENT_EVENTS_TOPIC, [refund, refund, resent, not_ours, sentinel], key=str(user)
    )

    async with TopicReader(bootstrap, LIBRARY_EVENTS_TOPIC) as reader:
        # item.added of the sentinel follows (same user, commit order) any second item.revoked
        await reader.wait_for(about(user, ITEM_ADDED), count=3, timeout=30)
        revoked = reader.matching(about(user, ITEM_REVOKED))
    assert [(e["data"]["productId"], e["data"]["reason"]) for e in revoked] == [(str(game), "refund")]
    owned = await library_items(stub, user)
    assert str(game) not in owned and str(kept) in owned
    check = await stub.CheckEntitlement(
        pb.CheckEntitlementRequest(user_id=str(user), product_id=str(game)), metadata=service_metadata()
    )
    assert check.owned is False

    # Bought again: the item comes back with its history (playtime, categories).
    await grant_entitlements(stub, user, game, order_id=str(uuid.uuid4()))
    back = (await library_items(stub, user))[str(game)]
    assert (back.id, back.total_playtime_seconds, list(back.category_ids)) == (
        item.id,
        3600,
        [created.category.id],
    )


async def _owns(stub, user: uuid.UUID, product: uuid.UUID) -> bool:
    return str(product) in await library_items(stub, user)


async def test_play_after_a_revocation_is_not_credited(settings, sessions):
    """In-process on the real stack with the clock under control: a session running when its game is
    refunded is credited up to the revocation only."""
    user, game = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, game)
    now = [datetime(2026, 6, 1, 12, 0, tzinfo=UTC)]
    step = timedelta(seconds=settings.playtime_heartbeat_interval_seconds / 2)
    async with in_process(dataclasses.replace(settings, playtime_heartbeat_rate_per_interval=0)) as deps:
        deps = dataclasses.replace(deps, clock=lambda: now[0])
        tracker = Playtime(deps)
        started = await tracker.start(user, game, "pc", None)
        for _ in range(4):
            now[0] += step
            await tracker.heartbeat(user, started.session_id, game)
        revoked_at = now[0]
        await use_cases.revoke_entitlement(
            deps, "service:test", user, game, reason="refund", order_id=None, request_id=None
        )
        for _ in range(4):
            now[0] += step
            await tracker.heartbeat(user, started.session_id, game)
        ended = await tracker.end(user, started.session_id, game)
    assert ended.credited_seconds == int((revoked_at - started.started_at).total_seconds())
    assert ended.credited_seconds == int(4 * step.total_seconds())


# -------------------------------------------------------------------------------------------------- sales
async def test_a_sale_reaches_1000_wishers_once_each_in_bounded_transactions(stub, settings, sessions, redis):
    game, marker = uuid.uuid4(), uuid.uuid4()
    await upsert_products(stub, {game: "Hades"})
    fan = uuid.uuid4()
    await stub.AddWishlistItem(pb.AddWishlistItemRequest(product_id=str(game)), metadata=user_metadata(fan))
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO wishlist_items (id, user_id, product_id) "
                "SELECT gen_random_uuid(), gen_random_uuid(), :p FROM generate_series(1, 999)"
            ),
            {"p": game},
        )
    sale = {"updatedFields": ["discount"], "discount": {"percent": 30, "saleId": "summer-2026"}}
    on_sale = catalog_event(game, **sale)
    resent = {**on_sale, "id": str(uuid.uuid4())}
    renamed = catalog_event(game, name="Hades (Deluxe)", **sale)  # another change during the same sale
    sentinel = catalog_event(marker, name="marker")
    await publish(
        settings.kafka_bootstrap_servers,
        CATALOG_EVENTS_TOPIC,
        [on_sale, on_sale, resent, renamed, sentinel],
        key=str(game),
    )

    async def finished() -> bool:
        async with sessions() as session:
            cached = await session.scalar(text("SELECT 1 FROM products WHERE product_id = :m"), {"m": marker})
            done = await session.scalar(
                text("SELECT count(*) FROM wishlist_sales WHERE product_id = :p AND finished_at IS NOT NULL"),
                {"p": game},
            )
        return bool(cached) and done == 1

    await wait_until(finished, what="every catalog event handled and the sale announced", timeout=60)
    async with sessions() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT key, created_at FROM outbox WHERE channel = 'notification' "
                    "AND payload->>'type' = 'wishlistGameOnSale' AND payload->'payload'->>'productId' = :p"
                ),
                {"p": str(game)},
            )
        ).all()
        [(sales, notified, batches)] = (
            await session.execute(
                text("SELECT count(*) OVER (), notified, batches FROM wishlist_sales WHERE product_id = :p"),
                {"p": game},
            )
        ).all()
    assert (sales, notified, len(rows), len({key for key, _ in rows})) == (1, 1000, 1000, 1000)
    # created_at is the transaction's start time: rows of one transaction share it
    per_transaction = {}
    for _, created in rows:
        per_transaction[created] = per_transaction.get(created, 0) + 1
    assert max(per_transaction.values()) <= settings.library_sale_batch_size
    assert len(per_transaction) >= 1000 // settings.library_sale_batch_size
    assert batches >= len(per_transaction)

    [(kind, payload)] = await wait_notifications(redis, fan, 1)
    assert (kind, payload) == (
        "wishlistGameOnSale",
        {"productId": str(game), "productName": "Hades", "discountPercent": "30%"},
    )


async def test_buying_a_wished_game_takes_it_off_the_wishlist_with_the_removal_event(stub, settings):
    user, game = uuid.uuid4(), uuid.uuid4()
    await stub.AddWishlistItem(pb.AddWishlistItemRequest(product_id=str(game)), metadata=user_metadata(user))
    await grant_entitlements(stub, user, game, order_id=str(uuid.uuid4()))
    wishlist = await stub.ListWishlist(pb.ListWishlistRequest(), metadata=user_metadata(user))
    assert wishlist.total_size == 0
    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        [removed] = await reader.wait_for(about(user, WISHLIST_REMOVED), timeout=30)
    assert removed["data"]["productId"] == str(game)


# ------------------------------------------------------------------------------- wishlist and categories
async def test_wishlist_item_updates_in_place_with_one_event_per_real_change(stub, settings):
    user, other, game = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    me = user_metadata(user)
    added = await stub.AddWishlistItem(
        pb.AddWishlistItemRequest(product_id=str(game), priority=3, notes="wait for a sale"), metadata=me
    )
    first = await stub.UpdateWishlistItem(
        pb.UpdateWishlistItemRequest(product_id=str(game), priority=1), metadata=me
    )
    item = first.wishlist_item
    assert (item.id, item.priority, item.notes) == (added.wishlist_item.id, 1, "wait for a sale")
    assert item.added_timestamp == added.wishlist_item.added_timestamp
    # the same values again: nothing changes, nothing is announced
    await stub.UpdateWishlistItem(pb.UpdateWishlistItemRequest(product_id=str(game), priority=1), metadata=me)
    cleared = await stub.UpdateWishlistItem(
        pb.UpdateWishlistItemRequest(
            product_id=str(game), update_mask=field_mask_pb2.FieldMask(paths=["notes"])
        ),
        metadata=me,
    )
    assert (cleared.wishlist_item.priority, cleared.wishlist_item.notes) == (1, "")
    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        updates = await reader.wait_for(about(user, WISHLIST_UPDATED), count=2, timeout=30)
        await grant_entitlements(stub, user, uuid.uuid4())  # sentinel after any third update event
        await reader.wait_for(about(user, ITEM_ADDED), timeout=30)
        updates = reader.matching(about(user, WISHLIST_UPDATED))
    assert [(e["data"]["priority"], e["data"]["notes"]) for e in updates] == [(1, "wait for a sale"), (1, "")]

    missing = pb.UpdateWishlistItemRequest(product_id=str(game), priority=2)
    assert await failure(stub.UpdateWishlistItem(missing, metadata=user_metadata(other))) == (
        grpc.StatusCode.NOT_FOUND,
        "WISHLIST_ITEM_NOT_FOUND",
        [],
    )
    bad_mask = pb.UpdateWishlistItemRequest(
        product_id=str(game), update_mask=field_mask_pb2.FieldMask(paths=["x"])
    )
    assert await failure(stub.UpdateWishlistItem(bad_mask, metadata=me)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        ["update_mask"],
    )
    nothing = pb.UpdateWishlistItemRequest(product_id=str(game))
    assert (await failure(stub.UpdateWishlistItem(nothing, metadata=me)))[1] == "VALIDATION_FAILED"


async def test_categories_rename_uniquely_and_delete_keeping_the_items_other_categories(stub):
    user, other, game = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    me = user_metadata(user)
    await grant_entitlements(stub, user, game)
    ids = {}
    for name in ("RPG", "Cozy"):
        ids[name] = (await stub.CreateCategory(pb.CreateCategoryRequest(name=name), metadata=me)).category.id
    theirs = (
        await stub.CreateCategory(pb.CreateCategoryRequest(name="Theirs"), metadata=user_metadata(other))
    ).category
    item = (await library_items(stub, user))[str(game)]
    await stub.UpdateLibraryItem(
        pb.UpdateLibraryItemRequest(library_item_id=item.id, category_ids=list(ids.values())), metadata=me
    )

    renamed = await stub.UpdateCategory(
        pb.UpdateCategoryRequest(category_id=ids["RPG"], name="  rpg  "), metadata=me
    )
    assert (renamed.category.id, renamed.category.name) == (ids["RPG"], "rpg")
    taken = pb.UpdateCategoryRequest(category_id=ids["RPG"], name="COZY")
    assert await failure(stub.UpdateCategory(taken, metadata=me)) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "CATEGORY_ALREADY_EXISTS",
        [],
    )
    # another user's category: absent to the caller, and left as it was
    for call in (
        stub.UpdateCategory(pb.UpdateCategoryRequest(category_id=theirs.id, name="Mine"), metadata=me),
        stub.DeleteCategory(pb.DeleteCategoryRequest(category_id=theirs.id), metadata=me),
    ):
        assert await failure(call) == (grpc.StatusCode.NOT_FOUND, "CATEGORY_NOT_FOUND", [])
    listed = await stub.ListCategories(pb.ListCategoriesRequest(), metadata=user_metadata(other))
    assert [c.name for c in listed.categories] == ["Theirs"]

    await stub.DeleteCategory(pb.DeleteCategoryRequest(category_id=ids["Cozy"]), metadata=me)
    kept = (await library_items(stub, user))[str(game)]
    assert list(kept.category_ids) == [ids["RPG"]]
    gone = pb.DeleteCategoryRequest(category_id=ids["Cozy"])
    assert (await failure(stub.DeleteCategory(gone, metadata=me)))[:2] == (
        grpc.StatusCode.NOT_FOUND,
        "CATEGORY_NOT_FOUND",
    )
    names = [c.name for c in (await stub.ListCategories(pb.ListCategoriesRequest(), metadata=me)).categories]
    assert names == ["rpg"]


# ----------------------------------------------------------------------------------------- achievements
async def test_definitions_from_the_catalog_event_and_unlock_rates_follow_grants_and_revokes(
    stub, achievements, settings
):
    game = uuid.uuid4()
    players = [uuid.uuid4() for _ in range(3)]
    for player in players[:2]:
        await grant_entitlements(stub, player, game)
    definitions = [
        {"apiName": "FIRST_STEPS", "displayName": "First steps", "maxProgress": 0, "displayOrder": 1},
        {
            "apiName": "TRUE_ENDING",
            "displayName": "The truth",
            "hidden": True,
            "maxProgress": 3,
            "displayOrder": 2,
        },
    ]
    await publish(
        settings.kafka_bootstrap_servers,
        CATALOG_EVENTS_TOPIC,
        [catalog_event(game, updatedFields=["achievement_definitions"], achievementDefinitions=definitions)],
        key=str(game),
    )

    async def statuses(user) -> list[apb.AchievementStatus]:
        request = apb.ListAchievementStatusesRequest(product_ids=[str(game)])
        return list(
            (
                await achievements.ListAchievementStatuses(request, metadata=user_metadata(user))
            ).achievement_statuses
        )

    async def defined() -> bool:
        return len(await statuses(players[0])) == 2

    await wait_until(defined, what="the catalog's achievement definitions to be cached")
    await achievements.UpdateAchievementProgress(
        apb.UpdateAchievementProgressRequest(
            product_id=str(game), achievement_api_name="FIRST_STEPS", progress=1
        ),
        metadata=user_metadata(players[0]),
    )
    await achievements.UpdateAchievementProgress(
        apb.UpdateAchievementProgressRequest(
            product_id=str(game), achievement_api_name="TRUE_ENDING", progress=2
        ),
        metadata=user_metadata(players[1]),
    )
    first, hidden = await statuses(players[1])
    assert (first.achievement_api_name, first.global_unlock_rate) == ("FIRST_STEPS", 0.5)
    assert (hidden.achievement_api_name, hidden.display_name, hidden.hidden) == ("", "", True)
    assert (hidden.progress, hidden.max_progress, hidden.progress_percentage) == (0, 0, 0)

    revoke = pb.RevokeEntitlementRequest(
        user_id=str(players[1]), product_id=str(game), reason=pb.RevokeEntitlementRequest.REFUND
    )
    await stub.RevokeEntitlement(revoke, metadata=service_metadata())
    assert (await statuses(players[0]))[0].global_unlock_rate == 1.0
    await grant_entitlements(stub, players[2], game)
    await grant_entitlements(stub, players[1], game)
    assert (await statuses(players[0]))[0].global_unlock_rate == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------------- offline sessions
async def test_offline_sessions_are_bounded_by_the_acquisition_and_the_age_limit(settings, sessions):
    """In-process on the real stack with the clock under control."""
    user, recent, old = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    await grant(sessions, user, recent, acquired_at=now - timedelta(days=10))
    await grant(sessions, user, old, acquired_at=now - timedelta(days=300))

    def offline(product: uuid.UUID, days_ago: float) -> OfflineSession:
        start = now - timedelta(days=days_ago)
        return OfflineSession(uuid.uuid4(), product, "deck", Interval(start, start + timedelta(hours=1)))

    uploads = [
        offline(recent, 11),  # before the acquisition
        offline(recent, 9),
        offline(old, 31),  # older than 30 days
        offline(old, 29),
    ]
    async with in_process(dataclasses.replace(settings, playtime_offline_max_age_days=30)) as deps:
        results, totals = await Playtime(dataclasses.replace(deps, clock=lambda: now)).record_offline(
            user, uploads
        )
    assert [(r.outcome, r.rejection, r.credited_seconds) for r in results] == [
        ("REJECTED", OfflineRejection.BEFORE_ACQUISITION, 0),
        ("ACCEPTED", None, 3600),
        ("REJECTED", OfflineRejection.TOO_OLD, 0),
        ("ACCEPTED", None, 3600),
    ]
    assert {t.product_id: t.stats.total_seconds for t in totals} == {str(recent): 3600, str(old): 3600}


async def test_offline_uploads_refuse_unowned_products_and_replay_as_duplicates(playtime, owner):
    user, game = owner
    now = datetime.now(UTC)
    sessions = [
        ppb.OfflineSession(
            client_session_id=str(uuid.uuid4()),
            product_id=str(product),
            device_id="deck",
            start_time=ts(now - timedelta(days=1, hours=i + 1)),
            end_time=ts(now - timedelta(days=1, hours=i)),
        )
        for i, product in enumerate([game, game, uuid.uuid4()])
    ]
    request = ppb.RecordOfflineSessionsRequest(sessions=sessions)
    first = await playtime.RecordOfflineSessions(request, metadata=user_metadata(user))
    again = await playtime.RecordOfflineSessions(request, metadata=user_metadata(user))
    R = ppb.OfflineSessionResult
    assert [(r.outcome, r.credited_seconds) for r in first.results] == [
        (R.ACCEPTED, 3600),
        (R.ACCEPTED, 3600),
        (R.REJECTED, 0),
    ]
    assert first.results[2].rejection_reason == R.PRODUCT_NOT_OWNED
    assert [r.outcome for r in again.results] == [R.DUPLICATE, R.DUPLICATE, R.REJECTED]
    # another user uploading the same client session ids records their own sessions (or is refused)
    stranger = await playtime.RecordOfflineSessions(request, metadata=user_metadata(uuid.uuid4()))
    assert [r.rejection_reason for r in stranger.results] == [R.PRODUCT_NOT_OWNED] * 3
