"""The transactional outbox against a real PostgreSQL, Redis and Kafka-protocol broker (SPEC §7).

Each test runs on a scratch database and a private broker, so the service's own relay can't interfere and
the broker can be stopped and restarted.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, text

from server.core.config import Settings
from server.core.db import create_engine, create_sessionmaker
from server.core.events.consumer import KafkaEventConsumer
from server.core.events.kafka import KafkaPublisher
from server.core.events.relay import OutboxRelay
from server.core.events.tables import OutboxMessage
from server.core.redis import create_redis
from server.core.uow import UnitOfWorkFactory, notification_stream
from tests.support.kafka import TopicReader, about, assert_cloud_event
from tests.support.processes import PrivateBroker, create_scratch_database, drop_database
from tests.support.waiting import wait_until

TOPIC = "com.platform.library.events.v1"
EVENT_TYPE = "com.platform.library.test.changed.v1"


@pytest.fixture
async def world(settings: Settings):
    """A scratch database (with a `changes` table), a private broker and the outbox relay between them, as
    `sessions`, `redis`, `broker`, `uow` (a UnitOfWorkFactory) and `relay`."""
    database_url = create_scratch_database(settings.database_url)
    engine = create_engine(database_url, pool_size=4)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE changes (id uuid PRIMARY KEY, note text NOT NULL)"))
    sessions = create_sessionmaker(engine)
    redis = create_redis(settings.redis_url)
    broker = PrivateBroker()
    await broker.start()
    relay = OutboxRelay(sessions, redis, lambda: KafkaPublisher(broker.bootstrap), poll_seconds=0.2)
    uow_factory = UnitOfWorkFactory(sessions, "/library-service/test", relay.wake)
    task = asyncio.create_task(relay.run())
    yield SimpleNamespace(sessions=sessions, redis=redis, broker=broker, uow=uow_factory, relay=relay)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await broker.stop()
    await redis.aclose()
    await engine.dispose()
    drop_database(database_url)


async def _change(world, user_id: uuid.UUID, note: str, *, commit: bool = True) -> dict:
    async with world.uow() as uow:
        await uow.session.execute(
            text("INSERT INTO changes (id, note) VALUES (:id, :note)"), {"id": uuid.uuid4(), "note": note}
        )
        event = uow.add_event(EVENT_TYPE, user_id, {"userId": str(user_id), "note": note})
        uow.notify(user_id, "testChanged", {"note": note})
        if commit:
            await uow.commit()
    return event


async def test_committed_change_reaches_a_kafka_consumer_as_a_cloud_event(world):
    user_id = uuid.uuid4()
    event = await _change(world, user_id, "hello")
    async with TopicReader(world.broker.bootstrap, TOPIC) as reader:
        [received] = await reader.wait_for(lambda e: e["id"] == event["id"])
        assert reader.keys[reader.events.index(received)] == str(user_id).encode()
    assert_cloud_event(received)
    assert received["type"] == EVENT_TYPE
    assert received["subject"] == str(user_id)
    assert received["data"] == {"userId": str(user_id), "note": "hello"}
    entries = await world.redis.xrange(notification_stream(user_id))
    assert [(e[1][b"type"], json.loads(e[1][b"payload"])) for e in entries] == [
        (b"testChanged", {"note": "hello"})
    ]


async def test_rolled_back_change_emits_nothing(world):
    user_id = uuid.uuid4()
    await _change(world, user_id, "rolled back", commit=False)
    committed = await _change(world, user_id, "committed")
    async with TopicReader(world.broker.bootstrap, TOPIC) as reader:
        await reader.wait_for(lambda e: e["id"] == committed["id"])
        await reader.drain(1.0)
    notes = [e["data"]["note"] for e in reader.matching(about(user_id))]
    assert notes == ["committed"]
    async with world.sessions() as session:
        assert (await session.scalar(text("SELECT count(*) FROM changes WHERE note = 'rolled back'"))) == 0
        channels = (await session.scalars(select(OutboxMessage.channel))).all()
        assert sorted(channels) == ["kafka", "notification"]
    entries = await world.redis.xrange(notification_stream(user_id))
    assert [json.loads(e[1][b"payload"])["note"] for e in entries] == ["committed"]


async def test_events_written_while_broker_is_down_arrive_once_after_restart(world):
    user_id = uuid.uuid4()
    await world.broker.stop()
    written = [await _change(world, user_id, f"offline-{i}") for i in range(20)]
    await asyncio.sleep(1.5)  # the relay tries, fails and keeps the rows pending
    async with world.sessions() as session:
        pending = await session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
        )
    assert pending >= 20

    await world.broker.start()
    handled: Counter[str] = Counter()

    async def count(uow, event):
        handled[event["id"]] += 1

    consumer = KafkaEventConsumer(
        name="test-idempotent-consumer",
        topics=[TOPIC],
        handlers={EVENT_TYPE: count},
        uow_factory=world.uow,
        bootstrap_servers=world.broker.bootstrap,
    )
    ids = {e["id"] for e in written}
    task = asyncio.create_task(consumer.run())
    try:
        await wait_until(lambda: ids <= set(handled), what="every event written while Kafka was down")
        # A replay of an already-handled event (a redelivery) must change nothing. A sentinel written after it
        # has the same key, so it lands on the same partition behind the replay: once the sentinel is
        # handled, the consumer has seen the replay too.
        async with world.uow() as uow:
            uow.session.add(
                OutboxMessage(
                    id=uuid.uuid4(), channel="kafka", topic=TOPIC, key=str(user_id), payload=written[0]
                )
            )
            await uow.commit()
        world.relay.wake()
        sentinel = await _change(world, user_id, "sentinel")
        await wait_until(lambda: sentinel["id"] in handled, what="the sentinel written after the replay")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    assert set(handled) == ids | {sentinel["id"]}, "every event written while Kafka was down arrives"
    assert all(n == 1 for n in handled.values()), f"duplicates reached the handler: {handled}"
    async with world.sessions() as session:
        processed = await session.scalar(
            text("SELECT count(*) FROM processed_events WHERE consumer = 'test-idempotent-consumer'")
        )
    assert processed == 21  # the 20 written while Kafka was down and the sentinel

    async def nothing_pending() -> bool:
        # The relay marks a batch published once it is sent, which may be just after the consumer saw it.
        async with world.sessions() as session:
            return not await session.scalar(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
            )

    await wait_until(nothing_pending, what="every outbox row to be marked published", timeout=10)
