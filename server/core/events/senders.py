"""What the outbox relay sends a batch of one channel with: Kafka (CloudEvents) or the users' Redis streams
(notifications). Each answers one `Delivery` per row (events/kafka.py): sent, refused for what the row is,
unsent because the channel is down, or held behind a refused row of its key; an exception means nothing
was sent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import ResponseError

from server.core.events.kafka import Delivery, Held, KafkaMessage, KafkaPublisher, Refused, Unsent
from server.core.redis import RedisClient, queue_script


@dataclass(frozen=True, slots=True)
class PendingRow:
    """An outbox row as the relay reads it: `body` is the Kafka value (the CloudEvent's JSON text) or the
    notification's payload JSON text, `kind` the notification's type ('' for Kafka rows)."""

    seq: int
    id: str
    partition: int
    topic: str
    key: str
    kind: str | None
    body: str | None
    attempts: int


class KafkaSender:
    def __init__(self, publisher_factory: Callable[[], KafkaPublisher]):
        self._publisher_factory = publisher_factory
        self._publisher: KafkaPublisher | None = None

    async def send(self, rows: list[PendingRow]) -> list[Delivery]:
        if self._publisher is None:
            self._publisher = self._publisher_factory()
        return await self._publisher.publish(
            [
                KafkaMessage(
                    topic=row.topic,
                    key=row.key.encode(),
                    value=(row.body or "").encode(),
                    headers=(("content-type", b"application/cloudevents+json"),),
                )
                for row in rows
            ]
        )

    def reset(self) -> None:
        """Drops the producer after a failure; the next batch starts a fresh one."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close()


# Adds a notification to the user's stream unless this notification id was added before, and (re)sets the
# stream's expiry: the stream of a user who gets no notification for that long goes away. The id is recorded
# only once the XADD succeeded: an XADD Redis refuses (WRONGTYPE) stops the script before, so the row can be
# sent again (a replayed dead letter) instead of being taken for added.
_XADD_ONCE = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return false
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', tonumber(ARGV[3]), '*',
                      'type', ARGV[1], 'payload', ARGV[2])
redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return id
"""
_DEDUPE_TTL_SECONDS = 7 * 24 * 3600


def sent_marker(stream: str, row_id: str) -> str:
    """The key saying this outbox row was added to `stream`: in the stream's slot (its hash tag), as the
    script that writes both needs on a Redis Cluster."""
    return f"{stream}:sent:{row_id}"


# Redis answers that say the server is not able to take writes now, not that the row is wrong.
_REDIS_UNAVAILABLE = (
    "OOM",
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "READONLY",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "NOSCRIPT",
)


class StreamSender:
    """XADDs notifications to their streams: one pipelined round trip per batch, each notification once
    even when a batch is sent again. The script is loaded (SCRIPT EXISTS / LOAD, another round trip) with
    the first batch and after a failure (`reset`: a Redis that restarted answers NOSCRIPT, which fails
    the batch as unsent), not with every batch."""

    def __init__(self, redis: RedisClient, *, maxlen: int, ttl_seconds: int, timeout_seconds: float):
        self._redis = redis
        self._maxlen = maxlen
        self._ttl_seconds = ttl_seconds
        self._timeout_seconds = timeout_seconds
        self._xadd_once = redis.register_script(_XADD_ONCE)
        self._script_loaded = False

    async def send(self, rows: list[PendingRow]) -> list[Delivery]:
        deliveries: list[Delivery] = [None] * len(rows)
        queued: list[int] = []
        stopped_keys: set[str] = set()
        async with self._redis.pipeline(transaction=False) as pipe:
            for index, row in enumerate(rows):
                if row.key in stopped_keys:
                    deliveries[index] = Held()
                elif not row.kind or row.body is None:
                    deliveries[index] = Refused("not a notification: it has no type or no payload")
                    stopped_keys.add(row.key)
                else:
                    queue_script(
                        pipe,
                        self._xadd_once,
                        keys=[row.topic, sent_marker(row.topic, row.id)],
                        args=[row.kind, row.body, self._maxlen, _DEDUPE_TTL_SECONDS, self._ttl_seconds],
                        loaded=self._script_loaded,
                    )
                    queued.append(index)
            if queued:
                async with asyncio.timeout(self._timeout_seconds):  # (wait_for may drop a cancellation)
                    results = await pipe.execute(raise_on_error=False)
                for index, result in zip(queued, results, strict=True):
                    deliveries[index] = _redis_delivery(result)
                self._script_loaded = not any(_is_noscript(result) for result in results)
        return deliveries

    def reset(self) -> None:
        """After a failure: the script is loaded again with the next batch (the pool replaces dead
        connections itself)."""
        self._script_loaded = False


def _is_noscript(result: object) -> bool:
    return isinstance(result, ResponseError) and str(result).startswith("NOSCRIPT")


def _redis_delivery(result: object) -> Delivery:
    if not isinstance(result, Exception):
        return None
    if isinstance(result, ResponseError) and not str(result).startswith(_REDIS_UNAVAILABLE):
        return Refused(str(result))
    return Unsent(str(result))
