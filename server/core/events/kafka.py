"""Kafka publishing for the outbox relay: librdkafka's idempotent producer (acks=all) behind an async API.

librdkafka runs its own I/O threads; delivery reports are collected by `flush` in a worker thread and
handed back to the event loop, so the loop never blocks on the broker.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from confluent_kafka import KafkaException, Producer


@dataclass(frozen=True, slots=True)
class KafkaMessage:
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


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

    async def publish(self, messages: list[KafkaMessage]) -> None:
        """Sends every message and returns once the broker acknowledged all of them; raises otherwise."""
        loop = asyncio.get_running_loop()
        outcomes: list[asyncio.Future[None]] = []
        for message in messages:
            outcome: asyncio.Future[None] = loop.create_future()
            outcomes.append(outcome)
            self._producer.produce(
                message.topic,
                value=message.value,
                key=message.key,
                headers=list(message.headers),
                on_delivery=_reporter(loop, outcome),
            )
        remaining = await loop.run_in_executor(None, self._producer.flush, self._delivery_timeout_s + 5)
        if remaining:
            raise KafkaException(f"{remaining} messages not delivered in time")
        await asyncio.gather(*outcomes)

    def close(self) -> None:
        self._producer.purge()
        self._producer.flush(0)


def _reporter(loop: asyncio.AbstractEventLoop, outcome: asyncio.Future[None]):
    def report(error, _message) -> None:
        if error is None:
            loop.call_soon_threadsafe(_settle, outcome, None)
        else:
            loop.call_soon_threadsafe(_settle, outcome, KafkaException(error))

    return report


def _settle(outcome: asyncio.Future[None], error: Exception | None) -> None:
    if outcome.done():
        return
    if error is None:
        outcome.set_result(None)
    else:
        outcome.set_exception(error)
