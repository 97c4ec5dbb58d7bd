"""Idempotent consumers against hostile and failing events (SPEC §7), on the private outbox world's broker
and database: bounded retries, a dead-letter table, the partition moves on, and the incoming event's
correlation id is what the handler's own events carry."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from server.core import metrics
from server.core.events.consumer import KafkaEventConsumer
from tests.support.outbox import EVENT_TYPE
from tests.support.processes import ROOT
from tests.support.waiting import wait_until

INCOMING = "com.platform.test.note.written.v1"


def _event(change_id: uuid.UUID, note: str, **attributes: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/test",
        "type": INCOMING,
        "subject": str(change_id),
        "data": {"changeId": str(change_id), "note": note},
        **attributes,
    }


async def _write_note(uow, event: dict[str, Any]) -> None:
    """The handler: a row of `changes` (id primary key, note NOT NULL text) and an event of its own."""
    change_id = uuid.UUID(event["data"]["changeId"])
    await uow.db.execute("INSERT INTO changes (id, note) VALUES (%s, %s)", (change_id, event["data"]["note"]))
    uow.add_event(EVENT_TYPE, change_id, {"changeId": str(change_id)})


def _topic() -> str:
    """A topic of the test's own: a new consumer group reads its topic from the beginning."""
    return f"com.platform.test.{uuid.uuid4().hex[:12]}.v1"


async def _send(bootstrap: str, topic: str, key: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


def _consumer(world, name: str, topic: str) -> KafkaEventConsumer:
    return KafkaEventConsumer(
        name=name,
        topics=[topic],
        handlers={INCOMING: _write_note},
        uow_factory=world.uow(),
        bootstrap_servers=world.broker.bootstrap,
        max_attempts=3,
        retry_backoff_seconds=0.02,
    )


async def _scalar(world, sql: str, **params: Any) -> Any:
    async with world.engine.connect() as conn:
        return await conn.scalar(text(sql), params)


async def test_hostile_events_are_dead_lettered_and_the_partition_moves_on(world):
    name = f"test-hostile-{uuid.uuid4().hex[:8]}"
    key = str(uuid.uuid4())  # one key: one Kafka partition, the hostile records ahead of the good ones
    taken = uuid.uuid4()
    first, second = uuid.uuid4(), uuid.uuid4()
    hostile = {
        "not JSON": b"\x00not json{",
        "over-long id": json.dumps(_event(uuid.uuid4(), "long id", id="x" * 5000)).encode(),
        "NUL in a name": json.dumps(_event(uuid.uuid4(), "bad\x00name")).encode(),
        "constraint violation": json.dumps(_event(taken, "taken again")).encode(),
    }
    good = [
        _event(taken, "first writer", correlationid="corr-taken"),
        *hostile.values(),
        _event(first, "first", correlationid="corr-first"),
        _event(second, "second", correlationid="corr-second"),
    ]
    values = [g if isinstance(g, bytes) else json.dumps(g).encode() for g in good]
    retries = metrics.CONSUMER_RETRIES.labels(name)
    topic = _topic()
    await _send(world.broker.bootstrap, topic, key, values)

    task = asyncio.create_task(_consumer(world, name, topic).run())
    try:
        await wait_until(
            lambda: _scalar(world, "SELECT count(*) FROM changes WHERE id = :id", id=second),
            what="the last good event, behind the hostile ones",
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async with world.engine.connect() as conn:
        letters = (
            await conn.execute(
                text(
                    "SELECT value, event_id, attempts, error FROM consumer_dead_letters"
                    ' WHERE consumer = :c ORDER BY "offset"'
                ),
                {"c": name},
            )
        ).all()
        notes = (
            await conn.execute(
                text("SELECT id, note FROM changes WHERE id = ANY(:ids)"), {"ids": [taken, first, second]}
            )
        ).all()
        correlation = dict(
            (
                await conn.execute(
                    text(
                        "SELECT payload->'data'->>'changeId', payload->>'correlationid' FROM outbox"
                        " WHERE payload->'data'->>'changeId' = ANY(:ids)"
                    ),
                    {"ids": [str(taken), str(first), str(second)]},
                )
            ).all()
        )
    assert [bytes(letter.value) for letter in letters] == list(hostile.values()), "each hostile record"
    assert letters[0].event_id is None and letters[0].attempts == 1, "not JSON: no retry can help"
    assert letters[1].event_id == "x" * 200, "the over-long id is kept cut to 200 characters"
    assert [letter.attempts for letter in letters[1:]] == [3, 3, 3], "bounded retries (CONSUMER_MAX_ATTEMPTS)"
    assert "NUL" in letters[2].error
    assert "UniqueViolation" in letters[3].error
    assert retries._value.get() == 6
    assert sorted(notes) == sorted([(taken, "first writer"), (first, "first"), (second, "second")])
    # Each event the handler emitted carries the correlation id of the event it handled.
    assert correlation == {str(taken): "corr-taken", str(first): "corr-first", str(second): "corr-second"}


async def test_a_dead_letter_is_listed_and_replayed_by_the_script(world):
    name = f"test-replay-{uuid.uuid4().hex[:8]}"
    blocker = uuid.uuid4()
    async with world.uow()() as uow:
        await uow.db.execute("INSERT INTO changes (id, note) VALUES (%s, 'in the way')", (blocker,))
        await uow.commit()
    event = _event(blocker, "replayed", correlationid="corr-replay")
    topic = _topic()
    await _send(world.broker.bootstrap, topic, str(blocker), [json.dumps(event).encode()])
    task = asyncio.create_task(_consumer(world, name, topic).run())
    try:
        await wait_until(
            lambda: _scalar(world, "SELECT count(*) FROM consumer_dead_letters WHERE consumer = :c", c=name),
            what="the dead letter",
        )
        listed = _script(world, "list", "consumer", "--json")
        [letter] = [row for row in listed if row["consumer"] == name]
        assert letter["event_id"] == event["id"] and "UniqueViolation" in letter["error"]

        # The operator clears what was in the way and replays: the record is published to its topic again.
        async with world.engine.begin() as conn:
            await conn.execute(text("DELETE FROM changes WHERE id = :id"), {"id": blocker})
        assert _script(world, "replay", "consumer", str(letter["id"]), "--json") == {
            "replayed": [letter["id"]]
        }
        await wait_until(
            lambda: _scalar(
                world, "SELECT count(*) FROM changes WHERE id = :id AND note = 'replayed'", id=blocker
            ),
            what="the replayed event to be handled",
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not await _scalar(
        world, "SELECT count(*) FROM consumer_dead_letters WHERE id = :id", id=letter["id"]
    )


def _script(world, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dead-letters"), *args],
        env={**world.relay_env()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
