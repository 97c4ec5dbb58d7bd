"""Kafka publishing for the outbox relay: librdkafka's idempotent producer (acks=all) behind an async API.

librdkafka runs its own I/O threads; delivery reports are collected by `flush` in a worker thread and
handed back to the event loop, so the loop never blocks on the broker.

`publish` tells per message what happened, because the relay treats two failures differently: a broker that
is down or hanging (the message is simply not sent yet; retried without limit) and a broker that answered
and refused this message (too large, an invalid or unknown topic; counted against the row, which is
dead-lettered after bounded attempts).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Producer

# Errors that are about the message itself: sending it again cannot succeed.
_REFUSALS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._INVALID_ARG,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
    }
)


@dataclass(frozen=True, slots=True)
class KafkaMessage:
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Refused:
    """The broker (or the client's own checks) refused this message for what it is."""

    error: str


@dataclass(frozen=True, slots=True)
class Unsent:
    """Not delivered for a reason outside the message (broker down, timed out, not attempted)."""

    error: str


@dataclass(frozen=True, slots=True)
class Held:
    """Not attempted: an earlier message of its key was refused in this batch (it must not overtake it)."""


Delivery = None | Refused | Unsent | Held  # None: acknowledged by the broker


class KafkaPublisher:
    def __init__(self, bootstrap_servers: str, *, delivery_timeout_ms: int = 10_000):
        self._delivery_timeout_s = delivery_timeout_ms / 1000
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": delivery_timeout_ms,
                "socket.timeout.ms": min(delivery_timeout_ms, 10_000),
                "reconnect.backoff.max.ms": 1000,
                "log_level": 3,
            }
        )

    async def publish(self, messages: list[KafkaMessage]) -> list[Delivery]:
        """Sends the messages (in order per key) and waits for the broker; one Delivery per message.

        Once a message of a key is refused before sending, the later messages of that key are left unsent,
        so a key's messages never overtake one of its own that failed."""
        loop = asyncio.get_running_loop()
        outcomes: list[asyncio.Future[Delivery]] = []
        stopped_keys: set[bytes] = set()
        for message in messages:
            outcome: asyncio.Future[Delivery] = loop.create_future()
            outcomes.append(outcome)
            if message.key in stopped_keys:
                outcome.set_result(Held())
                continue
            try:
                self._producer.produce(
                    message.topic,
                    value=message.value,
                    key=message.key,
                    headers=list(message.headers),
                    on_delivery=_reporter(loop, outcome),
                )
            except (KafkaException, BufferError) as error:
                stopped_keys.add(message.key)
                outcome.set_result(
                    _classify(error.args[0] if isinstance(error, KafkaException) else None, error)
                )
        await loop.run_in_executor(None, self._producer.flush, self._delivery_timeout_s + 5)
        return [o.result() if o.done() else Unsent("no delivery report in time") for o in outcomes]

    def close(self) -> None:
        self._producer.purge()
        self._producer.flush(0)


def _classify(error: KafkaError | None, raised: Exception | None = None) -> Delivery:
    if error is None and raised is None:
        return None
    if not isinstance(error, KafkaError):
        return Unsent(str(raised))
    described = f"{error.name()}: {error.str()}"
    return Refused(described) if error.code() in _REFUSALS else Unsent(described)


def _reporter(loop: asyncio.AbstractEventLoop, outcome: asyncio.Future[Delivery]):
    def report(error: KafkaError | None, _message) -> None:
        loop.call_soon_threadsafe(_settle, outcome, _classify(error))

    return report


def _settle(outcome: asyncio.Future[Delivery], delivery: Delivery) -> None:
    if not outcome.done():
        outcome.set_result(delivery)
