"""The outbox relay under faults, on real servers the test owns (tests/support/outbox.py, faults.py): Kafka or
Redis hanging (SIGSTOP) or killed, poison rows, several relay processes, a relay killed mid-batch.

Every fault is undone on the way out of its block (SIGCONT / restart), so later tests see a healthy world.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter, defaultdict

import pytest
from psycopg.types.json import Jsonb
from sqlalchemy import text

from server.core import metrics
from server.core.events.channels import CHANNEL_KAFKA, CHANNEL_NOTIFICATION
from server.core.events.cloudevents import make_cloud_event
from server.core.events.consumer import KafkaEventConsumer
from tests.support.faults import HOWS, outage, suspended
from tests.support.kafka import TopicReader, about
from tests.support.outbox import (
    EVENT_TYPE,
    FAST,
    TOPIC,
    RelayProcesses,
    change,
    dead_letters_script,
    lease_owners,
    owner_pid,
)
from tests.support.waiting import wait_until


def _notes(events) -> list[str]:
    return [e["data"]["note"] for e in events]


@pytest.mark.parametrize("how", HOWS)
async def test_notifications_keep_flowing_while_kafka_is_down(world, how):
    user_id = uuid.uuid4()
    uow = world.uow()
    async with world.relay():
        async with outage(world.broker, how):
            written = [await change(uow, user_id, f"n{i}") for i in range(5)]
            await wait_until(
                lambda: _stream_notes_are(world, user_id, _notes(written)),
                what=f"the notifications, in order, while Kafka is {how}ed",
            )
        async with TopicReader(world.broker.bootstrap, TOPIC) as reader:
            await reader.wait_for(about(user_id), count=5, timeout=30)
    first_seen = list(dict.fromkeys(e["data"]["note"] for e in reader.matching(about(user_id))))
    assert first_seen == _notes(written), "every event reaches Kafka once it is back, in commit order"


@pytest.mark.parametrize("how", HOWS)
async def test_kafka_receives_each_event_once_while_redis_is_down(world, how):
    user_id = uuid.uuid4()
    uow = world.uow()
    failures = metrics.OUTBOX_RELAY_FAILURES.labels(CHANNEL_NOTIFICATION)
    async with world.relay(), TopicReader(world.broker.bootstrap, TOPIC) as reader:
        async with outage(world.redis_server, how):
            written = [await change(uow, user_id, f"k{i}") for i in range(10)]
            await reader.wait_for(about(user_id), count=10)
            # The notification relay keeps failing and retrying meanwhile; a sentinel event written after two
            # more of its failures shows whether the Kafka rows were sent again with them.
            seen_failures = failures._value.get()
            await wait_until(
                lambda: failures._value.get() >= seen_failures + 2,
                what="the notification relay to retry twice",
                timeout=30,
            )
            sentinel = await change(uow, user_id, "sentinel")
            await reader.wait_for(lambda e: e["id"] == sentinel["id"])
        # Redis is back (restarted empty after a kill): the notifications arrive, in order.
        await wait_until(
            lambda: _stream_notes_are(world, user_id, [*_notes(written), "sentinel"]),
            what="the notifications once Redis is back",
            timeout=30,
        )
    counts = Counter(e["id"] for e in reader.matching(about(user_id)))
    assert counts == Counter({e["id"]: 1 for e in [*written, sentinel]}), "each event reached Kafka once"


async def test_poison_outbox_rows_are_dead_lettered_and_the_rows_behind_them_go_through(world):
    user_id, bystander = uuid.uuid4(), uuid.uuid4()
    uow = world.uow()
    dead_lettered = metrics.OUTBOX_DEAD_LETTERED.labels(CHANNEL_KAFKA)
    before = dead_lettered._value.get()
    first = await change(uow, user_id, "before")
    poison = {
        "too large": (CHANNEL_KAFKA, TOPIC, {"id": str(uuid.uuid4()), "data": "x" * 2_000_000}),
        "invalid topic": (CHANNEL_KAFKA, "not a topic!", {"id": str(uuid.uuid4())}),
        "not a notification": (CHANNEL_NOTIFICATION, f"notifications:{{{user_id}}}", {"no": "type"}),
    }
    poison_ids = {}
    async with uow() as unit:
        for name, (channel, topic, payload) in poison.items():
            poison_ids[name] = uuid.uuid4()
            await unit.db.execute(
                "INSERT INTO outbox (id, channel, topic, key, payload) VALUES (%s, %s, %s, %s, %s)",
                (poison_ids[name], channel, topic, str(user_id), Jsonb(payload)),
            )
        await unit.commit()
    behind = [await change(uow, user_id, f"after-{i}") for i in range(3)]
    other = await change(uow, bystander, "bystander")

    async with world.relay(), TopicReader(world.broker.bootstrap, TOPIC) as reader:
        await reader.wait_for(about(user_id), count=4, timeout=30)
        await reader.wait_for(about(bystander))
        await wait_until(
            lambda: _stream_notes_are(world, user_id, _notes([first, *behind])),
            what="the notifications behind the poison row",
        )
        # A row the broker refuses after accepting the batch does not hold back the rows sent with it; it is
        # retried on its own and dead-lettered all the same.
        await wait_until(lambda: _dead_letters_of(world, user_id, 3), what="the three dead letters")
    assert _notes(reader.matching(about(user_id))) == _notes([first, *behind])
    assert _notes(reader.matching(about(bystander))) == _notes([other])

    async with world.engine.connect() as conn:
        letters = {
            row.id: row
            for row in await conn.execute(
                text("SELECT id, channel, attempts, error FROM outbox_dead_letters WHERE key = :k"),
                {"k": str(user_id)},
            )
        }
        left = await conn.scalar(
            text("SELECT count(*) FROM outbox WHERE key = :k AND published_at IS NULL"), {"k": str(user_id)}
        )
    assert set(letters) == set(poison_ids.values()), "each poison row is in the dead-letter table"
    assert "MSG_SIZE_TOO_LARGE" in letters[poison_ids["too large"]].error
    assert (
        "topic" in letters[poison_ids["invalid topic"]].error.lower()
    )  # TOPIC_EXCEPTION, then _UNKNOWN_TOPIC
    assert "no type" in letters[poison_ids["not a notification"]].error
    assert {row.attempts for row in letters.values()} == {3}, "bounded attempts (OUTBOX_MAX_ATTEMPTS)"
    assert left == 0, "nothing of the user is left behind in the outbox"
    assert dead_lettered._value.get() - before == 2


async def test_a_dead_lettered_row_is_replayed_by_the_script(world):
    user_id = uuid.uuid4()
    event = make_cloud_event(
        event_type=EVENT_TYPE, source="/test", subject=str(user_id), data={"note": "again"}
    )
    async with world.engine.begin() as conn:  # a row that was dead-lettered (say, while a topic was missing)
        seq = await conn.scalar(
            text(
                "WITH moved AS (INSERT INTO outbox (id, channel, topic, key, payload)"
                " VALUES (:id, 'kafka', :topic, :key, :payload) RETURNING *)"
                " INSERT INTO outbox_dead_letters"
                " (seq, id, channel, topic, key, payload, created_at, attempts, error)"
                " SELECT seq, id, channel, topic, key, payload, created_at, 5, 'UNKNOWN_TOPIC_OR_PART'"
                " FROM moved"
                " RETURNING seq"
            ),
            {"id": event["id"], "topic": TOPIC, "key": str(user_id), "payload": json.dumps(event)},
        )
        await conn.execute(text("DELETE FROM outbox WHERE seq = :seq"), {"seq": seq})
    listed = dead_letters_script(world, "list", "outbox", "--json")
    assert [row["error"] for row in listed if row["id"] == seq] == ["UNKNOWN_TOPIC_OR_PART"]
    assert dead_letters_script(world, "replay", "outbox", str(seq), "--json") == {"replayed": [seq]}
    async with world.relay(), TopicReader(world.broker.bootstrap, TOPIC) as reader:
        [received] = await reader.wait_for(lambda e: e["id"] == event["id"])
    assert received == event
    async with world.engine.connect() as conn:
        assert not await conn.scalar(
            text("SELECT count(*) FROM outbox_dead_letters WHERE seq = :s"), {"s": seq}
        )


@pytest.fixture(scope="module")
async def relay_processes(world):
    """Three relay processes sharing the world's partitions (for the tests at the end of this module)."""
    with RelayProcesses(world.relay_env()) as relays:
        for _ in range(3):
            relays.start()
        await wait_until(
            lambda: _owners_are(world, 3), what="three relay processes to share the partitions", timeout=60
        )
        yield relays


async def test_three_relay_processes_keep_each_users_commit_order(world, relay_processes):
    users = [uuid.uuid4() for _ in range(50)]
    mine = {str(u) for u in users}
    uow = world.uow()
    connections = asyncio.Semaphore(12)  # fewer than the world's pool: no commit waits long for a connection

    async def commit_in_order(user_id: uuid.UUID) -> None:
        for n in range(20):
            async with connections:
                await change(uow, user_id, f"{n}", n=n)

    async with TopicReader(world.broker.bootstrap, TOPIC) as reader:
        await asyncio.gather(*(commit_in_order(u) for u in users))
        await reader.wait_for(lambda e: e.get("subject") in mine, count=1000, timeout=60)
    await wait_until(
        lambda: _streams_complete(world, users, 20), what="every user's 20 notifications", timeout=30
    )
    per_user: dict[str, list[int]] = defaultdict(list)
    for event in reader.events:
        if event.get("subject") in mine and event["data"]["n"] not in per_user[event["subject"]]:
            per_user[event["subject"]].append(event["data"]["n"])
    assert {u: per_user[u] for u in mine} == {u: list(range(20)) for u in mine}, (
        "Kafka: commit order per user"
    )
    for user_id in users:
        assert [p["n"] for _, p in await world.stream(user_id)] == list(range(20)), "stream: commit order"


async def test_a_relay_killed_mid_batch_loses_and_duplicates_nothing_at_the_consumer(world, relay_processes):
    event_type = "com.platform.library.test.killed.v1"  # the consumer handles only this test's events
    users = [uuid.uuid4() for _ in range(10)]
    uow = world.uow()
    handled: Counter[str] = Counter()

    async def count(_uow, event):
        handled[event["id"]] += 1

    consumer = KafkaEventConsumer(
        name=f"test-kill-{uuid.uuid4().hex[:8]}",
        topics=[TOPIC],
        handlers={event_type: count},
        uow_factory=uow,
        bootstrap_servers=world.broker.bootstrap,
    )
    victim, *survivors = relay_processes.procs
    task = asyncio.create_task(consumer.run())
    try:
        written = []
        for n in range(20):
            written += await asyncio.gather(
                *(change(uow, u, f"{n}", n=n, event_type=event_type) for u in users)
            )
            if n == 8:
                await wait_until(lambda: len(handled) >= 40, what="the relays to be busy")
                victim.kill()  # SIGKILL: no cleanup; whatever batch it was in stops where it was
        ids = {e["id"] for e in written}
        await wait_until(lambda: ids <= set(handled), what="every event, after the kill", timeout=60)
        await wait_until(lambda: _owners_are(world, 2), what="the survivors to own the victim's partitions")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert all(proc.poll() is None for proc in survivors)
    assert set(handled) == ids, "nothing lost"
    assert max(handled.values()) == 1, "nothing handled twice"


async def test_a_hung_relay_process_loses_its_partitions_and_nothing_is_lost_or_reordered(
    world, relay_processes
):
    """SIGSTOP: the process keeps its Postgres session; only its leases' expiry frees its partitions."""
    event_type = "com.platform.library.test.hung.v1"
    alive = [proc for proc in relay_processes.procs if proc.poll() is None]
    assert len(alive) >= 2, "the relay processes of this module"
    victim = alive[0]
    await wait_until(lambda: _owners_are(world, len(alive)), what="the relays to share the partitions")
    users = await _users_relayed_by(world, victim.pid)
    mine = {str(u) for u in users}
    uow = world.uow()
    handled: Counter[str] = Counter()

    async def count(_uow, event):
        handled[event["id"]] += 1

    consumer = KafkaEventConsumer(
        name=f"test-hung-{uuid.uuid4().hex[:8]}",
        topics=[TOPIC],
        handlers={event_type: count},
        uow_factory=uow,
        bootstrap_servers=world.broker.bootstrap,
    )
    task = asyncio.create_task(consumer.run())
    written = []
    try:
        async with TopicReader(world.broker.bootstrap, TOPIC) as reader:
            with contextlib.ExitStack() as stopped:
                for n in range(20):
                    written += await asyncio.gather(
                        *(change(uow, u, f"{n}", n=n, event_type=event_type) for u in users)
                    )
                    if n == 4:  # while it relays the first events, mid-batch or not
                        stopped.enter_context(suspended(victim.pid))
                ids = {e["id"] for e in written}
                await wait_until(
                    lambda: ids <= set(handled), what="the hung relay's users' events in Kafka", timeout=60
                )
                await wait_until(
                    lambda: _streams_complete(world, users, 20), what="their notifications", timeout=30
                )
                woken_at = await _db_now(world)
            # Woken up: once it renewed its membership it has finished whatever batch it was in (its
            # late sends are in Kafka), so a sentinel per user behind them shows everything it sent.
            await wait_until(
                lambda: _renewed_since(world, victim.pid, woken_at), what="the woken relay to rejoin"
            )
            sentinels = await asyncio.gather(
                *(change(uow, u, "20", n=20, event_type=event_type) for u in users)
            )
            ids |= {e["id"] for e in sentinels}
            sentinel_ids = {e["id"] for e in sentinels}
            await reader.wait_for(lambda e: e["id"] in sentinel_ids, count=len(users), timeout=30)
        await wait_until(lambda: ids <= set(handled), what="the sentinels at the consumer")
        await wait_until(lambda: _streams_complete(world, users, 21), what="the sentinel notifications")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert victim.poll() is None, "the hung relay survives"
    assert set(handled) == ids, "nothing lost"
    assert max(handled.values()) == 1, "nothing handled twice"
    first_seen: dict[str, list[int]] = defaultdict(list)
    for event in reader.events:
        if event.get("subject") in mine and event["data"]["n"] not in first_seen[event["subject"]]:
            first_seen[event["subject"]].append(event["data"]["n"])
    assert {u: first_seen[u] for u in mine} == {u: list(range(21)) for u in mine}, "Kafka: commit order"
    for user_id in users:
        assert [p["n"] for _, p in await world.stream(user_id)] == list(range(21)), "stream: commit order"


async def _users_relayed_by(world, pid: int) -> list[uuid.UUID]:
    """Three users whose Kafka partition and three whose notification partition the process owns."""
    kafka, notification = await asyncio.gather(
        lease_owners(world, CHANNEL_KAFKA), lease_owners(world, CHANNEL_NOTIFICATION)
    )
    wanted = {
        channel: {p for p, owner in owners.items() if owner_pid(owner) == pid}
        for channel, owners in ((CHANNEL_KAFKA, kafka), (CHANNEL_NOTIFICATION, notification))
    }
    assert all(wanted.values()), f"process {pid} owns partitions of both channels"
    candidates = [uuid.uuid4() for _ in range(500)]
    async with world.engine.connect() as conn:
        partitions = (
            (
                await conn.execute(
                    text("SELECT hashtext(k) & 31 FROM unnest(CAST(:keys AS text[])) AS k"),
                    {"keys": [str(u) for u in candidates]},
                )
            )
            .scalars()
            .all()
        )
    chosen: list[uuid.UUID] = []
    for channel in wanted:
        chosen += [u for u, p in zip(candidates, partitions, strict=True) if p in wanted[channel]][:3]
    return list(dict.fromkeys(chosen))


async def _db_now(world):
    async with world.engine.connect() as conn:
        return await conn.scalar(text("SELECT now()"))


async def _renewed_since(world, pid: int, moment) -> bool:
    """Both channel relays of the process renewed their membership after `moment`."""
    async with world.engine.connect() as conn:
        renewed = await conn.scalar(
            text(
                "SELECT count(*) FROM outbox_relay_members WHERE split_part(owner, ':', 2)::int = :pid"
                " AND expires_at - :lease * interval '1 second' > :moment"
            ),
            {"pid": pid, "lease": FAST.lease_seconds, "moment": moment},
        )
    return renewed == 2


async def _dead_letters_of(world, user_id: uuid.UUID, count: int) -> bool:
    async with world.engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM outbox_dead_letters WHERE key = :k"), {"k": str(user_id)}
        )
    return found >= count


async def _stream_notes_are(world, user_id: uuid.UUID, notes: list[str]) -> bool:
    return [p["note"] for _, p in await world.stream(user_id)] == notes


async def _streams_complete(world, users: list[uuid.UUID], count: int) -> bool:
    lengths = await asyncio.gather(*(world.stream(u) for u in users))
    return all(len(entries) >= count for entries in lengths)


async def _owners_are(world, count: int) -> bool:
    kafka, notification = await asyncio.gather(
        lease_owners(world, CHANNEL_KAFKA), lease_owners(world, CHANNEL_NOTIFICATION)
    )
    return len(set(kafka.values())) == count and len(set(notification.values())) == count
