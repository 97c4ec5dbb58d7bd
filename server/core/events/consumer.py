"""Idempotent Kafka consumers (SPEC §7): each CloudEvent is handled at most once per consumer.

The event id is recorded in `processed_events` inside the same transaction as the handler's change, so a
redelivered event (rebalance, retry, replay) changes nothing. Offsets are committed after handling.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from opentelemetry.trace import SpanKind
from sqlalchemy.dialects.postgresql import insert as pg_insert

from server.core import tracing
from server.core.events.tables import ProcessedEvent
from server.core.uow import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)

EventHandler = Callable[[UnitOfWork, dict[str, Any]], Awaitable[None]]


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
    ):
        self.name = name
        self._topics = topics
        self._handlers = handlers
        self._uow_factory = uow_factory
        self._bootstrap_servers = bootstrap_servers
        self._session_timeout_ms = session_timeout_ms
        self._heartbeat_interval_ms = heartbeat_interval_ms

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
                async for message in consumer:
                    await self._dispatch(message.value)
                    await consumer.commit()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("consumer %s failed; reconnecting", self.name, exc_info=True)
                await asyncio.sleep(1.0)
            finally:
                await consumer.stop()

    async def _dispatch(self, raw: bytes) -> None:
        try:
            event = json.loads(raw)
            handler = self._handlers.get(event.get("type", ""))
            event_id = event["id"]
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("consumer %s skipped a message that is not a CloudEvent", self.name)
            return
        if handler is None:
            return
        # The handler's own events continue the trace of the event that caused them.
        traceparent = event.get("traceparent")
        span, token = tracing.start_span(
            f"{self.name} {event.get('type')}",
            traceparent if isinstance(traceparent, str) else "",
            SpanKind.CONSUMER,
        )
        try:
            await self._handle(event, event_id, handler)
        finally:
            tracing.end_span(span, token)

    async def _handle(self, event: dict[str, Any], event_id: str, handler: EventHandler) -> None:
        while True:
            try:
                await handle_once(self._uow_factory, self.name, event, handler)
                return
            except (ValueError, KeyError, TypeError):
                log.warning("consumer %s skipped malformed event %s", self.name, event_id, exc_info=True)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("consumer %s: handling %s failed; retrying", self.name, event_id, exc_info=True)
                await asyncio.sleep(1.0)
