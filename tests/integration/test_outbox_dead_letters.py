"""Outbox dead letters replayed by `scripts/dead-letters` (their order) and the dead-letter gauges, on the
private outbox world (tests/support/outbox.py)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from sqlalchemy import text

from server.core import metrics
from server.core.db import DbTimeouts
from server.core.events.channels import CHANNEL_NOTIFICATION
from server.core.events.dead_letters import DeadLetterGauges
from server.core.uow import notification_stream
from tests.support.outbox import change, dead_letters_script
from tests.support.waiting import wait_until


async def test_replayed_dead_letters_keep_their_order_before_the_rows_still_pending(world):
    user_id = uuid.uuid4()
    uow = world.uow()
    stream = notification_stream(user_id)
    # Redis refuses every notification of the user (WRONGTYPE) until the key is fixed: three rows are
    # dead-lettered one after the other (the ones behind a refused row wait for it).
    await world.redis.set(stream, "not a stream")
    async with world.relay():
        for n in range(3):
            await change(uow, user_id, f"dead-{n}")
        await wait_until(lambda: _dead_letters(world, user_id, 3), what="three dead letters")
    await world.redis.delete(stream)
    async with world.relay():  # a row sent after them: the replay cannot put them before it
        await change(uow, user_id, "sent")
        await wait_until(lambda: _stream_length(world, user_id, 1), what="the row sent after them")
    for n in range(2):  # no relay runs now: these stay pending
        await change(uow, user_id, f"pending-{n}")
    letters = await _dead_letter_seqs(world, user_id)
    replayed = dead_letters_script(world, "replay", "outbox", *map(str, reversed(letters)), "--json")
    assert replayed == {"replayed": letters}
    async with world.relay():
        await wait_until(lambda: _stream_length(world, user_id, 6), what="the six notifications")
    notes = [p["note"] for _, p in await world.stream(user_id)]
    assert notes == ["sent", "dead-0", "dead-1", "dead-2", "pending-0", "pending-1"], (
        "replayed rows go out in their original order, after what was sent, before the rows still pending"
    )


async def test_the_dead_letter_gauges_follow_every_change_at_once(world):
    user_id = uuid.uuid4()
    uow = world.uow()

    def outbox_gauge() -> float:
        return _sample(metrics.OUTBOX_DEAD_LETTERS, "channel", CHANNEL_NOTIFICATION) or 0

    # A refresh period far beyond the test: only the announcements of changes can move the gauges.
    gauges = DeadLetterGauges(world.database_url, DbTimeouts(), refresh_seconds=3600)
    task = asyncio.create_task(gauges.run())
    try:
        baseline = await _count(
            world, "SELECT count(*) FROM outbox_dead_letters WHERE channel = 'notification'"
        )
        await wait_until(lambda: outbox_gauge() == baseline, what="the first count")
        await world.redis.set(notification_stream(user_id), "not a stream")
        async with world.relay():
            await change(uow, user_id, "dead")
            await wait_until(
                lambda: outbox_gauge() == baseline + 1, what="the gauge to count the dead letter"
            )
        await world.redis.delete(notification_stream(user_id))
        [seq] = await _dead_letter_seqs(world, user_id)
        dead_letters_script(world, "replay", "outbox", str(seq), "--json")
        await wait_until(lambda: outbox_gauge() == baseline, what="the gauge to drop the replayed row")
        name = f"test-gauge-{uuid.uuid4().hex[:8]}"
        async with world.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO consumer_dead_letters"
                    ' (consumer, topic, partition, "offset", attempts, error)'
                    " VALUES (:name, 't', 0, 0, 1, 'e')"
                ),
                {"name": name},
            )
        await wait_until(
            lambda: _sample(metrics.CONSUMER_DEAD_LETTERS, "consumer", name) == 1, what="the consumer gauge"
        )
        async with world.engine.begin() as conn:
            await conn.execute(
                text("DELETE FROM consumer_dead_letters WHERE consumer = :name"), {"name": name}
            )
        await wait_until(
            lambda: _sample(metrics.CONSUMER_DEAD_LETTERS, "consumer", name) is None,
            what="the consumer gauge to drop it",
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _sample(gauge, label: str, value: str) -> float | None:
    """The gauge's value for the label (read from what it exports: a recount replaces its children)."""
    for metric in gauge.collect():
        for sample in metric.samples:
            if sample.labels.get(label) == value:
                return sample.value
    return None


async def _count(world, sql: str) -> int:
    async with world.engine.connect() as conn:
        return await conn.scalar(text(sql))


async def _dead_letters(world, user_id: uuid.UUID, count: int) -> bool:
    return len(await _dead_letter_seqs(world, user_id)) >= count


async def _dead_letter_seqs(world, user_id: uuid.UUID) -> list[int]:
    async with world.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT seq FROM outbox_dead_letters WHERE key = :k ORDER BY seq"), {"k": str(user_id)}
        )
        return [row[0] for row in rows]


async def _stream_length(world, user_id: uuid.UUID, count: int) -> bool:
    return len(await world.stream(user_id)) >= count
