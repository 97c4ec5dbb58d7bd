"""AchievementService over REST through Envoy (JSON transcoding), as the Flutter apps call it.

Seed flow 14.3 end to end: the progress report unlocks, the event reaches Kafka as a CloudEvent and the
notification reaches the user's Redis stream. Definitions and ownership are set up out of band (the upsert
is an internal gRPC-only RPC; ownership is a library item row).
"""

from __future__ import annotations

import uuid

from server.core.events.cloudevents import LIBRARY_EVENTS_TOPIC
from tests.support.achievements import UNLOCKED, achievement, define, wait_notifications
from tests.support.kafka import TopicReader, about, assert_cloud_event
from tests.support.ownership import grant
from tests.support.rest import RestClient, error_reason, violations

PROGRESS = "/api/v1/library/me/achievements/progress"
STATUS = "/api/v1/library/me/achievements/status"


async def test_seed_flow_14_3_over_rest_unlocks_publishes_and_notifies(
    http, achievements, sessions, redis, settings
):
    user, product, other_product = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    await define(achievements, product, achievement("FIRST_BLOOD"), achievement("MARATHON", max_progress=42))
    await define(achievements, other_product, achievement("ELSEWHERE"))
    me = RestClient(http, user)

    status, body = await me.call(
        "POST",
        PROGRESS,
        json={"productId": str(product), "achievementApiName": "FIRST_BLOOD", "progress": "1"},
    )

    assert status == 200, body
    assert body["newlyUnlocked"] is True
    unlocked = body["achievementStatus"]
    assert unlocked["isUnlocked"] is True
    assert unlocked["progressPercentage"] == 100
    assert unlocked["achievementApiName"] == "FIRST_BLOOD"
    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        [event] = await reader.wait_for(about(user, UNLOCKED))
    assert_cloud_event(event)
    assert event["data"]["achievementApiName"] == "FIRST_BLOOD"
    assert event["data"]["productId"] == str(product)
    [(kind, payload)] = await wait_notifications(redis, user, 1)
    assert (kind, payload["achievementId"], payload["achievementName"]) == (
        "achievementUnlocked",
        "FIRST_BLOOD",
        "FIRST_BLOOD name",
    )

    # The seeds' comma-separated productIds form; progress on a partial achievement.
    await me.call(
        "POST", PROGRESS, json={"productId": str(product), "achievementApiName": "MARATHON", "progress": 21}
    )
    status, listing = await me.call("GET", f"{STATUS}?productIds={product},{other_product}&pageSize=10")
    assert status == 200, listing
    assert listing["totalSize"] == 3
    rows = [
        (s["productId"], s["achievementApiName"], s["isUnlocked"], s["progressPercentage"])
        for s in listing["achievementStatuses"]
    ]
    assert rows == [
        (str(product), "FIRST_BLOOD", True, 100),
        (str(product), "MARATHON", False, 50),
        (str(other_product), "ELSEWHERE", False, 0),
    ]
    assert listing["achievementStatuses"][0]["unlockedAt"] == unlocked["unlockedAt"]


async def test_replayed_request_id_over_rest_returns_the_first_body(http, achievements, sessions):
    user, product = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    await define(achievements, product, achievement("BOSS", max_progress=3))
    body = {
        "productId": str(product),
        "achievementApiName": "BOSS",
        "progress": 3,
        "requestId": str(uuid.uuid4()),
    }

    me = RestClient(http, user)

    first = await me.call("POST", PROGRESS, json=body)
    replay = await me.call("POST", PROGRESS, json=body)

    assert first[0] == 200
    assert replay == first
    assert replay[1]["newlyUnlocked"] is True


async def test_rest_errors_carry_reason_and_field_violations(http, achievements, sessions):
    user, product, unowned = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    await define(achievements, product, achievement("OK", max_progress=3))
    await define(achievements, unowned, achievement("OK"))
    me = RestClient(http, user)

    status, body = await me.call(
        "POST", PROGRESS, json={"productId": "not-a-uuid", "achievementApiName": "OK", "progress": -1}
    )
    assert status == 400
    assert (error_reason(body), violations(body)) == ("VALIDATION_FAILED", ["product_id", "progress"])

    status, body = await me.call(
        "POST", PROGRESS, json={"productId": str(unowned), "achievementApiName": "OK", "progress": 1}
    )
    assert (status, error_reason(body)) == (403, "PRODUCT_ACCESS_DENIED")

    status, body = await me.call(
        "POST", PROGRESS, json={"productId": str(product), "achievementApiName": "NOPE", "progress": 1}
    )
    assert (status, error_reason(body)) == (404, "ACHIEVEMENT_NOT_FOUND")

    status, body = await me.call("GET", f"{STATUS}?productIds=bad&pageSize=-1")
    assert status == 400
    assert (error_reason(body), violations(body)) == ("VALIDATION_FAILED", ["product_ids[0]", "page_size"])


async def test_user_b_sees_only_their_own_progress_over_rest(http, achievements, sessions):
    user_a, user_b, product = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for owner in (user_a, user_b):
        await grant(sessions, owner, product)
    await define(achievements, product, achievement("GRIND", max_progress=10))
    a, b = RestClient(http, user_a), RestClient(http, user_b)
    await a.call(
        "POST", PROGRESS, json={"productId": str(product), "achievementApiName": "GRIND", "progress": 7}
    )

    _, seen_by_b = await b.call("GET", f"{STATUS}?productIds={product}")
    _, seen_by_a = await a.call("GET", f"{STATUS}?productIds={product}")

    assert seen_by_b["achievementStatuses"][0]["progress"] == "0"
    assert seen_by_a["achievementStatuses"][0]["progress"] == "7"
