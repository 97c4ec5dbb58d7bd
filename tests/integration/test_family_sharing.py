"""Family sharing over native gRPC against the real stack (PostgreSQL, Redis, Kafka): the link state machine
with every illegal transition, the borrower's library (no duplicates, DLC with its base game), entitlement
checks, playtime and downloads of borrowed games, one player per library, revocation, the lender's own
changes following through the consumer, and another user's links and items out of reach. Every test uses
fresh users and products."""

from __future__ import annotations

import uuid

import grpc
import pytest

from download.v1 import download_service_pb2 as dpb
from download.v1 import download_service_pb2_grpc
from library.v1 import family_sharing_pb2 as fpb
from library.v1 import library_service_pb2 as pb
from library.v1 import library_service_pb2_grpc, playtime_service_pb2_grpc
from library.v1 import playtime_service_pb2 as ppb
from server.core.events.cloudevents import LIBRARY_EVENTS_TOPIC
from tests.support.auth import service_metadata, user_metadata
from tests.support.family import act, invite, items, linked, products
from tests.support.grpc_errors import failure
from tests.support.kafka import TopicReader, about, assert_cloud_event
from tests.support.library import grant_entitlements
from tests.support.versions import publish
from tests.support.waiting import wait_until

Link = fpb.FamilyLink
SHARED = pb.LibraryItem.FAMILY_SHARED
FAILED, DENIED = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED
INVALID_STATE = "FAMILY_SHARING_LINK_INVALID_STATE"


@pytest.fixture
def library(channel) -> library_service_pb2_grpc.LibraryServiceStub:
    return library_service_pb2_grpc.LibraryServiceStub(channel)


@pytest.fixture
def playtime(channel) -> playtime_service_pb2_grpc.PlaytimeTrackerServiceStub:
    return playtime_service_pb2_grpc.PlaytimeTrackerServiceStub(channel)


async def test_the_link_state_machine_and_every_illegal_transition(library):
    owner, shared, stranger = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    link = await invite(library, owner, shared)
    assert (link.status, link.owner_user_id, link.shared_user_id) == (
        Link.PENDING_APPROVAL, str(owner), str(shared),
    )  # fmt: skip
    for user in (owner, shared):  # both sides see it
        listed = await library.ListFamilyLinks(fpb.ListFamilyLinksRequest(), metadata=user_metadata(user))
        assert [link.link_id] == [x.link_id for x in listed.links] and listed.total_size == 1
    for action in ("Accept", "Decline", "Cancel", "Revoke"):  # another user's link: as if absent
        assert await failure(act(library, stranger, action, link)) == (
            grpc.StatusCode.NOT_FOUND, "FAMILY_SHARING_LINK_NOT_FOUND", [],
        )  # fmt: skip
    # the wrong side of a pending link
    assert (await failure(act(library, owner, "Accept", link)))[:2] == (DENIED, "PERMISSION_DENIED")
    assert (await failure(act(library, owner, "Decline", link)))[:2] == (DENIED, "PERMISSION_DENIED")
    assert (await failure(act(library, shared, "Cancel", link)))[:2] == (DENIED, "PERMISSION_DENIED")
    # pending: revoke is illegal (decline or cancel it)
    for user in (owner, shared):
        assert (await failure(act(library, user, "Revoke", link)))[:2] == (FAILED, INVALID_STATE)

    active = await act(library, shared, "Accept", link)
    assert active.status == Link.ACTIVE and active.HasField("accepted_at")
    for user, action in ((shared, "Accept"), (shared, "Decline"), (owner, "Cancel")):
        assert (await failure(act(library, user, action, link)))[:2] == (FAILED, INVALID_STATE)

    revoked = await act(library, owner, "Revoke", link)
    assert (revoked.status, revoked.end_reason) == (Link.REVOKED, Link.REVOKED_BY_OWNER)
    for user, action in ((shared, "Accept"), (shared, "Decline"), (owner, "Cancel"), (shared, "Revoke")):
        assert (await failure(act(library, user, action, link)))[:2] == (FAILED, INVALID_STATE)

    declined = await act(library, shared, "Decline", await invite(library, owner, shared))  # a new link
    assert (declined.status, declined.end_reason) == (Link.REVOKED, Link.DECLINED)
    assert declined.link_id != link.link_id
    for user, action in ((shared, "Accept"), (owner, "Cancel"), (owner, "Revoke")):
        assert (await failure(act(library, user, action, declined)))[:2] == (FAILED, INVALID_STATE)
    cancelled = await act(library, owner, "Cancel", await invite(library, owner, shared))
    assert (cancelled.status, cancelled.end_reason) == (Link.REVOKED, Link.CANCELLED)
    assert (await failure(act(library, shared, "Accept", cancelled)))[:2] == (FAILED, INVALID_STATE)
    by_borrower = await act(library, shared, "Revoke", await linked(library, owner, shared))
    assert by_borrower.end_reason == Link.REVOKED_BY_SHARED_USER

    listed = await library.ListFamilyLinks(
        fpb.ListFamilyLinksRequest(role=fpb.ListFamilyLinksRequest.SHARED_USER, status=Link.REVOKED),
        metadata=user_metadata(shared),
    )
    assert listed.total_size == 4
    as_owner = await library.ListFamilyLinks(
        fpb.ListFamilyLinksRequest(role=fpb.ListFamilyLinksRequest.OWNER), metadata=user_metadata(shared)
    )
    assert as_owner.total_size == 0


async def test_a_second_link_for_a_pair_oneself_and_the_active_link_limit(library, settings):
    owner, shared = uuid.uuid4(), uuid.uuid4()
    first = await invite(library, owner, shared)
    assert (await failure(invite(library, owner, shared)))[:2] == (
        grpc.StatusCode.ALREADY_EXISTS, "FAMILY_SHARING_LINK_ALREADY_EXISTS",
    )  # fmt: skip
    await act(library, shared, "Accept", first)
    assert (await failure(invite(library, owner, shared)))[1] == "FAMILY_SHARING_LINK_ALREADY_EXISTS"
    reverse = await invite(library, shared, owner)  # the other direction is a link of its own
    assert reverse.status == Link.PENDING_APPROVAL
    assert await failure(invite(library, owner, owner)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["shared_user_id"],
    )  # fmt: skip

    pending = [await invite(library, owner, uuid.uuid4())]
    for _ in range(settings.family_max_active_links - 1):
        await linked(library, owner, uuid.uuid4())
    # the owner is at the limit: neither a new invite nor accepting an earlier one
    code, reason, _ = await failure(invite(library, owner, uuid.uuid4()))
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "FAMILY_SHARING_LINK_LIMIT_EXCEEDED")
    code, reason, _ = await failure(act(library, uuid.UUID(pending[0].shared_user_id), "Accept", pending[0]))
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "FAMILY_SHARING_LINK_LIMIT_EXCEEDED")
    await act(library, owner, "Revoke", first)  # a slot frees up
    assert (
        await act(library, uuid.UUID(pending[0].shared_user_id), "Accept", pending[0])
    ).status == Link.ACTIVE


async def test_link_changes_emit_cloud_events(library, settings):
    owner, shared = uuid.uuid4(), uuid.uuid4()
    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        link = await linked(library, owner, shared)
        await act(library, shared, "Revoke", link)
        prefix = "com.platform.library.family.link."
        events = await reader.wait_for(lambda e: about(owner)(e) and e["type"].startswith(prefix), count=3)
    assert [e["type"] for e in events] == [f"{prefix}{t}.v1" for t in ("invited", "accepted", "revoked")]
    for event in events:
        assert_cloud_event(event)
        assert event["data"]["linkId"] == link.link_id
        assert (event["data"]["ownerUserId"], event["data"]["sharedUserId"]) == (str(owner), str(shared))
    assert [e["data"]["status"] for e in events] == ["pending_approval", "active", "revoked"]
    assert events[-1]["data"]["endReason"] == "revoked_by_shared_user"


async def test_a_borrowers_library_lends_games_and_dlc_with_their_base_never_duplicates(library):
    lender, borrower = uuid.uuid4(), uuid.uuid4()
    game, owned_by_both, base_of_borrower = await products(
        library, ("game", None), ("game", None), ("game", None)
    )
    dlc, dlc_of_owned_base, dlc_without_base = await products(
        library, ("dlc", game), ("dlc", base_of_borrower), ("dlc", uuid.uuid4())
    )
    await grant_entitlements(
        library, lender, game, owned_by_both, base_of_borrower, dlc, dlc_of_owned_base, dlc_without_base
    )
    await grant_entitlements(
        library, borrower, owned_by_both, base_of_borrower, acquisition_type=pb.LibraryItem.GIFT
    )
    lender_items = await items(library, lender)

    link = await linked(library, lender, borrower)
    mine = await items(library, borrower)
    assert set(mine) == {str(p) for p in (game, dlc, owned_by_both, base_of_borrower)}
    for product in (game, dlc):
        item = mine[str(product)]
        assert (item.acquisition_type, item.lender_user_id) == (SHARED, str(lender))
        assert item.id != lender_items[str(product)].id  # the borrower's own item: own playtime, flags
    assert mine[str(owned_by_both)].acquisition_type == pb.LibraryItem.GIFT
    assert mine[str(owned_by_both)].lender_user_id == ""
    check = await library.CheckEntitlement(
        pb.CheckEntitlementRequest(user_id=str(borrower), product_id=str(game)), metadata=service_metadata()
    )
    assert (check.owned, check.acquisition_type, check.library_item.lender_user_id) == (
        True,
        SHARED,
        str(lender),
    )
    assert set(await items(library, lender)) == set(lender_items)  # the lender's library is unchanged

    await act(library, lender, "Revoke", link)
    assert set(await items(library, borrower)) == {str(owned_by_both), str(base_of_borrower)}  # at once
    check = await library.CheckEntitlement(
        pb.CheckEntitlementRequest(user_id=str(borrower), product_id=str(game)), metadata=service_metadata()
    )
    assert not check.owned


async def test_the_lenders_new_games_and_refunds_and_the_borrowers_purchase_follow(library):
    lender, borrower = uuid.uuid4(), uuid.uuid4()
    game, later, refunded = await products(library, ("game", None), ("game", None), ("game", None))
    [dlc] = await products(library, ("dlc", game))
    await grant_entitlements(library, lender, game, dlc, refunded)
    await linked(library, lender, borrower)
    await grant_entitlements(library, lender, later)
    await library.RevokeEntitlement(
        pb.RevokeEntitlementRequest(
            user_id=str(lender), product_id=str(refunded), reason=pb.RevokeEntitlementRequest.REFUND
        ),
        metadata=service_metadata(),
    )

    async def followed() -> bool:
        return set(await items(library, borrower)) == {str(game), str(dlc), str(later)}

    await wait_until(followed, what="the lender's new game lent and the refunded one gone")
    granted = await grant_entitlements(library, borrower, game)  # the borrower buys the borrowed game
    assert [str(game)] == list(granted.newly_granted_product_ids)

    async def bought() -> bool:
        mine = await items(library, borrower)
        return str(dlc) not in mine and mine[str(game)].acquisition_type == pb.LibraryItem.PURCHASE

    await wait_until(bought, what="the bought game to be the borrower's own and its DLC no longer lent")
    assert (await items(library, borrower))[str(game)].lender_user_id == ""


async def test_a_borrower_cannot_change_the_lenders_items_categories_or_wishlist(library):
    lender, borrower = uuid.uuid4(), uuid.uuid4()
    [game] = await products(library, ("game", None))
    await grant_entitlements(library, lender, game)
    lender_md, borrower_md = user_metadata(lender), user_metadata(borrower)
    category = (
        await library.CreateCategory(pb.CreateCategoryRequest(name="Mine"), metadata=lender_md)
    ).category
    await library.AddWishlistItem(pb.AddWishlistItemRequest(product_id=str(uuid.uuid4())), metadata=lender_md)
    await linked(library, lender, borrower)
    lender_item = (await items(library, lender))[str(game)]
    borrowed = (await items(library, borrower))[str(game)]

    hide = pb.UpdateLibraryItemRequest(library_item_id=lender_item.id, is_hidden=True)
    assert (await failure(library.UpdateLibraryItem(hide, metadata=borrower_md)))[:2] == (
        grpc.StatusCode.NOT_FOUND, "LIBRARY_ITEM_NOT_FOUND",
    )  # fmt: skip
    into_lenders = pb.UpdateLibraryItemRequest(library_item_id=borrowed.id, category_ids=[category.id])
    assert (await failure(library.UpdateLibraryItem(into_lenders, metadata=borrower_md)))[2] == [
        "category_ids[0]"
    ]
    # the borrower's own copy is theirs to hide; the lender's stays as it was
    hidden = await library.UpdateLibraryItem(
        pb.UpdateLibraryItemRequest(library_item_id=borrowed.id, is_hidden=True), metadata=borrower_md
    )
    assert hidden.library_item.is_hidden
    assert not (await items(library, lender))[str(game)].is_hidden
    assert (await library.ListCategories(pb.ListCategoriesRequest(), metadata=borrower_md)).total_size == 0
    assert (await library.ListWishlist(pb.ListWishlistRequest(), metadata=borrower_md)).total_size == 0
    assert (await library.ListWishlist(pb.ListWishlistRequest(), metadata=lender_md)).total_size == 1


async def test_borrowers_play_their_own_time_one_player_per_library(library, playtime):
    lender, borrower, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    game, other = await products(library, ("game", None), ("game", None))
    await grant_entitlements(library, lender, game, other)
    await linked(library, lender, borrower)
    await linked(library, lender, second)

    def start(user, product):
        return playtime.StartPlaytimeSession(
            ppb.StartPlaytimeSessionRequest(product_id=str(product), device_id="pc"),
            metadata=user_metadata(user),
        )

    session = await start(borrower, game)  # CheckEntitlement answers for the borrowed game
    # one person at a time: another borrower cannot start any game of that library meanwhile
    assert (await failure(start(second, other)))[:2] == (FAILED, "FAMILY_SHARED_GAME_IN_USE")
    ended = await playtime.EndPlaytimeSession(
        ppb.EndPlaytimeSessionRequest(session_id=session.session_id, product_id=str(game)),
        metadata=user_metadata(borrower),
    )
    assert ended.session_id == session.session_id
    owners = await start(lender, other)  # the owner plays: no borrower can start
    for user in (borrower, second):
        code, reason, _ = await failure(start(user, game))
        assert (code, reason) == (FAILED, "FAMILY_SHARED_GAME_IN_USE")
    await playtime.EndPlaytimeSession(
        ppb.EndPlaytimeSessionRequest(session_id=owners.session_id, product_id=str(other)),
        metadata=user_metadata(lender),
    )
    assert (await start(second, game)).session_id  # free again
    stats = await playtime.GetPlaytimeStats(
        ppb.GetPlaytimeStatsRequest(product_ids=[str(game)]), metadata=user_metadata(lender)
    )
    assert stats.stats[0].total_playtime_seconds == 0  # nothing the borrowers played counts for the lender


async def test_a_borrowed_game_downloads_and_revoking_the_link_cancels_it(
    library, channel, sessions, settings
):
    lender, borrower = uuid.uuid4(), uuid.uuid4()
    [game] = await products(library, ("game", None))
    await grant_entitlements(library, lender, game)
    await publish(sessions, game, {"bin/game.exe": [b"a" * 4000]})
    downloads = download_service_pb2_grpc.DownloadServiceStub(channel)
    md = user_metadata(borrower)
    request = dpb.StartDownloadRequest(product_id=str(game), installation_path="/games/x")
    assert (await failure(downloads.StartDownload(request, metadata=md)))[1] == "PRODUCT_ACCESS_DENIED"
    link = await linked(library, lender, borrower)
    download = (await downloads.StartDownload(request, metadata=md)).download
    assert download.status == dpb.DownloadSession.DOWNLOADING

    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        await act(library, borrower, "Revoke", link)
        [revoked] = await reader.wait_for(about(borrower, "com.platform.library.item.revoked.v1"))
    assert (revoked["data"]["productId"], revoked["data"]["reason"]) == (str(game), "family_sharing_ended")

    async def cancelled() -> bool:
        got = await downloads.GetDownload(
            dpb.GetDownloadRequest(download_id=download.download_id), metadata=md
        )
        return got.download.status == dpb.DownloadSession.CANCELLED

    await wait_until(cancelled, what="the borrowed game's download to be cancelled")
    assert (await failure(downloads.StartDownload(request, metadata=md)))[1] == "PRODUCT_ACCESS_DENIED"
