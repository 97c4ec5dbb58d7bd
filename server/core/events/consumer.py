"""Idempotent Kafka consumers (SPEC §7): each CloudEvent is handled at most once per consumer.

The event id is recorded in `processed_events` inside the same transaction as the handler's change, so a
redelivered event (rebalance, retry, replay) changes nothing. Offsets are committed after handling.

A record that fails, for any reason (not JSON, not a CloudEvent, an over-long id, a NUL the database
refuses, a constraint the handler's change violates, a bug), is retried a bounded number of times with
backoff, then written to `consumer_dead_letters` (raw bytes, position, error) and its offset committed: the
partition moves on. Only when even the dead letter cannot be written (the database is down) is the offset
left uncommitted, so the record is read again once the consumer reconnects.

While an event is handled, the request id (server/core/context.py) is the event's `correlationid` and the
trace continues its `traceparent`: what the handler emits carries both on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from opentelemetry.trace import SpanKind
from sqlalchemy.dialects.postgresql import insert as pg_insert

from server.core import context, metrics, tracing
from server.core.events.tables import ProcessedEvent
from server.core.uow import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)

EventHandler = Callable[[UnitOfWork, dict[str, Any]], Awaitable[None]]

_MAX_CORRELATION_ID = 128
_DEAD_LETTER = """
INSERT INTO consumer_dead_letters
    (consumer, topic, partition, "offset", key, value, event_id, attempts, error)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""


class NotACloudEvent(ValueError):
    """The record is not a CloudEvent this consumer can read (retrying cannot help)."""


async def claim_event(uow: UnitOfWork, consumer: str, event_id: str) -> bool:
    """Records the event as processed by `consumer`; False when it already was (skip it)."""
    result = await uow.session.execute(
        pg_insert(ProcessedEvent)
        .values(consumer=consumer, event_id=event_id)
        .on_conflict_do_nothing()
        .returning(ProcessedEvent.event_id)
    )
    return result.first() is not None


async def handle_once(
    uow_factory: UnitOfWorkFactory, consumer: str, event: dict[str, Any], handler: EventHandler
) -> bool:
    """Runs `handler` for `event` unless `consumer` processed it before; True when it ran."""
    async with uow_factory() as uow:
        if not await claim_event(uow, consumer, str(event["id"])):
            return False
        await handler(uow, event)
        await uow.commit()
        return True


def parse_event(raw: bytes | None) -> dict[str, Any]:
    """The CloudEvent of a record; NotACloudEvent when it is not one."""
    try:
        event = json.loads(raw or b"")
    except ValueError as error:
        raise NotACloudEvent("the record is not JSON") from error
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not event["id"]:
        raise NotACloudEvent("the record is not a CloudEvent with a string id")
    if not isinstance(event.get("type"), str):
        raise NotACloudEvent("the CloudEvent has no type")
    return event


def correlation_id_of(event: dict[str, Any]) -> str:
    """The event's `correlationid` when it is a usable one (a short printable string), else a new id."""
    value = event.get("correlationid")
    if isinstance(value, str) and 0 < len(value) <= _MAX_CORRELATION_ID and value.isprintable():
        return value
    return uuid.uuid4().hex


class KafkaEventConsumer:
    """Consumes CloudEvents from topics and dispatches them by `type` to handlers."""

    def __init__(
        self,
        *,
        name: str,
        topics: list[str],
        handlers: Mapping[str, EventHandler],
        uow_factory: UnitOfWorkFactory,
        bootstrap_servers: str,
        session_timeout_ms: int = 1000,
        heartbeat_interval_ms: int = 200,
        max_attempts: int = 5,
        retry_backoff_seconds: float = 0.2,
    ):
        self.name = name
        self._topics = topics
        self._handlers = handlers
        self._uow_factory = uow_factory
        self._bootstrap_servers = bootstrap_servers
        self._session_timeout_ms = session_timeout_ms
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._max_attempts = max(1, max_attempts)
        self._retry_backoff_seconds = retry_backoff_seconds

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *self._topics,
            bootstrap_servers=self._bootstrap_servers,
            group_id=self.name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=self._heartbeat_interval_ms,
        )

    async def run(self) -> None:
        while True:
            consumer = self._consumer()
            try:
                await consumer.start()
                async for record in consumer:
                    await self.process(record)
                    await consumer.commit()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("consumer %s failed; reconnecting", self.name, exc_info=True)
                await asyncio.sleep(1.0)
            finally:
                await consumer.stop()

    async def process(self, record: ConsumerRecord) -> None:
        """Handles one record, with bounded retries, else dead-letters it; returns when its offset may be
        committed. Raises only when the dead letter could not be written."""
        attempts = 0
        while True:
            attempts += 1
            try:
                await self._dispatch(parse_event(record.value))
                return
            except asyncio.CancelledError:
                raise
            except NotACloudEvent as error:
                await self._dead_letter(record, attempts, error)
                return
            except Exception as error:
                if attempts >= self._max_attempts:
                    await self._dead_letter(record, attempts, error)
                    return
                metrics.CONSUMER_RETRIES.labels(self.name).inc()
                log.warning(
                    "consumer %s: handling a record failed (attempt %d); retrying",
                    self.name,
                    attempts,
                    extra={"topic": record.topic, "partition": record.partition, "offset": record.offset},
                    exc_info=True,
                )
                await asyncio.sleep(self._retry_backoff_seconds * 2 ** (attempts - 1))

    async def _dispatch(self, event: dict[str, Any]) -> None:
        handler = self._handlers.get(event["type"])
        if handler is None:
            return  # an event type this consumer does not handle
        # The handler's own events carry this event's correlation id and continue its trace.
        request_token = context.request_id.set(correlation_id_of(event))
        traceparent = event.get("traceparent")
        span, trace_token = tracing.start_span(
            f"{self.name} {event['type']}",
            traceparent if isinstance(traceparent, str) else "",
            SpanKind.CONSUMER,
        )
        try:
            await handle_once(self._uow_factory, self.name, event, handler)
        finally:
            tracing.end_span(span, trace_token)
            context.request_id.reset(request_token)

    async def _dead_letter(self, record: ConsumerRecord, attempts: int, error: Exception) -> None:
        event_id = _event_id(record.value)
        reason = f"{type(error).__name__}: {error}".replace("\x00", "")[:2000]
        async with self._uow_factory() as uow:
            await uow.db.execute(
                _DEAD_LETTER,
                (
                    self.name,
                    record.topic,
                    record.partition,
                    record.offset,
                    record.key,
                    record.value,
                    event_id,
                    attempts,
                    reason,
                ),
            )
            await uow.commit()
        metrics.CONSUMER_DEAD_LETTERED.labels(self.name).inc()
        log.error(
            "consumer %s moved a record to consumer_dead_letters",
            self.name,
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error": reason,
            },
        )


def _event_id(raw: bytes | None) -> str | None:
    """The record's event id for the dead letter, when it has a readable one (cut to 200 characters)."""
    try:
        event_id = json.loads(raw or b"").get("id")
    except (ValueError, AttributeError):
        return None
    return event_id.replace("\x00", "")[:200] if isinstance(event_id, str) else None
