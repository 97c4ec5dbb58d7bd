"""AchievementService over native gRPC against the real stack (PostgreSQL, Redis, Kafka).

Every test uses fresh user and product ids, so the shared database and topic need no cleanup. Ownership is
granted by inserting a library item directly (LibraryService is built elsewhere).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from sqlalchemy import func, select

from library.v1 import achievement_service_pb2 as pb
from server.achievements import repository
from server.achievements.rules import ProgressChange
from server.achievements.tables import AchievementDefinition, AchievementUnlockCount, UserAchievement
from server.core.db import db_of
from server.core.events.cloudevents import LIBRARY_EVENTS_TOPIC
from server.core.replay import RequestReplay
from tests.support.achievements import (
    UNLOCKED,
    achievement,
    define,
    notifications,
    wait_notifications,
)
from tests.support.auth import service_metadata, user_metadata
from tests.support.grpc_errors import failure
from tests.support.kafka import TopicReader, about, assert_cloud_event
from tests.support.ownership import grant


async def report(achievements, user_id, product_id, api_name, progress, request_id=""):
    return await achievements.UpdateAchievementProgress(
        pb.UpdateAchievementProgressRequest(
            product_id=str(product_id),
            achievement_api_name=api_name,
            progress=progress,
            request_id=request_id,
        ),
        metadata=user_metadata(user_id),
    )


async def list_statuses(achievements, user_id, product_ids, **kwargs):
    return await achievements.ListAchievementStatuses(
        pb.ListAchievementStatusesRequest(product_ids=[str(p) for p in product_ids], **kwargs),
        metadata=user_metadata(user_id),
    )


async def test_seed_flow_14_3_unlock_is_stored_published_as_cloud_event_and_notified(
    achievements, sessions, redis, settings
):
    user, product = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    await define(achievements, product, achievement("FIRST_BLOOD"))

    reply = await report(achievements, user, product, "FIRST_BLOOD", 1)

    status = reply.achievement_status
    assert reply.newly_unlocked is True
    assert (status.is_unlocked, status.progress, status.max_progress, status.progress_percentage) == (
        True,
        1,
        1,
        100,
    )
    assert status.display_name == "FIRST_BLOOD name"
    assert status.global_unlock_rate == 1.0
    unlocked_at = status.unlocked_at.ToJsonString()
    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        [event] = await reader.wait_for(about(user, UNLOCKED))
        assert reader.keys[reader.events.index(event)] == str(user).encode()
    assert_cloud_event(event)
    assert event["data"] == {
        "userId": str(user),
        "productId": str(product),
        "achievementApiName": "FIRST_BLOOD",
        "unlockedTimestamp": event["data"]["unlockedTimestamp"],
    }
    assert datetime.fromisoformat(event["data"]["unlockedTimestamp"]) == datetime.fromisoformat(unlocked_at)
    [(kind, payload)] = await wait_notifications(redis, user, 1)
    assert kind == "achievementUnlocked"
    assert payload == {
        "productId": str(product),
        "achievementId": "FIRST_BLOOD",
        "achievementName": "FIRST_BLOOD name",
        "timestamp": event["data"]["unlockedTimestamp"],
    }
    listed = await list_statuses(achievements, user, [product])
    assert [(s.achievement_api_name, s.is_unlocked) for s in listed.achievement_statuses] == [
        ("FIRST_BLOOD", True)
    ]
    assert listed.achievement_statuses[0].unlocked_at == status.unlocked_at


async def test_progress_never_decreases_is_capped_at_max_and_unlocks_at_max(achievements, sessions):
    user, product = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    await define(achievements, product, achievement("KILL_100", max_progress=100))

    assert (await report(achievements, user, product, "KILL_100", 40)).achievement_status.progress == 40
    lower = await report(achievements, user, product, "KILL_100", 10)
    assert (lower.achievement_status.progress, lower.achievement_status.progress_percentage) == (40, 40)
    assert lower.newly_unlocked is False
    capped = await report(achievements, user, product, "KILL_100", 1_000_000)
    assert capped.newly_unlocked is True
    assert (capped.achievement_status.progress, capped.achievement_status.is_unlocked) == (100, True)


async def test_unlock_is_permanent_and_keeps_its_first_time(achievements, sessions, redis):
    user, product = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    await define(achievements, product, achievement("WIN", max_progress=3))
    first = await report(achievements, user, product, "WIN", 3)
    await asyncio.sleep(0.05)
    again = await report(achievements, user, product, "WIN", 3)
    lower = await report(achievements, user, product, "WIN", 0)

    assert first.newly_unlocked and not again.newly_unlocked and not lower.newly_unlocked
    assert again.achievement_status.unlocked_at == first.achievement_status.unlocked_at
    assert lower.achievement_status.is_unlocked and lower.achievement_status.progress == 3
    # Re-defining with a higher max keeps the unlock and its time.
    await define(achievements, product, achievement("WIN", max_progress=10))
    [status] = (await list_statuses(achievements, user, [product])).achievement_statuses
    assert (status.is_unlocked, status.unlocked_at, status.progress_percentage) == (
        True,
        first.achievement_status.unlocked_at,
        100,
    )
    await asyncio.sleep(1.0)
    assert len(await notifications(redis, user)) == 1


async def test_twenty_concurrent_unlock_calls_unlock_once_with_one_event_and_one_notification(
    achievements, sessions, redis, settings
):
    user, product = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    await define(achievements, product, achievement("SPEEDRUN", max_progress=5))

    replies = await asyncio.gather(*(report(achievements, user, product, "SPEEDRUN", 5) for _ in range(20)))

    assert sum(r.newly_unlocked for r in replies) == 1
    assert all(r.achievement_status.is_unlocked for r in replies)
    assert len({r.achievement_status.unlocked_at.ToJsonString() for r in replies}) == 1
    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        await reader.wait_for(about(user, UNLOCKED))
        await reader.drain(2.0)
    assert len(reader.matching(about(user, UNLOCKED))) == 1
    assert len(await wait_notifications(redis, user, 1)) == 1
    async with sessions() as session:
        unlocked_count = await session.scalar(
            select(func.sum(AchievementUnlockCount.unlocked_count)).where(
                AchievementUnlockCount.product_id == product
            )
        )
    assert unlocked_count == 1


async def test_replayed_request_id_returns_the_first_response_and_emits_nothing_more(
    achievements, sessions, redis, settings
):
    user, product = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    await define(achievements, product, achievement("COLLECTOR", max_progress=2))
    request_id = str(uuid.uuid4())

    replies = await asyncio.gather(
        *(report(achievements, user, product, "COLLECTOR", 2, request_id=request_id) for _ in range(10))
    )
    replay = await report(achievements, user, product, "COLLECTOR", 2, request_id=request_id)
    fresh = await report(achievements, user, product, "COLLECTOR", 2, request_id=str(uuid.uuid4()))

    assert all(r == replies[0] for r in [*replies, replay])
    assert replay.newly_unlocked is True
    assert fresh.newly_unlocked is False
    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        await reader.wait_for(about(user, UNLOCKED))
        await reader.drain(2.0)
    assert len(reader.matching(about(user, UNLOCKED))) == 1
    assert len(await wait_notifications(redis, user, 1)) == 1


async def test_a_replay_returns_the_first_response_even_after_later_progress(achievements, sessions):
    user, product = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    await define(achievements, product, achievement("STEPS", max_progress=10))
    request_id = str(uuid.uuid4())
    first = await report(achievements, user, product, "STEPS", 4, request_id=request_id)
    await report(achievements, user, product, "STEPS", 7)

    replay = await report(achievements, user, product, "STEPS", 4, request_id=request_id)

    assert replay == first
    assert replay.achievement_status.progress == 4


async def test_listing_orders_masks_hidden_paginates_and_reports_unlock_rates(achievements, sessions):
    user, other, product_a, product_b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for owner in (user, other):
        await grant(sessions, owner, product_a)
    await grant(sessions, user, product_b)
    await define(
        achievements,
        product_a,
        achievement("SECRET", hidden=True, order=2),
        achievement("BETA", order=1),
        achievement("ALPHA", order=1),
        achievement("SECRET_FOUND", hidden=True, order=3),
    )
    await define(achievements, product_b, achievement("B_ONE", max_progress=4))
    await report(achievements, user, product_a, "SECRET_FOUND", 1)
    await report(achievements, user, product_b, "B_ONE", 1)

    pages, token = [], ""
    while True:
        page = await list_statuses(achievements, user, [product_b, product_a], page_size=2, page_token=token)
        pages.append(page)
        token = page.next_page_token
        if not token:
            break

    statuses = [s for p in pages for s in p.achievement_statuses]
    assert [len(p.achievement_statuses) for p in pages] == [2, 2, 1]
    assert {p.total_size for p in pages} == {5}
    assert [(s.product_id, s.achievement_api_name) for s in statuses] == [
        (str(product_b), "B_ONE"),
        (str(product_a), "ALPHA"),
        (str(product_a), "BETA"),
        (str(product_a), ""),  # SECRET: hidden and locked, so masked completely
        (str(product_a), "SECRET_FOUND"),
    ]
    by_name = {s.achievement_api_name: s for s in statuses}
    secret = statuses[3]
    assert (secret.display_name, secret.description, secret.icon_url, secret.hidden) == ("", "", "", True)
    assert (secret.progress, secret.max_progress, secret.progress_percentage) == (0, 0, 0)
    assert secret.icon_locked_url == "https://cdn.example/SECRET-locked.png"
    found = by_name["SECRET_FOUND"]
    assert (found.display_name, found.is_unlocked, found.global_unlock_rate) == (
        "SECRET_FOUND name",
        True,
        0.5,
    )
    assert (by_name["B_ONE"].progress, by_name["B_ONE"].progress_percentage) == (1, 25)
    assert by_name["ALPHA"].global_unlock_rate == 0.0
    # A page token belongs to its query.
    refused = await failure(
        list_statuses(achievements, user, [product_a], page_size=2, page_token=pages[0].next_page_token)
    )
    assert refused == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["page_token"])


async def test_user_b_can_neither_see_nor_change_user_a_progress(achievements, sessions):
    user_a, user_b, product = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user_a, product)
    await define(achievements, product, achievement("LEVEL", max_progress=10))
    await report(achievements, user_a, product, "LEVEL", 6)

    # B does not own the product: listed with zero progress, and may not report any.
    [seen_by_b] = (await list_statuses(achievements, user_b, [product])).achievement_statuses
    assert (seen_by_b.progress, seen_by_b.is_unlocked) == (0, False)
    code, reason, _ = await failure(report(achievements, user_b, product, "LEVEL", 10))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PRODUCT_ACCESS_DENIED")

    # B owns it too: B's reports change only B's progress.
    await grant(sessions, user_b, product)
    assert (await report(achievements, user_b, product, "LEVEL", 10)).newly_unlocked is True
    [a_view] = (await list_statuses(achievements, user_a, [product])).achievement_statuses
    assert (a_view.progress, a_view.is_unlocked) == (6, False)


async def test_unowned_product_is_product_access_denied_and_writes_nothing(achievements, sessions):
    user, product = uuid.uuid4(), uuid.uuid4()
    await define(achievements, product, achievement("FIRST_BLOOD"))

    code, reason, _ = await failure(
        report(achievements, user, product, "FIRST_BLOOD", 1, request_id=str(uuid.uuid4()))
    )

    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PRODUCT_ACCESS_DENIED")
    assert await _rows_of(sessions, user) == (0, 0)


async def test_unknown_achievement_is_not_found(achievements, sessions):
    user, product = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    await define(achievements, product, achievement("FIRST_BLOOD"))

    code, reason, _ = await failure(report(achievements, user, product, "NO_SUCH_THING", 1))

    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "ACHIEVEMENT_NOT_FOUND")


async def test_definition_upsert_refuses_user_tokens_and_writes_nothing(achievements, sessions):
    user, product = uuid.uuid4(), uuid.uuid4()
    code, reason, _ = await failure(
        achievements.UpsertAchievementDefinitions(
            pb.UpsertAchievementDefinitionsRequest(product_id=str(product), definitions=[achievement("X")]),
            metadata=user_metadata(user),
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert await _definitions_of(sessions, product) == 0


async def test_self_service_rpcs_refuse_calls_without_a_user_token(achievements):
    code, reason, _ = await failure(
        achievements.ListAchievementStatuses(
            pb.ListAchievementStatusesRequest(product_ids=[str(uuid.uuid4())]), metadata=service_metadata()
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    code, reason, _ = await failure(
        achievements.UpdateAchievementProgress(pb.UpdateAchievementProgressRequest())
    )
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


async def test_upsert_keeps_other_definitions_and_progress_and_counts_what_it_wrote(achievements, sessions):
    user, product = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    await define(achievements, product, achievement("A", max_progress=10), achievement("B"))
    await report(achievements, user, product, "A", 8)

    reply = await achievements.UpsertAchievementDefinitions(
        pb.UpsertAchievementDefinitionsRequest(
            product_id=str(product), definitions=[achievement("A", max_progress=5), achievement("C")]
        ),
        metadata=service_metadata(),
    )

    assert reply.upserted_count == 2
    statuses = (await list_statuses(achievements, user, [product])).achievement_statuses
    assert [s.achievement_api_name for s in statuses] == ["A", "B", "C"]
    # Lowering max does not unlock retroactively; the next report does.
    assert (statuses[0].max_progress, statuses[0].is_unlocked) == (5, False)
    assert (await report(achievements, user, product, "A", 0)).newly_unlocked is True


LONG_NAME = "A" * 129


@pytest.mark.parametrize(
    ("request_fields", "bad_fields"),
    [
        ({"product_id": "not-a-uuid"}, ["product_id"]),
        ({"progress": -1}, ["progress"]),
        ({"achievement_api_name": LONG_NAME}, ["achievement_api_name"]),
        ({"achievement_api_name": "has spaces"}, ["achievement_api_name"]),
        ({"achievement_api_name": ""}, ["achievement_api_name"]),
        ({"request_id": "nope"}, ["request_id"]),
        ({"product_id": "", "progress": -5}, ["product_id", "progress"]),
    ],
)
async def test_invalid_progress_reports_are_rejected_with_field_violations_and_write_nothing(
    achievements, sessions, request_fields, bad_fields
):
    user, product = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    await define(achievements, product, achievement("OK", max_progress=3))
    fields = {"product_id": str(product), "achievement_api_name": "OK", "progress": 3, **request_fields}

    refused = await failure(
        achievements.UpdateAchievementProgress(
            pb.UpdateAchievementProgressRequest(**fields), metadata=user_metadata(user)
        )
    )

    assert refused == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", bad_fields)
    assert await _rows_of(sessions, user) == (0, 0)


@pytest.mark.parametrize(
    ("definitions", "bad_fields"),
    [
        ([], ["definitions"]),
        ([achievement("X", max_progress=-1)], ["definitions[0].max_progress"]),
        ([achievement(LONG_NAME)], ["definitions[0].api_name"]),
        ([achievement("X"), achievement("X")], ["definitions[1].api_name"]),
        ([pb.AchievementDefinition(api_name="X")], ["definitions[0].display_name"]),
        (
            [pb.AchievementDefinition(api_name="X", display_name="x", icon_url="u" * 2049)],
            ["definitions[0].icon_url"],
        ),
    ],
)
async def test_invalid_definitions_are_rejected_with_field_violations_and_write_nothing(
    achievements, sessions, definitions, bad_fields
):
    product = uuid.uuid4()
    refused = await failure(
        achievements.UpsertAchievementDefinitions(
            pb.UpsertAchievementDefinitionsRequest(product_id=str(product), definitions=definitions),
            metadata=service_metadata(),
        )
    )
    assert refused == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", bad_fields)
    assert await _definitions_of(sessions, product) == 0


@pytest.mark.parametrize(
    ("request_fields", "bad_fields"),
    [
        ({"product_ids": []}, ["product_ids"]),
        ({"product_ids": ["bad"]}, ["product_ids[0]"]),
        ({"product_ids": [str(uuid.uuid4()) for _ in range(51)]}, ["product_ids"]),
        ({"product_ids": [str(uuid.uuid4())], "page_size": -1}, ["page_size"]),
        ({"product_ids": [str(uuid.uuid4())], "page_token": "garbage!"}, ["page_token"]),
    ],
)
async def test_invalid_listings_are_rejected_with_field_violations(achievements, request_fields, bad_fields):
    refused = await failure(
        achievements.ListAchievementStatuses(
            pb.ListAchievementStatusesRequest(**request_fields), metadata=user_metadata(uuid.uuid4())
        )
    )
    assert refused == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", bad_fields)


async def _rows_of(sessions, user_id: uuid.UUID) -> tuple[int, int]:
    """(progress rows, request ledger rows) of a user."""
    async with sessions() as session:
        progress = await session.scalar(
            select(func.count()).select_from(UserAchievement).where(UserAchievement.user_id == user_id)
        )
        ledger = await session.scalar(
            select(func.count())
            .select_from(RequestReplay)
            .where(RequestReplay.caller == str(user_id), RequestReplay.method == "UpdateAchievementProgress")
        )
    return progress, ledger


async def _definitions_of(sessions, product_id: uuid.UUID) -> int:
    async with sessions() as session:
        return await session.scalar(
            select(func.count())
            .select_from(AchievementDefinition)
            .where(AchievementDefinition.product_id == product_id)
        )


async def test_concurrent_unlocks_of_one_achievement_do_not_queue_on_one_counter_row(achievements, sessions):
    """Launch day: two users' unlocks of the same achievement, each in a transaction still open, both go
    through at once (the second waits for no lock held by the first) and both count."""
    product, first = uuid.uuid4(), uuid.uuid4()
    second = uuid.UUID(int=first.int ^ 1)  # another user, whose unlocks count in another counter row
    for user in (first, second):
        await grant(sessions, user, product)
    await define(achievements, product, achievement("LAUNCH"))
    unlock, now = ProgressChange(progress=1, unlocks=True, changed=True), datetime.now(UTC)
    async with sessions() as one, sessions() as other:
        db_one, db_other = await db_of(one), await db_of(other)
        await db_other.execute("SET LOCAL lock_timeout = '1s'")
        assert await repository.record_progress(db_one, first, product, "LAUNCH", unlock, now)
        # Today's single counter row is locked by the first transaction: this would time out waiting.
        assert await repository.record_progress(
            db_other, second, product, "LAUNCH", unlock, datetime.now(UTC)
        )
        await one.commit()
        await other.commit()
    reply = await achievements.ListAchievementStatuses(
        pb.ListAchievementStatusesRequest(product_ids=[str(product)]), metadata=user_metadata(first)
    )
    [status] = reply.achievement_statuses
    assert status.is_unlocked and status.global_unlock_rate == 1.0  # 2 of its 2 owners
