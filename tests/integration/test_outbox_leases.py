"""Partition leases of the outbox relay (server/core/events/leases.py) and the relay's Postgres bounds, on
the private outbox world (tests/support/outbox.py): a relay that lost its lease is fenced off, and a hung
Postgres makes the relay give up and come back instead of waiting forever."""

from __future__ import annotations

import dataclasses
import uuid

from sqlalchemy import text

from server.core import metrics
from server.core.db import DbTimeouts
from server.core.events.channels import CHANNEL_KAFKA, CHANNEL_NOTIFICATION
from tests.support.kafka import TopicReader, about
from tests.support.outbox import FAST, TOPIC, change
from tests.support.processes import hung_postgres
from tests.support.waiting import wait_until

# Rebalances only when a test says so: what a relay believes it owns stays as it was, as in a process that
# hung between two rebalances.
MANUAL = dataclasses.replace(FAST, rebalance_seconds=3600.0)


async def test_a_relay_that_lost_its_lease_marks_nothing_and_the_new_owner_sends_in_order(world):
    user_id = uuid.uuid4()
    uow = world.uow()
    stale_relay, new_relay = world.new_relay(MANUAL), world.new_relay(MANUAL)
    stale, new = stale_relay.channels[CHANNEL_KAFKA], new_relay.channels[CHANNEL_KAFKA]
    lost = metrics.OUTBOX_LEASES_LOST.labels(CHANNEL_KAFKA)
    lost_before = lost._value.get()
    try:
        assert len(await stale.rebalance()) == 32, "alone, a relay leases every partition"
        written = [await change(uow, user_id, f"{n}") for n in range(3)]
        partition = await _partition_of(world, user_id)
        # The stale relay stops renewing (hung): its lease on the user's partition runs out, as its lease
        # period would, and the other relay takes the partition over (a new epoch).
        await _expire(world, CHANNEL_KAFKA, partition)
        assert partition in await new.rebalance()
        # It wakes up still believing it owns the partition: it sends the rows (nothing stops a send) but
        # cannot mark them, and drops the partition.
        async with TopicReader(world.broker.bootstrap, TOPIC) as reader:
            await stale.relay_once()
            assert partition not in stale.owned
            assert await _pending_of(world, user_id) == 3, "the stale relay marked nothing"
            assert lost._value.get() == lost_before + 1
            await new.relay_once()
            assert await _pending_of(world, user_id) == 0, "the new owner marks them"
            await reader.wait_for(about(user_id), count=6)
        seen = [e["data"]["note"] for e in reader.matching(about(user_id))]
        assert sorted(seen) == sorted(["0", "1", "2"] * 2), "both sent them: a duplicate, not a loss"
        assert list(dict.fromkeys(seen)) == [e["data"]["note"] for e in written], "order kept after dedup"
    finally:
        await stale_relay.aclose()
        await new_relay.aclose()


async def test_a_hung_postgres_makes_the_relay_give_up_and_recover(world):
    options = dataclasses.replace(FAST, db_timeouts=DbTimeouts(connect=1.0, statement=1.0, lock=1.0))
    user_id = uuid.uuid4()
    uow = world.uow()
    failures = {
        channel: metrics.OUTBOX_RELAY_FAILURES.labels(channel)
        for channel in (CHANNEL_KAFKA, CHANNEL_NOTIFICATION)
    }
    async with world.relay(options), TopicReader(world.broker.bootstrap, TOPIC) as reader:
        before = await change(uow, user_id, "before")
        await reader.wait_for(lambda e: e["id"] == before["id"])
        counted = {channel: failure._value.get() for channel, failure in failures.items()}
        with hung_postgres():
            # Both loops poll; each poll's statement meets the hung server and must end within its bound.
            await wait_until(
                lambda: all(failures[c]._value.get() > counted[c] for c in failures),
                what="both relay loops to give up on the hung PostgreSQL",
                timeout=30,
            )
        after = await change(uow, user_id, "after")
        await reader.wait_for(lambda e: e["id"] == after["id"], timeout=30)
        await wait_until(
            lambda: _stream_notes(world, user_id, ["before", "after"]), what="the notifications, after it"
        )


async def _partition_of(world, user_id: uuid.UUID) -> int:
    async with world.engine.connect() as conn:
        return await conn.scalar(text("SELECT hashtext(:k) & 31"), {"k": str(user_id)})


async def _expire(world, channel: str, partition: int) -> None:
    async with world.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE outbox_leases SET expires_at = now() - interval '1 second'"
                " WHERE channel = :channel AND partition = :partition"
            ),
            {"channel": channel, "partition": partition},
        )


async def _pending_of(world, user_id: uuid.UUID) -> int:
    async with world.engine.connect() as conn:
        return await conn.scalar(
            text("SELECT count(*) FROM outbox WHERE key = :k AND channel = 'kafka' AND published_at IS NULL"),
            {"k": str(user_id)},
        )


async def _stream_notes(world, user_id: uuid.UUID, notes: list[str]) -> bool:
    return [p["note"] for _, p in await world.stream(user_id)] == notes
