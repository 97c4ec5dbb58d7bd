"""The outbox relay: publishes committed outbox rows, then marks them published.

Kafka rows and notification rows are relayed by two independent loops (`ChannelRelay`), each with its own
connection, batches and backoff: Kafka down delays only the Kafka rows, Redis down only the notifications,
and neither channel's batch is re-sent because the other failed.

Order: rows are partitioned by a hash of their key (the user id, OUTBOX_PARTITIONS), a channel loop relays
only the partitions it holds a lease on (events/leases.py: one owner per partition, renewed while the owner
makes progress, taken over when it dies or hangs, fenced by an epoch), and it reads its partitions' pending
rows in `seq` order. Commits that write rows of one key are serialized by the unit of work
(server/core/uow.py), so `seq` order is commit order per user: one user's events reach Kafka, and their
notifications the user's stream, in commit order however many processes relay, and a relay that lost its
lease can only repeat rows (never mark them, or skip ahead of them).

The relay's connections are bounded like every other (server/core/db.py DbTimeouts: connect, statement and
lock timeouts, no wait on a hung server beyond them) and a session idle inside a transaction is ended by
Postgres after the lease period, so a relay stopped mid-transaction cannot keep lease rows locked.

Delivery is at least once (consumers dedupe by event id; notifications are added once per id by the stream
script). A channel that is down (no answer, timeouts) leaves its rows pending and is retried with backoff
without limit. A row the channel answers and refuses (too large, an invalid topic, not a notification) is
counted; its partition is held back with backoff (the rows behind it wait, keeping the order) and after
`max_attempts` refusals the row moves to `outbox_dead_letters` with its error, and its partition moves on.
`scripts/dead-letters` lists and replays dead letters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import psycopg

from server.core import metrics
from server.core.config import Settings, libpq_url
from server.core.db import DbTimeouts
from server.core.events.channels import CHANNEL_KAFKA, CHANNEL_NOTIFICATION
from server.core.events.kafka import Delivery, KafkaPublisher, Refused, Unsent
from server.core.events.leases import PartitionLeases
from server.core.events.senders import KafkaSender, PendingRow, StreamSender
from server.core.redis import RedisClient

log = logging.getLogger(__name__)

_BODY = {
    CHANNEL_KAFKA: "NULL, payload::text",
    CHANNEL_NOTIFICATION: "payload->>'type', (payload->'payload')::text",
}
# The first pending rows of each owned partition from the pending index (in seq order), then the first of
# those: the cost is the batch per partition, however many sent rows retention still keeps below them (a
# plain `partition = ANY(...) ORDER BY seq` walks the primary key across them: about 1 s per batch with
# 400,000 sent rows, which the statement timeout would end).
_PENDING = """
SELECT o.seq, o.id::text, o.partition, o.topic, o.key, {body}, o.attempts, o.created_at
FROM unnest(%(partitions)s::smallint[]) AS owned (partition)
CROSS JOIN LATERAL (
    SELECT * FROM outbox
    WHERE channel = %(channel)s AND partition = owned.partition AND published_at IS NULL
    ORDER BY seq LIMIT %(limit)s
) AS o
ORDER BY o.seq LIMIT %(limit)s
"""
_COUNT_REFUSAL = "UPDATE outbox SET attempts = attempts + 1, last_error = %s WHERE seq = %s"
_DEAD_LETTER = """
WITH moved AS (DELETE FROM outbox WHERE seq = %s RETURNING *)
INSERT INTO outbox_dead_letters (seq, id, channel, topic, key, payload, created_at, attempts, error)
SELECT seq, id, channel, topic, key, payload, created_at, attempts + 1, %s FROM moved
"""


@dataclass(frozen=True, slots=True)
class RelayOptions:
    poll_seconds: float = 0.5
    batch_size: int = 200
    stream_maxlen: int = 1000
    stream_ttl_seconds: int = 7 * 24 * 3600
    max_attempts: int = 5
    retry_backoff_seconds: float = 0.5
    rebalance_seconds: float = 2.0
    lease_seconds: float = 15.0
    send_timeout_seconds: float = 10.0
    db_timeouts: DbTimeouts = field(default_factory=DbTimeouts)

    @classmethod
    def from_settings(cls, settings: Settings) -> RelayOptions:
        return cls(
            poll_seconds=settings.outbox_poll_seconds,
            batch_size=settings.outbox_batch_size,
            stream_maxlen=settings.notification_stream_maxlen,
            stream_ttl_seconds=settings.notification_stream_ttl_seconds,
            max_attempts=settings.outbox_max_attempts,
            retry_backoff_seconds=settings.outbox_retry_backoff_seconds,
            rebalance_seconds=settings.outbox_rebalance_seconds,
            lease_seconds=settings.outbox_lease_seconds,
            send_timeout_seconds=settings.outbox_send_timeout_seconds,
            db_timeouts=DbTimeouts.from_settings(settings),
        )

    def connect_kwargs(self, channel: str) -> dict[str, object]:
        """libpq settings of a relay connection: the service's timeouts, plus an end to a session left idle
        inside a transaction (a relay stopped mid-batch) after a lease period, and a name saying whose.

        Its commits are asynchronous (`synchronous_commit=off`): what a relay writes is bookkeeping that a
        database crash may roll back to at most ~3 WAL-writer rounds earlier without losing anything (rows
        marked published become pending again and are sent again, which delivery at least once and the
        consumers' dedupe already cover; leases and members are read back on the new connection), and a
        commit then waits for no WAL flush, so the relay's settle after every commit never queues on the
        disk ahead of the next RPC's own commit."""
        kwargs = self.db_timeouts.connect_kwargs()
        idle_ms = int(self.lease_seconds * 1000)
        kwargs["options"] = (
            f"{kwargs['options']} -c idle_in_transaction_session_timeout={idle_ms} -c synchronous_commit=off"
        )
        kwargs["application_name"] = f"outbox-relay {channel} pid {os.getpid()}"
        return kwargs


class Sender(Protocol):
    async def send(self, rows: list[PendingRow]) -> list[Delivery]: ...

    def reset(self) -> None: ...


class OutboxRelay:
    """Both channels' relays of this process; `wake` after a commit that wrote outbox rows."""

    def __init__(
        self,
        database_url: str,
        redis: RedisClient,
        publisher_factory: Callable[[], KafkaPublisher],
        options: RelayOptions = RelayOptions(),
    ):
        self.channels = {
            CHANNEL_KAFKA: ChannelRelay(CHANNEL_KAFKA, database_url, KafkaSender(publisher_factory), options),
            CHANNEL_NOTIFICATION: ChannelRelay(
                CHANNEL_NOTIFICATION,
                database_url,
                StreamSender(
                    redis,
                    maxlen=options.stream_maxlen,
                    ttl_seconds=options.stream_ttl_seconds,
                    timeout_seconds=options.send_timeout_seconds,
                ),
                options,
            ),
        }

    @classmethod
    def from_settings(cls, settings: Settings, redis: RedisClient) -> OutboxRelay:
        options = RelayOptions.from_settings(settings)
        delivery_timeout_ms = int(options.send_timeout_seconds * 1000)
        return cls(
            settings.database_url,
            redis,
            lambda: KafkaPublisher(settings.kafka_bootstrap_servers, delivery_timeout_ms=delivery_timeout_ms),
            options,
        )

    def wake(self) -> None:
        for channel in self.channels.values():
            channel.wake()

    async def aclose(self) -> None:
        """Releases what a relay that is not running holds (its connections, so its partitions)."""
        for channel in self.channels.values():
            await channel.aclose()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for name, channel in self.channels.items():
                group.create_task(channel.run(), name=f"outbox-relay-{name}")


class ChannelRelay:
    """Relays the pending rows of one channel in the partitions this relay holds leases on."""

    def __init__(self, channel: str, database_url: str, sender: Sender, options: RelayOptions):
        self.channel = channel
        self._conninfo = libpq_url(database_url)
        self._connect_kwargs = options.connect_kwargs(channel)
        self._connection_class = options.db_timeouts.connection_class()
        self._sender = sender
        self._options = options
        self._leases = PartitionLeases(channel, options.lease_seconds)
        self._conn: psycopg.AsyncConnection | None = None
        self._rebalanced_at = float("-inf")
        self._held: dict[int, float] = {}  # partition -> monotonic time its refused row may be retried
        self._wakeup = asyncio.Event()
        self._pending_sql = _PENDING.format(body=_BODY[channel])

    @property
    def owned(self) -> frozenset[int]:
        return frozenset(self._leases.owned)

    @property
    def owner(self) -> str:
        """This relay's name in `outbox_leases.owner`."""
        return self._leases.owner

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        backoff = self._options.poll_seconds
        try:
            while True:
                self._wakeup.clear()
                try:
                    full = await self.relay_once()
                    backoff = self._options.poll_seconds
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    log.warning("outbox relay (%s) failed; will retry", self.channel, exc_info=True)
                    if isinstance(error, psycopg.OperationalError):
                        await self._disconnect()  # a new connection (the leases are read back on it)
                    metrics.OUTBOX_RELAY_FAILURES.labels(self.channel).inc()
                    self._sender.reset()
                    backoff = min(backoff * 2, 5.0)
                    # The whole backoff: neither a commit's wakeup nor an overdue rebalance (it failed too)
                    # cuts it short, or a database that is down would be retried in a tight loop.
                    await asyncio.sleep(backoff)
                    continue
                if not full:
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation that
                    # arrives as the wakeup is set, and the loop would outlive its stop.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._next_wait(backoff)):
                            await self._wakeup.wait()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Gives the leases up (others take the partitions over at once) and closes the connection."""
        self._sender.reset()
        conn = self._conn
        if conn is not None and not (conn.closed or conn.broken):
            try:
                await self._leases.release_all(conn)
            except Exception:  # the leases expire on their own
                log.warning("outbox relay (%s) could not release its leases", self.channel, exc_info=True)
        await self._disconnect()

    async def relay_once(self) -> bool:
        """One batch of this channel's pending rows; True when the batch was full (more may be waiting).
        Raises when the channel or the database failed (the caller backs off)."""
        conn = await self._connection()
        if time.monotonic() - self._rebalanced_at >= self._options.rebalance_seconds:
            await self.rebalance()
        now = time.monotonic()
        self._held = {p: until for p, until in self._held.items() if until > now}
        partitions = sorted(self._leases.owned.keys() - self._held.keys())
        if not partitions:
            metrics.OUTBOX_LAG.labels(self.channel).set(0.0)
            return False
        records = await (
            await conn.execute(
                self._pending_sql,
                {"channel": self.channel, "partitions": partitions, "limit": self._options.batch_size},
            )
        ).fetchall()
        if not records:
            metrics.OUTBOX_LAG.labels(self.channel).set(0.0)
            return False
        lag = (datetime.now(UTC) - records[0][-1]).total_seconds()
        metrics.OUTBOX_LAG.labels(self.channel).set(max(0.0, lag))
        rows = [PendingRow(*record[:-1]) for record in records]
        deliveries = await self._sender.send(rows)
        await self._settle(conn, rows, deliveries)
        unsent = [d for d in deliveries if isinstance(d, Unsent)]
        if unsent:
            raise ChannelUnavailable(f"{len(unsent)} of {len(rows)} rows not sent: {unsent[0].error}")
        return len(rows) == self._options.batch_size

    async def rebalance(self) -> frozenset[int]:
        conn = await self._connection()
        await self._leases.rebalance(conn)
        self._rebalanced_at = time.monotonic()
        metrics.OUTBOX_PARTITIONS_OWNED.labels(self.channel).set(len(self._leases.owned))
        return self.owned

    async def _settle(
        self, conn: psycopg.AsyncConnection, rows: list[PendingRow], deliveries: list[Delivery]
    ):
        """Marks the sent rows published and counts refusals, dead-lettering a row at its last attempt, in
        one transaction that first confirms this relay still holds the rows' partitions (fencing): rows of
        a partition lost meanwhile are left to its new owner, which sends them again. A batch without
        refusals (the usual one) is settled by the confirming statement alone: one round trip, not four
        (BEGIN, confirm, mark, COMMIT), after every commit that wrote outbox rows."""
        partitions = {row.partition for row in rows}
        published = [row.seq for row, d in zip(rows, deliveries, strict=True) if d is None]
        async with contextlib.AsyncExitStack() as transaction:
            if any(isinstance(d, Refused) for d in deliveries):
                await transaction.enter_async_context(conn.transaction())
            held = await self._leases.confirm(conn, partitions, published=published)
            outcomes = [(row, d) for row, d in zip(rows, deliveries, strict=True) if row.partition in held]
            refused = [(row, _error_text(d)) for row, d in outcomes if isinstance(d, Refused)]
            for row, error in refused:
                if row.attempts + 1 >= self._options.max_attempts:
                    await conn.execute(_DEAD_LETTER, (row.seq, error))
                else:
                    await conn.execute(_COUNT_REFUSAL, (error, row.seq))
        sent = [row.seq for row, d in outcomes if d is None]
        lost = len(rows) - len(outcomes)
        if lost:
            metrics.OUTBOX_LEASES_LOST.labels(self.channel).inc()
            metrics.OUTBOX_PARTITIONS_OWNED.labels(self.channel).set(len(self._leases.owned))
            log.warning(
                "outbox relay lost partitions to another relay; their rows are left to it",
                extra={"channel": self.channel, "rows": lost},
            )
        metrics.OUTBOX_PUBLISHED.labels(self.channel).inc(len(sent))
        for row, error in refused:
            if row.attempts + 1 >= self._options.max_attempts:
                metrics.OUTBOX_DEAD_LETTERED.labels(self.channel).inc()
                log.error(
                    "outbox row moved to outbox_dead_letters",
                    extra={"channel": self.channel, "outbox_id": row.id, "error": error},
                )
            else:
                delay = self._options.retry_backoff_seconds * 2**row.attempts
                self._held[row.partition] = time.monotonic() + delay

    def _next_wait(self, backoff: float) -> float:
        """Until the next poll: the backoff, sooner when a held partition or a rebalance is due."""
        now = time.monotonic()
        due = [until - now for until in self._held.values()]
        due.append(self._rebalanced_at + self._options.rebalance_seconds - now)
        return max(0.01, min(backoff, *due))

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            await self._disconnect()
        if self._conn is None:
            self._conn = await self._connection_class.connect(
                self._conninfo, autocommit=True, **self._connect_kwargs
            )
            self._rebalanced_at = float("-inf")
        return self._conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._leases.forget()
        metrics.OUTBOX_PARTITIONS_OWNED.labels(self.channel).set(0)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def _error_text(refusal: Refused) -> str:
    return refusal.error.replace("\x00", "")[:2000]


class ChannelUnavailable(Exception):
    """Some rows of a batch were not sent because the channel (Kafka, Redis) did not take them."""
