"""PlaytimeTrackerService over native gRPC against the real stack (PostgreSQL, Redis, Kafka).

The module runs its own `python -m server` with short playtime intervals (heartbeat 2 s, so gaps over
4 s are not credited and 6 s of silence is reaped; checkpoints every 2 s) on free ports, with a Redis
server of its own (no persistence) so that a test can lose Redis for real by restarting it. Every test
uses fresh user and product ids.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import event, func, select

from library.v1 import playtime_service_pb2 as pb
from library.v1 import playtime_service_pb2_grpc
from server.core.clock import utc_now
from server.core.db import create_engine, create_sessionmaker
from server.core.deps import Deps
from server.core.events.cloudevents import LIBRARY_EVENTS_TOPIC
from server.core.redis import redis_from_settings
from server.core.s3 import ObjectStore
from server.core.uow import UnitOfWorkFactory
from server.library.tables import LibraryItem
from server.playtime.tables import PlaytimeInterval, PlaytimeSession
from server.playtime.use_cases import Playtime
from tests.support.auth import service_metadata, user_metadata
from tests.support.grpc_errors import failure
from tests.support.kafka import TopicReader, about, assert_cloud_event
from tests.support.ownership import grant
from tests.support.processes import PrivateRedis, free_port, python_server, wait_serving
from tests.support.processes import private_redis as private_redis_server

INTERVAL = 2
CHECKPOINT = 2
ENDED = "com.platform.library.playtime.session.ended.v1"
UPDATED = "com.platform.library.playtime.updated.v1"


@pytest.fixture(scope="module")
async def private_redis():
    server = private_redis_server()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def playtime_server_port(private_redis: PrivateRedis):
    """A server of its own, with short playtime intervals and its own Redis."""
    port = free_port()
    with python_server(
        "test-playtime-server.log",
        REDIS_URL=private_redis.url,
        GRPC_PORT=str(port),
        METRICS_PORT=str(free_port()),
        PLAYTIME_HEARTBEAT_INTERVAL_SECONDS=str(INTERVAL),
        # These tests heartbeat faster than clients do, for precision; the limit: test_rate_limits.py.
        PLAYTIME_HEARTBEAT_RATE_PER_INTERVAL="0",
        PLAYTIME_CHECKPOINT_SECONDS=str(CHECKPOINT),
        PLAYTIME_REAPER_SECONDS="0.5",
    ):
        yield port


@pytest.fixture(scope="module")
async def target(playtime_server_port: int) -> str:
    address = f"127.0.0.1:{playtime_server_port}"
    await wait_serving(address)
    return address


@pytest.fixture
async def stub(target):
    async with grpc.aio.insecure_channel(target) as channel:
        yield playtime_service_pb2_grpc.PlaytimeTrackerServiceStub(channel)


@pytest.fixture(scope="module")
async def redis(private_redis: PrivateRedis):
    client = private_redis.client()
    yield client
    await client.aclose()


def ts(when: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


async def start(stub, user_id, product_id, device="pc", **kw) -> pb.StartPlaytimeSessionResponse:
    request = pb.StartPlaytimeSessionRequest(product_id=str(product_id), device_id=device, **kw)
    return await stub.StartPlaytimeSession(request, metadata=user_metadata(user_id))


async def heartbeat(stub, user_id, product_id, session_id) -> None:
    request = pb.RecordPlaytimeHeartbeatRequest(product_id=str(product_id), session_id=session_id)
    await stub.RecordPlaytimeHeartbeat(request, metadata=user_metadata(user_id))


async def end(stub, user_id, product_id, session_id) -> pb.EndPlaytimeSessionResponse:
    request = pb.EndPlaytimeSessionRequest(product_id=str(product_id), session_id=session_id)
    return await stub.EndPlaytimeSession(request, metadata=user_metadata(user_id))


async def play(stub, user_id, product_id, session_ids: list[str], seconds: float, every: float = 0.5) -> None:
    """Heartbeats the sessions regularly for `seconds`."""
    for _ in range(round(seconds / every)):
        await asyncio.sleep(every)
        for session_id in session_ids:
            await heartbeat(stub, user_id, product_id, session_id)


async def stats(stub, user_id, *product_ids, period=pb.GetPlaytimeStatsRequest.ALL_TIME):
    request = pb.GetPlaytimeStatsRequest(product_ids=[str(p) for p in product_ids], period=period)
    return await stub.GetPlaytimeStats(request, metadata=user_metadata(user_id))


async def test_seed_flow_14_2_start_heartbeat_end_credits_time_and_publishes_cloud_events(
    stub, owner, sessions, redis, settings
):
    user_id, product_id = owner
    began = time.monotonic()
    started = await start(stub, user_id, product_id, client_session_id=str(uuid.uuid4()))
    assert started.heartbeat_interval_seconds == INTERVAL and not started.resumed
    await play(stub, user_id, product_id, [started.session_id], 3)
    ended = await end(stub, user_id, product_id, started.session_id)
    took = time.monotonic() - began  # 3 s, and more on a busy machine

    assert 2 <= ended.credited_duration_seconds <= took + 1
    assert ended.total_playtime_seconds == ended.last_two_weeks_seconds == ended.credited_duration_seconds
    assert ended.last_played_at == ended.ended_at
    async with sessions() as session:
        item = await session.scalar(select(LibraryItem).where(LibraryItem.user_id == user_id))
        row = await session.get(PlaytimeSession, uuid.UUID(started.session_id))
    assert item.total_playtime_seconds == ended.total_playtime_seconds
    assert item.last_played_timestamp == ended.last_played_at.ToDatetime(tzinfo=UTC)
    assert row.status == "ended" and row.credited_seconds == ended.credited_duration_seconds
    assert not await redis.exists(f"playtime:session:{{{started.session_id}}}")

    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        events = await reader.wait_for(about(user_id), count=2)
        # End is idempotent: the same answer again, and nothing more is emitted.
        assert await end(stub, user_id, product_id, started.session_id) == ended
        await reader.drain(1.5)
        events = reader.matching(about(user_id))
        assert reader.keys[reader.events.index(events[0])] == str(user_id).encode()
    assert sorted(e["type"] for e in events) == sorted([ENDED, UPDATED])
    for e in events:
        assert_cloud_event(e)
    by_type = {e["type"]: e["data"] for e in events}
    assert by_type[ENDED] == {
        "userId": str(user_id),
        "productId": str(product_id),
        "sessionId": started.session_id,
        "deviceId": "pc",
        "durationSeconds": ended.credited_duration_seconds,
        "startTimestamp": by_type[ENDED]["startTimestamp"],
        "endTimestamp": by_type[ENDED]["endTimestamp"],
    }
    assert by_type[UPDATED] == {
        "userId": str(user_id),
        "productId": str(product_id),
        "totalPlaytimeSeconds": ended.total_playtime_seconds,
        "lastPlayedTimestamp": by_type[UPDATED]["lastPlayedTimestamp"],
    }
    assert datetime.fromisoformat(by_type[UPDATED]["lastPlayedTimestamp"]) == item.last_played_timestamp


async def test_start_resumes_the_active_session_of_a_device_and_separates_devices(stub, owner):
    user_id, product_id = owner
    first = await start(stub, user_id, product_id, device="pc")
    again = await start(stub, user_id, product_id, device="pc")
    other = await start(stub, user_id, product_id, device="deck")
    assert again.resumed and again.session_id == first.session_id and again.started_at == first.started_at
    assert not other.resumed and other.session_id != first.session_id


async def test_concurrent_starts_on_one_device_open_one_session(stub, owner, sessions):
    user_id, product_id = owner
    replies = await asyncio.gather(*(start(stub, user_id, product_id) for _ in range(10)))
    assert len({r.session_id for r in replies}) == 1
    assert sum(not r.resumed for r in replies) == 1
    async with sessions() as session:
        count = await session.scalar(select(func.count()).where(PlaytimeSession.user_id == user_id))
    assert count == 1


async def test_two_devices_playing_the_same_game_at_once_count_once(stub, owner):
    user_id, product_id = owner
    pc = await start(stub, user_id, product_id, device="pc")
    deck = await start(stub, user_id, product_id, device="deck")
    await play(stub, user_id, product_id, [pc.session_id, deck.session_id], 4)
    first = await end(stub, user_id, product_id, pc.session_id)
    second = await end(stub, user_id, product_id, deck.session_id)

    assert first.credited_duration_seconds >= 3 and second.credited_duration_seconds >= 3
    both = first.credited_duration_seconds + second.credited_duration_seconds
    assert max(first.credited_duration_seconds, second.credited_duration_seconds) <= (
        second.total_playtime_seconds
    )
    assert second.total_playtime_seconds <= both - 3, "overlapping time was counted twice"
    [product] = (await stats(stub, user_id, product_id)).stats
    assert product.total_playtime_seconds == second.total_playtime_seconds
    assert {d.device_id: d.playtime_seconds for d in product.device_totals} == {
        "pc": first.credited_duration_seconds,
        "deck": second.credited_duration_seconds,
    }


async def test_a_heartbeat_gap_longer_than_twice_the_interval_is_not_credited(stub, owner):
    user_id, product_id = owner
    began = time.monotonic()
    started = await start(stub, user_id, product_id)
    await play(stub, user_id, product_id, [started.session_id], 1)
    first = time.monotonic() - began
    await asyncio.sleep(2 * INTERVAL + 1)  # longer than the credited gap, shorter than the reaper's limit
    resumed = time.monotonic()
    await heartbeat(stub, user_id, product_id, started.session_id)
    await play(stub, user_id, product_id, [started.session_id], 1)
    ended = await end(stub, user_id, product_id, started.session_id)
    second = time.monotonic() - resumed
    # Played 1 s, silent 5 s, played 1 s (each longer on a busy machine): only the play counts.
    assert 1 <= ended.credited_duration_seconds <= first + second + 1
    assert ended.total_playtime_seconds == ended.credited_duration_seconds


async def test_a_silent_session_is_reaped_and_credited_up_to_its_last_heartbeat(stub, owner, settings):
    user_id, product_id = owner
    began = time.monotonic()
    started = await start(stub, user_id, product_id)
    await play(stub, user_id, product_id, [started.session_id], 2)
    played = time.monotonic() - began
    last_heartbeat = datetime.now(UTC)
    await asyncio.sleep(3 * INTERVAL + 2)
    code, reason, _ = await failure(heartbeat(stub, user_id, product_id, started.session_id))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")

    ended = await end(stub, user_id, product_id, started.session_id)
    assert 1 <= ended.credited_duration_seconds <= played + 1
    assert abs(ended.ended_at.ToDatetime(tzinfo=UTC) - last_heartbeat) < timedelta(seconds=1)
    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        [reaped] = await reader.wait_for(about(user_id, ENDED))
    assert reaped["data"]["durationSeconds"] == ended.credited_duration_seconds


async def test_a_redis_restart_mid_session_loses_at_most_one_checkpoint_interval(
    stub, owner, private_redis: PrivateRedis, target
):
    user_id, product_id = owner
    started = await start(stub, user_id, product_id)
    began = datetime.now(UTC)
    await play(stub, user_id, product_id, [started.session_id], 6)
    played = (datetime.now(UTC) - began).total_seconds()
    await private_redis.stop()  # Redis dies and comes back empty
    await private_redis.start()
    await wait_serving(target)

    code, reason, _ = await failure(heartbeat(stub, user_id, product_id, started.session_id))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    ended = await end(stub, user_id, product_id, started.session_id)
    assert played - CHECKPOINT - 1 <= ended.credited_duration_seconds <= played
    assert ended.total_playtime_seconds == ended.credited_duration_seconds


async def test_a_heartbeat_while_redis_is_down_is_unavailable_and_works_once_it_is_back(
    stub, owner, private_redis: PrivateRedis, target
):
    user_id, product_id = owner
    started = await start(stub, user_id, product_id)
    await private_redis.stop()
    try:
        code, reason, _ = await failure(heartbeat(stub, user_id, product_id, started.session_id))
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
    finally:
        await private_redis.start()
    await wait_serving(target)

    restarted = await start(stub, user_id, product_id)  # the session's live state went with Redis
    await heartbeat(stub, user_id, product_id, restarted.session_id)
    await end(stub, user_id, product_id, restarted.session_id)


async def test_heartbeats_touch_redis_only_never_the_database(settings, owner, sessions):
    """The heartbeat use case in-process on the real stack, with every SQL statement counted."""
    user_id, product_id = owner
    engine = create_engine(settings.database_url, pool_size=2)
    redis = redis_from_settings(settings, timeout=5.0)
    deps = Deps(
        dataclasses.replace(settings, playtime_heartbeat_rate_per_interval=0),  # 500 in a row
        UnitOfWorkFactory(create_sessionmaker(engine), "/test", lambda: None),
        redis,
        ObjectStore(settings),
        utc_now,
    )
    playtime = Playtime(deps)
    started = await playtime.start(user_id, product_id, "pc", None)
    statements: list[str] = []

    def record(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        for _ in range(500):
            await playtime.heartbeat(user_id, started.session_id, product_id)
        assert statements == []
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
        await playtime.end(user_id, started.session_id, product_id)
        await redis.aclose()
        await engine.dispose()


async def test_active_sessions_count_in_stats_up_to_their_last_heartbeat(stub, owner):
    user_id, product_id = owner
    began = time.monotonic()
    started = await start(stub, user_id, product_id, device="pc")
    await play(stub, user_id, product_id, [started.session_id], 2)
    [product] = (await stats(stub, user_id, product_id)).stats
    assert 1 <= product.total_playtime_seconds <= time.monotonic() - began + 1
    assert [d.device_id for d in product.device_totals] == ["pc"]
    await end(stub, user_id, product_id, started.session_id)


async def test_offline_sessions_are_idempotent_validated_one_by_one_and_overlaps_count_once(
    stub, owner, sessions, settings
):
    user_id, product_id = owner
    not_owned = uuid.uuid4()
    now = datetime.now(UTC)
    ids = [uuid.uuid4() for _ in range(7)]

    def offline(i, start_at, end_at, product=product_id, device="laptop"):
        return pb.OfflineSession(
            client_session_id=str(ids[i]),
            product_id=str(product),
            device_id=device,
            start_time=ts(start_at),
            end_time=ts(end_at),
        )

    request = pb.RecordOfflineSessionsRequest(
        sessions=[
            offline(0, now - timedelta(hours=3), now - timedelta(hours=2)),
            offline(1, now - timedelta(hours=2, minutes=30), now - timedelta(hours=1), device="deck"),
            offline(2, now - timedelta(hours=1), now + timedelta(hours=1)),
            offline(3, now - timedelta(hours=30), now - timedelta(hours=5)),
            offline(4, now - timedelta(hours=1), now - timedelta(hours=2)),
            offline(5, now - timedelta(hours=1), now, product=not_owned),
            offline(0, now - timedelta(hours=3), now - timedelta(hours=2)),
        ]
    )
    R = pb.OfflineSessionResult
    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        first = await stub.RecordOfflineSessions(request, metadata=user_metadata(user_id))
        assert [(r.outcome, r.rejection_reason, r.credited_seconds) for r in first.results] == [
            (R.ACCEPTED, R.REJECTION_REASON_UNSPECIFIED, 3600),
            (R.ACCEPTED, R.REJECTION_REASON_UNSPECIFIED, 3600),  # 30 of its 90 minutes overlap session 0
            (R.REJECTED, R.IN_FUTURE, 0),
            (R.REJECTED, R.TOO_LONG, 0),
            (R.REJECTED, R.INVALID_INTERVAL, 0),
            (R.REJECTED, R.PRODUCT_NOT_OWNED, 0),
            (R.DUPLICATE, R.REJECTION_REASON_UNSPECIFIED, 0),
        ]
        assert [r.client_session_id for r in first.results] == [str(i) for i in [*ids[:6], ids[0]]]
        totals = {s.product_id: s for s in first.stats}
        assert totals[str(product_id)].total_playtime_seconds == 7200
        assert totals[str(not_owned)].total_playtime_seconds == 0
        events = await reader.wait_for(about(user_id), count=3)

        replay = await stub.RecordOfflineSessions(request, metadata=user_metadata(user_id))
        assert [r.outcome for r in replay.results[:2]] == [R.DUPLICATE, R.DUPLICATE]
        assert list(replay.stats) == list(first.stats)
        await reader.drain(1.5)
        events = reader.matching(about(user_id))
    assert sorted(e["type"] for e in events) == sorted([ENDED, ENDED, UPDATED])
    [updated] = [e["data"] for e in events if e["type"] == UPDATED]
    assert updated["totalPlaytimeSeconds"] == 7200
    async with sessions() as session:
        item = await session.scalar(select(LibraryItem).where(LibraryItem.user_id == user_id))
        rows = await session.scalar(select(func.count()).where(PlaytimeSession.user_id == user_id))
    assert item.total_playtime_seconds == 7200 and rows == 2


async def test_two_week_window_is_exact_and_splits_sessions_at_its_edge(stub, owner):
    user_id, product_id = owner
    edge = datetime.now(UTC) - timedelta(days=14)
    request = pb.RecordOfflineSessionsRequest(
        sessions=[
            pb.OfflineSession(
                client_session_id=str(uuid.uuid4()),
                product_id=str(product_id),
                device_id="pc",
                start_time=ts(edge - timedelta(hours=1)),
                end_time=ts(edge + timedelta(hours=1)),
            )
        ]
    )
    await stub.RecordOfflineSessions(request, metadata=user_metadata(user_id))
    reply = await stats(stub, user_id, product_id, period=pb.GetPlaytimeStatsRequest.LAST_2_WEEKS)
    [product] = reply.stats
    assert product.total_playtime_seconds == 7200
    assert 3600 - 10 <= product.last_two_weeks_seconds <= 3600
    assert product.period_playtime_seconds == product.last_two_weeks_seconds
    assert [(d.device_id, d.playtime_seconds) for d in product.device_totals] == [
        ("pc", product.last_two_weeks_seconds)
    ]


async def test_stats_without_products_list_owned_and_played_products_most_recent_first(stub, sessions):
    user_id, played_early, played_late, never = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user_id, played_early, played_late, never)
    now = datetime.now(UTC)
    old = now - timedelta(days=20)
    request = pb.RecordOfflineSessionsRequest(
        sessions=[
            pb.OfflineSession(
                client_session_id=str(uuid.uuid4()),
                product_id=str(product),
                device_id="pc",
                start_time=ts(at - timedelta(minutes=10)),
                end_time=ts(at),
            )
            for product, at in [(played_early, old), (played_late, now - timedelta(minutes=1))]
        ]
    )
    await stub.RecordOfflineSessions(request, metadata=user_metadata(user_id))
    all_time = await stats(stub, user_id)
    assert [s.product_id for s in all_time.stats] == [str(played_late), str(played_early), str(never)]
    assert all_time.stats[2].total_playtime_seconds == 0 and not all_time.stats[2].HasField("last_played_at")
    recent = await stats(stub, user_id, period=pb.GetPlaytimeStatsRequest.LAST_2_WEEKS)
    assert [s.product_id for s in recent.stats] == [str(played_late)]


async def test_another_user_cannot_heartbeat_end_or_see_a_session_or_its_stats(stub, owner):
    user_id, product_id = owner
    intruder = uuid.uuid4()
    started = await start(stub, user_id, product_id)
    await play(stub, user_id, product_id, [started.session_id], 2)

    for call in (heartbeat, end):
        code, reason, _ = await failure(call(stub, intruder, product_id, started.session_id))
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    [theirs] = (await stats(stub, intruder, product_id)).stats
    assert theirs.total_playtime_seconds == 0 and not theirs.device_totals
    assert (await stats(stub, intruder)).stats == []
    code, reason, _ = await failure(start(stub, intruder, product_id))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PRODUCT_ACCESS_DENIED")
    # The owner's session is untouched by all of that.
    ended = await end(stub, user_id, product_id, started.session_id)
    assert ended.credited_duration_seconds >= 1


async def test_playing_a_product_not_owned_is_refused(stub, sessions):
    user_id = uuid.uuid4()
    code, reason, _ = await failure(start(stub, user_id, uuid.uuid4()))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PRODUCT_ACCESS_DENIED")
    async with sessions() as session:
        assert await session.scalar(select(func.count()).where(PlaytimeSession.user_id == user_id)) == 0


async def test_calls_without_a_user_token_are_refused(stub, owner):
    _, product_id = owner
    request = pb.StartPlaytimeSessionRequest(product_id=str(product_id), device_id="pc")
    code, reason, _ = await failure(stub.StartPlaytimeSession(request, metadata=service_metadata()))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    code, reason, _ = await failure(stub.GetPlaytimeStats(pb.GetPlaytimeStatsRequest()))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


def _offline(**fields) -> pb.RecordOfflineSessionsRequest:
    return pb.RecordOfflineSessionsRequest(sessions=[pb.OfflineSession(**fields)])


def _future() -> timestamp_pb2.Timestamp:
    return ts(datetime.now(UTC) + timedelta(days=1))


_OFFLINE_SESSION_FIELDS_OF_FIRST_FOUR = [
    f"sessions[{i}].{name}"
    for i in range(4)
    for name in ("client_session_id", "product_id", "device_id", "start_time", "end_time")
]

# (rpc, request for product id p, the fields reported, in the order the servicer checks them)
INVALID_REQUESTS = {
    "start_bad_ids": (
        "StartPlaytimeSession",
        lambda p: pb.StartPlaytimeSessionRequest(product_id="nope", device_id="x" * 129),
        ["product_id", "device_id"],
    ),
    "start_bad_client_session_id": (
        "StartPlaytimeSession",
        lambda p: pb.StartPlaytimeSessionRequest(product_id=p, device_id="pc", client_session_id="bad"),
        ["client_session_id"],
    ),
    "heartbeat_missing_session": (
        "RecordPlaytimeHeartbeat",
        lambda p: pb.RecordPlaytimeHeartbeatRequest(product_id=p),
        ["session_id"],
    ),
    "heartbeat_future_timestamp": (
        "RecordPlaytimeHeartbeat",
        lambda p: pb.RecordPlaytimeHeartbeatRequest(
            product_id=p, session_id=str(uuid.uuid4()), current_timestamp=_future()
        ),
        ["current_timestamp"],
    ),
    "end_bad_session_id": (
        "EndPlaytimeSession",
        lambda p: pb.EndPlaytimeSessionRequest(product_id=p, session_id="not-a-uuid"),
        ["session_id"],
    ),
    "offline_empty": ("RecordOfflineSessions", lambda p: pb.RecordOfflineSessionsRequest(), ["sessions"]),
    "offline_bad_session": (
        "RecordOfflineSessions",
        lambda p: _offline(client_session_id="x", product_id=p, end_time=ts(datetime.now(UTC))),
        ["sessions[0].client_session_id", "sessions[0].device_id", "sessions[0].start_time"],
    ),
    "offline_oversize_device": (
        "RecordOfflineSessions",
        lambda p: _offline(
            client_session_id=str(uuid.uuid4()),
            product_id=p,
            device_id="d" * 129,
            start_time=ts(datetime.now(UTC) - timedelta(hours=1)),
            end_time=ts(datetime.now(UTC)),
        ),
        ["sessions[0].device_id"],
    ),
    "offline_too_many": (
        "RecordOfflineSessions",
        lambda p: pb.RecordOfflineSessionsRequest(
            sessions=[
                pb.OfflineSession(
                    client_session_id=str(uuid.uuid4()),
                    product_id=p,
                    device_id="d",
                    start_time=ts(datetime.now(UTC) - timedelta(hours=2)),
                    end_time=ts(datetime.now(UTC) - timedelta(hours=1)),
                )
                for _ in range(101)
            ]
        ),
        ["sessions"],
    ),
    "offline_too_many_and_all_malformed": (  # 506 violations: the error reports the first 20
        "RecordOfflineSessions",
        lambda p: pb.RecordOfflineSessionsRequest(sessions=[pb.OfflineSession()] * 101),
        ["sessions", *_OFFLINE_SESSION_FIELDS_OF_FIRST_FOUR[:19]],
    ),
    "stats_bad_product_and_period": (
        "GetPlaytimeStats",
        lambda p: pb.GetPlaytimeStatsRequest(product_ids=[f"{p},zzz"], period=7),
        ["product_ids[0]", "period"],
    ),
}


@pytest.mark.parametrize("case", INVALID_REQUESTS)
async def test_invalid_input_is_refused_with_field_violations_and_writes_nothing(stub, owner, sessions, case):
    user_id, product_id = owner
    rpc, make_request, fields = INVALID_REQUESTS[case]
    call = getattr(stub, rpc)(make_request(str(product_id)), metadata=user_metadata(user_id))
    assert await failure(call) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", fields)
    async with sessions() as session:
        assert await session.scalar(select(func.count()).where(PlaytimeSession.user_id == user_id)) == 0
        assert await session.scalar(select(func.count()).where(PlaytimeInterval.user_id == user_id)) == 0


async def test_a_heartbeat_naming_another_product_is_invalid(stub, owner):
    user_id, product_id = owner
    started = await start(stub, user_id, product_id)
    code, reason, fields = await failure(heartbeat(stub, user_id, uuid.uuid4(), started.session_id))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["product_id"])
    await end(stub, user_id, product_id, started.session_id)
