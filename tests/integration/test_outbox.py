"""The transactional outbox against a real PostgreSQL, Redis and Kafka-protocol broker (SPEC §7).

The tests run on a scratch database with a private broker and Redis (tests/support/outbox.py), so the
service's own relay can't interfere and the dependencies can be stopped and restarted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import psycopg
import pytest
from sqlalchemy import func, select, text

from server.core.events.consumer import KafkaEventConsumer
from server.core.events.tables import OutboxMessage
from server.core.uow import notification_stream
from tests.support.kafka import TopicReader, about, assert_cloud_event
from tests.support.outbox import EVENT_TYPE, FAST, TOPIC, change
from tests.support.waiting import wait_until


async def _pending(world) -> int:
    async with world.sessions() as session:
        return await session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
        )


async def test_committed_change_reaches_a_kafka_consumer_as_a_cloud_event(world):
    user_id = uuid.uuid4()
    async with world.relay():
        event = await change(world.uow(), user_id, "hello")
        async with TopicReader(world.broker.bootstrap, TOPIC) as reader:
            [received] = await reader.wait_for(lambda e: e["id"] == event["id"])
            assert reader.keys[reader.events.index(received)] == str(user_id).encode()
        await wait_until(lambda: world.stream(user_id), what="the notification")
    assert_cloud_event(received)
    assert received["type"] == EVENT_TYPE
    assert received["subject"] == str(user_id)
    assert received["data"] == {"userId": str(user_id), "note": "hello"}
    assert await world.stream(user_id) == [("testChanged", {"note": "hello"})]
    # The stream of a user who gets no more notifications expires (NOTIFICATION_STREAM_TTL_SECONDS).
    ttl = await world.redis.ttl(notification_stream(user_id))
    assert 0 < ttl <= FAST.stream_ttl_seconds


async def test_rolled_back_change_emits_nothing(world):
    user_id = uuid.uuid4()
    async with world.uow()() as uow:
        await uow.db.execute("INSERT INTO changes (id, note) VALUES (%s, 'rolled back')", (uuid.uuid4(),))
        uow.add_event(EVENT_TYPE, user_id, {"userId": str(user_id), "note": "rolled back"})
        uow.notify(user_id, "testChanged", {"note": "rolled back"})
    async with world.relay():
        committed = await change(world.uow(), user_id, "committed")
        async with TopicReader(world.broker.bootstrap, TOPIC) as reader:
            await reader.wait_for(lambda e: e["id"] == committed["id"])
            await wait_until(lambda: world.stream(user_id), what="the committed notification")
    assert [e["data"]["note"] for e in reader.matching(about(user_id))] == ["committed"]
    async with world.sessions() as session:
        assert (await session.scalar(text("SELECT count(*) FROM changes WHERE note = 'rolled back'"))) == 0
        channels = (
            await session.scalars(select(OutboxMessage.channel).where(OutboxMessage.key == str(user_id)))
        ).all()
        assert sorted(channels) == ["kafka", "notification"]
    assert [payload["note"] for _, payload in await world.stream(user_id)] == ["committed"]


async def test_deferred_writes_go_with_the_commit_and_a_failing_one_keeps_nothing(world):
    """`uow.defer`: writes sent in the commit's one pipeline with the outbox rows and COMMIT. They are
    committed with the unit; when one fails, the commit fails and neither they, the unit's other writes nor
    its outbox rows are kept. (Notifications only: a Kafka row left pending here would reach the consumers
    of the tests after it.)"""
    user_id, taken = uuid.uuid4(), uuid.uuid4()
    async with world.uow()() as uow:
        uow.defer("INSERT INTO changes (id, note) VALUES (%s, 'deferred')", (taken,))
        uow.notify(user_id, "testChanged", {"note": "kept"})
        await uow.commit()
    async with world.uow()() as uow:
        await uow.db.execute("INSERT INTO changes (id, note) VALUES (%s, 'at once')", (uuid.uuid4(),))
        uow.defer("INSERT INTO changes (id, note) VALUES (%s, 'duplicate')", (taken,))  # the key is taken
        uow.notify(user_id, "testChanged", {"note": "lost"})
        with pytest.raises(psycopg.errors.UniqueViolation):
            await uow.commit()
    async with world.sessions() as session:
        notes = (await session.scalars(text("SELECT note FROM changes ORDER BY note"))).all()
        assert "deferred" in notes and "at once" not in notes and "duplicate" not in notes
        payloads = (
            await session.scalars(select(OutboxMessage.payload).where(OutboxMessage.key == str(user_id)))
        ).all()
        assert [p["payload"] for p in payloads] == [{"note": "kept"}]


async def test_events_written_while_broker_is_down_arrive_once_after_restart(world):
    user_id = uuid.uuid4()
    uow = world.uow()
    handled: Counter[str] = Counter()

    async def count(_uow, event):
        handled[event["id"]] += 1

    async with world.relay():
        await world.broker.stop()
        try:
            written = [await change(uow, user_id, f"offline-{i}") for i in range(20)]
            # The notifications go out; the Kafka rows stay pending.
            await wait_until(
                lambda: _has(world, user_id, 20), what="the 20 notifications while Kafka is down"
            )
            assert await _pending(world) >= 20
        finally:
            await world.broker.start()
        consumer = KafkaEventConsumer(
            name=f"test-idempotent-{user_id.hex[:8]}",
            topics=[TOPIC],
            handlers={EVENT_TYPE: count},
            uow_factory=uow,
            bootstrap_servers=world.broker.bootstrap,
        )
        ids = {e["id"] for e in written}
        task = asyncio.create_task(consumer.run())
        try:
            await wait_until(lambda: ids <= set(handled), what="every event written while Kafka was down")
            # A replay of an already-handled event (a redelivery) must change nothing. A sentinel written
            # after it has the same key, so it lands on the same partition behind the replay: once the
            # sentinel is handled, the consumer has seen the replay too.
            async with uow() as unit:
                unit.session.add(
                    OutboxMessage(
                        id=uuid.uuid4(), channel="kafka", topic=TOPIC, key=str(user_id), payload=written[0]
                    )
                )
                await unit.commit()
            world._wake()
            sentinel = await change(uow, user_id, "sentinel")
            await wait_until(lambda: sentinel["id"] in handled, what="the sentinel written after the replay")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        assert set(handled) == ids | {sentinel["id"]}, "every event written while Kafka was down arrives"
        assert all(n == 1 for n in handled.values()), f"duplicates reached the handler: {handled}"
        async with world.sessions() as session:
            processed = await session.scalar(
                text("SELECT count(*) FROM processed_events WHERE consumer = :c"), {"c": consumer.name}
            )
        assert processed == 21  # the 20 written while Kafka was down and the sentinel
        # The relay marks a batch published once it is sent, which may be just after the consumer saw it.
        await wait_until(
            lambda: _no_pending(world), what="every outbox row to be marked published", timeout=10
        )


async def _has(world, user_id: uuid.UUID, count: int) -> bool:
    return len(await world.stream(user_id)) >= count


async def _no_pending(world) -> bool:
    return not await _pending(world)
