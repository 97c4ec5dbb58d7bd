"""The outbox relay worker: publishes committed outbox rows, then marks them published.

Kafka messages are structured CloudEvents keyed by user id, sent by an idempotent producer with acks=all
(events/kafka.py).
Notifications go to the user's Redis stream through a script that adds each notification once, even when
a batch is retried. Delivery is at least once to Kafka (consumers dedupe by event id); a broker outage
only delays rows, which stay pending and are retried with backoff. Several relays may run at once: rows
are claimed with FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from redis.asyncio import Redis
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core import metrics
from server.core.events.kafka import KafkaMessage, KafkaPublisher
from server.core.events.tables import CHANNEL_KAFKA, OutboxMessage

log = logging.getLogger(__name__)

# Adds a notification to the user's stream unless this notification id was added before.
_XADD_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[4])) then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', tonumber(ARGV[3]), '*',
                    'type', ARGV[1], 'payload', ARGV[2])
end
return false
"""
_DEDUPE_TTL_SECONDS = 7 * 24 * 3600


class OutboxRelay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        publisher_factory: Callable[[], KafkaPublisher],
        *,
        poll_seconds: float = 0.5,
        batch_size: int = 200,
        stream_maxlen: int = 1000,
    ):
        self._sessions = sessions
        self._redis = redis
        self._publisher_factory = publisher_factory
        self._publisher: KafkaPublisher | None = None
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._stream_maxlen = stream_maxlen
        self._wakeup = asyncio.Event()
        self._xadd_once = redis.register_script(_XADD_ONCE)

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        backoff = self._poll_seconds
        try:
            while True:
                try:
                    relayed = await self.relay_once()
                    backoff = self._poll_seconds
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("outbox relay failed; will retry", exc_info=True)
                    self._reset_publisher()
                    relayed = 0
                    backoff = min(backoff * 2, 5.0)
                if relayed < self._batch_size:
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), timeout=backoff)
        finally:
            self._reset_publisher()

    async def relay_once(self) -> int:
        """Publishes one batch of pending rows; returns how many were published."""
        async with self._sessions() as session, session.begin():
            rows = (
                await session.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.published_at.is_(None))
                    .order_by(OutboxMessage.seq)
                    .limit(self._batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                metrics.OUTBOX_LAG.set(0.0)
                return 0
            metrics.OUTBOX_LAG.set(max(0.0, (datetime.now(UTC) - rows[0].created_at).total_seconds()))
            await self._publish(rows)
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.seq.in_([row.seq for row in rows]))
                .values(published_at=func.now())
            )
        metrics.OUTBOX_PUBLISHED.inc(len(rows))
        return len(rows)

    async def _publish(self, rows: list[OutboxMessage]) -> None:
        kafka_rows = [row for row in rows if row.channel == CHANNEL_KAFKA]
        if kafka_rows:
            if self._publisher is None:
                self._publisher = self._publisher_factory()
            await self._publisher.publish(
                [
                    KafkaMessage(
                        topic=row.topic,
                        key=row.key.encode(),
                        value=json.dumps(row.payload, separators=(",", ":")).encode(),
                        headers=(("content-type", b"application/cloudevents+json"),),
                    )
                    for row in kafka_rows
                ]
            )
        notifications = [row for row in rows if row.channel != CHANNEL_KAFKA]
        if notifications:  # one round trip for the batch, not one per notification
            async with self._redis.pipeline(transaction=False) as pipe:
                for row in notifications:
                    await self._xadd_once(
                        keys=[row.topic, f"{row.topic}:sent:{row.id}"],
                        args=[
                            row.payload["type"],
                            json.dumps(row.payload["payload"], separators=(",", ":")),
                            self._stream_maxlen,
                            _DEDUPE_TTL_SECONDS,
                        ],
                        client=pipe,
                    )
                await pipe.execute()

    def _reset_publisher(self) -> None:
        """Drops a publisher after a failure; the next batch starts a fresh one."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close()
