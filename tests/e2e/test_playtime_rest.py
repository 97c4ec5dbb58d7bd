"""PlaytimeTrackerService over REST through Envoy (proto3 JSON, as the Flutter apps call it), with the
events observed on Kafka. Envoy is at 127.0.0.1:$ENVOY_PORT, in front of the session's gRPC server."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from scripts.devtokens import mint
from server.core.events.cloudevents import LIBRARY_EVENTS_TOPIC
from tests.support.kafka import TopicReader, assert_cloud_event
from tests.support.ownership import grant

ENVOY = f"http://127.0.0.1:{os.environ.get('ENVOY_PORT', '8080')}"
BASE = "/api/v1/library/me/playtime"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
ENDED = "com.platform.library.playtime.session.ended.v1"
UPDATED = "com.platform.library.playtime.updated.v1"


def call(method: str, path: str, user: uuid.UUID, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        ENVOY + path,
        method=method,
        headers={"Authorization": f"Bearer {mint(str(user))}", "Content-Type": "application/json"},
        data=json.dumps(body).encode() if body is not None else None,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def reason_of(document: dict) -> str:
    [info] = [d for d in document.get("details", []) if d["@type"] == ERROR_INFO]
    assert info["domain"] == "library.platform"
    return info["reason"]


def violated_fields(document: dict) -> list[str]:
    return [
        v["field"] for d in document["details"] if d["@type"] == BAD_REQUEST for v in d["fieldViolations"]
    ]


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
async def owner(sessions, grpc_target):
    user_id, product_id = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user_id, product_id)
    return user_id, product_id


async def test_seed_flow_14_2_over_rest_start_heartbeat_end_and_stats(owner, settings):
    user_id, product_id = owner
    product, client_session = str(product_id), str(uuid.uuid4())
    status, started = call(
        "POST",
        f"{BASE}/sessions/start",
        user_id,
        {"productId": product, "deviceId": "desktop-1", "clientSessionId": client_session},
    )
    assert status == 200, started
    assert started["heartbeatIntervalSeconds"] == settings.playtime_heartbeat_interval_seconds
    assert started["clientSessionId"] == client_session and not started.get("resumed", False)
    session = started["sessionId"]

    await asyncio.sleep(1.2)
    heartbeat = {"productId": product, "sessionId": session, "currentTimestamp": rfc3339(datetime.now(UTC))}
    assert call("POST", f"{BASE}/sessions/heartbeat", user_id, heartbeat) == (200, {})
    await asyncio.sleep(1.2)
    status, ended = call(
        "POST", f"{BASE}/sessions/end", user_id, {"productId": product, "sessionId": session}
    )
    assert status == 200, ended
    credited = int(ended["creditedDurationSeconds"])
    assert 2 <= credited <= 4
    assert int(ended["totalPlaytimeSeconds"]) == int(ended["lastTwoWeeksSeconds"]) == credited
    assert ended["lastPlayedAt"] == ended["endedAt"]
    # End is idempotent.
    assert call("POST", f"{BASE}/sessions/end", user_id, {"productId": product, "sessionId": session}) == (
        200,
        ended,
    )

    status, stats = call("GET", f"{BASE}?productIds={product}&period=LAST_2_WEEKS", user_id)
    assert status == 200, stats
    [entry] = stats["stats"]
    assert entry["productId"] == product
    assert int(entry["totalPlaytimeSeconds"]) == int(entry["periodPlaytimeSeconds"]) == credited
    assert entry["deviceTotals"] == [{"deviceId": "desktop-1", "playtimeSeconds": str(credited)}]
    assert entry["lastPlayedAt"] == ended["lastPlayedAt"]

    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        events = await reader.wait_for(lambda e: e.get("subject") == str(user_id), count=2)
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


async def test_offline_sessions_over_rest_are_recorded_once(owner):
    user_id, product_id = owner
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
    status, first = call("POST", f"{BASE}/sessions/offline", user_id, body)
    assert status == 200, first
    unspecified = "REJECTION_REASON_UNSPECIFIED"
    assert [(r["outcome"], r.get("rejectionReason", unspecified)) for r in first["results"]] == [
        ("ACCEPTED", unspecified),
        ("REJECTED", "IN_FUTURE"),
    ]
    assert first["results"][0]["creditedSeconds"] == "3600"
    assert first["stats"][0]["totalPlaytimeSeconds"] == "3600"
    status, replay = call("POST", f"{BASE}/sessions/offline", user_id, body)
    assert status == 200 and replay["results"][0]["outcome"] == "DUPLICATE"
    assert replay["stats"] == first["stats"]


async def test_rest_errors_carry_the_spec_reasons(owner):
    user_id, product_id = owner
    intruder = uuid.uuid4()
    product = str(product_id)
    _, started = call("POST", f"{BASE}/sessions/start", user_id, {"productId": product, "deviceId": "pc"})
    session = {"productId": product, "sessionId": started["sessionId"]}

    for action in ("heartbeat", "end"):
        status, document = call("POST", f"{BASE}/sessions/{action}", intruder, session)
        assert (status, reason_of(document)) == (404, "SESSION_NOT_FOUND")
    status, document = call(
        "POST", f"{BASE}/sessions/start", intruder, {"productId": product, "deviceId": "pc"}
    )
    assert (status, reason_of(document)) == (403, "PRODUCT_ACCESS_DENIED")
    status, document = call("GET", f"{BASE}?productIds={product}", intruder)
    assert status == 200 and int(document["stats"][0].get("totalPlaytimeSeconds", "0")) == 0

    status, document = call("POST", f"{BASE}/sessions/start", user_id, {"productId": "nope", "deviceId": ""})
    assert (status, reason_of(document)) == (400, "VALIDATION_FAILED")
    assert set(violated_fields(document)) == {"product_id", "device_id"}
    query = urllib.parse.urlencode({"productIds": f"{product},not-a-uuid"})
    status, document = call("GET", f"{BASE}?{query}", user_id)
    assert (status, reason_of(document)) == (400, "VALIDATION_FAILED")

    assert call("POST", f"{BASE}/sessions/end", user_id, session)[0] == 200
    status, document = call("POST", f"{BASE}/sessions/heartbeat", user_id, session)
    assert (status, reason_of(document)) == (404, "SESSION_NOT_FOUND")
