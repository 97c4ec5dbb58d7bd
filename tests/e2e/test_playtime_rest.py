"""PlaytimeTrackerService over REST through Envoy (proto3 JSON, as the Flutter apps call it), with the
events observed on Kafka. Envoy is at 127.0.0.1:$ENVOY_PORT, in front of the session's gRPC server."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from server.core.events.cloudevents import LIBRARY_EVENTS_TOPIC
from tests.support.kafka import TopicReader, about, assert_cloud_event
from tests.support.rest import RestClient, error_reason, violations

BASE = "/api/v1/library/me/playtime"
ENDED = "com.platform.library.playtime.session.ended.v1"
UPDATED = "com.platform.library.playtime.updated.v1"


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def test_seed_flow_14_2_over_rest_start_heartbeat_end_and_stats(http, owner, settings):
    user_id, product_id = owner
    me = RestClient(http, user_id)
    product, client_session = str(product_id), str(uuid.uuid4())
    status, started = await me.call(
        "POST",
        f"{BASE}/sessions/start",
        json={"productId": product, "deviceId": "desktop-1", "clientSessionId": client_session},
    )
    assert status == 200, started
    assert started["heartbeatIntervalSeconds"] == settings.playtime_heartbeat_interval_seconds
    assert started["clientSessionId"] == client_session and not started.get("resumed", False)
    session = started["sessionId"]

    await asyncio.sleep(1.2)
    heartbeat = {"productId": product, "sessionId": session, "currentTimestamp": rfc3339(datetime.now(UTC))}
    assert await me.call("POST", f"{BASE}/sessions/heartbeat", json=heartbeat) == (200, {})
    await asyncio.sleep(1.2)
    status, ended = await me.call(
        "POST", f"{BASE}/sessions/end", json={"productId": product, "sessionId": session}
    )
    assert status == 200, ended
    credited = int(ended["creditedDurationSeconds"])
    assert 2 <= credited <= 4
    assert int(ended["totalPlaytimeSeconds"]) == int(ended["lastTwoWeeksSeconds"]) == credited
    assert ended["lastPlayedAt"] == ended["endedAt"]
    # End is idempotent.
    assert await me.call(
        "POST", f"{BASE}/sessions/end", json={"productId": product, "sessionId": session}
    ) == (200, ended)

    status, stats = await me.call("GET", f"{BASE}?productIds={product}&period=LAST_2_WEEKS")
    assert status == 200, stats
    [entry] = stats["stats"]
    assert entry["productId"] == product
    assert int(entry["totalPlaytimeSeconds"]) == int(entry["periodPlaytimeSeconds"]) == credited
    assert entry["deviceTotals"] == [{"deviceId": "desktop-1", "playtimeSeconds": str(credited)}]
    assert entry["lastPlayedAt"] == ended["lastPlayedAt"]

    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        events = await reader.wait_for(about(user_id), count=2)
    for event in events:
        assert_cloud_event(event)
    by_type = {e["type"]: e["data"] for e in events}
    assert by_type[ENDED]["sessionId"] == session and by_type[ENDED]["durationSeconds"] == credited
    assert by_type[ENDED]["deviceId"] == "desktop-1"
    assert by_type[UPDATED] == {
        "userId": str(user_id),
        "productId": product,
        "totalPlaytimeSeconds": credited,
        "lastPlayedTimestamp": by_type[UPDATED]["lastPlayedTimestamp"],
    }


async def test_offline_sessions_over_rest_are_recorded_once(http, owner):
    user_id, product_id = owner
    me = RestClient(http, user_id)
    now = datetime.now(UTC)
    body = {
        "sessions": [
            {
                "clientSessionId": str(uuid.uuid4()),
                "productId": str(product_id),
                "deviceId": "laptop",
                "startTime": rfc3339(now - timedelta(hours=2)),
                "endTime": rfc3339(now - timedelta(hours=1)),
            },
            {
                "clientSessionId": str(uuid.uuid4()),
                "productId": str(product_id),
                "deviceId": "laptop",
                "startTime": rfc3339(now - timedelta(hours=1)),
                "endTime": rfc3339(now + timedelta(hours=1)),
            },
        ]
    }
    status, first = await me.call("POST", f"{BASE}/sessions/offline", json=body)
    assert status == 200, first
    unspecified = "REJECTION_REASON_UNSPECIFIED"
    assert [(r["outcome"], r.get("rejectionReason", unspecified)) for r in first["results"]] == [
        ("ACCEPTED", unspecified),
        ("REJECTED", "IN_FUTURE"),
    ]
    assert first["results"][0]["creditedSeconds"] == "3600"
    assert first["stats"][0]["totalPlaytimeSeconds"] == "3600"
    status, replay = await me.call("POST", f"{BASE}/sessions/offline", json=body)
    assert status == 200 and replay["results"][0]["outcome"] == "DUPLICATE"
    assert replay["stats"] == first["stats"]


async def test_rest_errors_carry_the_spec_reasons(http, owner):
    user_id, product_id = owner
    me, intruder = RestClient(http, user_id), RestClient(http, uuid.uuid4())
    product = str(product_id)
    _, started = await me.call(
        "POST", f"{BASE}/sessions/start", json={"productId": product, "deviceId": "pc"}
    )
    session = {"productId": product, "sessionId": started["sessionId"]}

    for action in ("heartbeat", "end"):
        status, document = await intruder.call("POST", f"{BASE}/sessions/{action}", json=session)
        assert (status, error_reason(document)) == (404, "SESSION_NOT_FOUND")
    status, document = await intruder.call(
        "POST", f"{BASE}/sessions/start", json={"productId": product, "deviceId": "pc"}
    )
    assert (status, error_reason(document)) == (403, "PRODUCT_ACCESS_DENIED")
    status, document = await intruder.call("GET", f"{BASE}?productIds={product}")
    assert status == 200 and int(document["stats"][0].get("totalPlaytimeSeconds", "0")) == 0

    status, document = await me.call(
        "POST", f"{BASE}/sessions/start", json={"productId": "nope", "deviceId": ""}
    )
    assert (status, error_reason(document)) == (400, "VALIDATION_FAILED")
    assert violations(document) == ["product_id", "device_id"]
    status, document = await me.call("GET", BASE, params={"productIds": f"{product},not-a-uuid"})
    assert (status, error_reason(document)) == (400, "VALIDATION_FAILED")

    assert (await me.call("POST", f"{BASE}/sessions/end", json=session))[0] == 200
    status, document = await me.call("POST", f"{BASE}/sessions/heartbeat", json=session)
    assert (status, error_reason(document)) == (404, "SESSION_NOT_FOUND")
