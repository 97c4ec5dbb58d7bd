"""Kafka consumer of the achievements (SPEC §6, seed 000 §5.2): a catalog `product.updated` whose
`updatedFields` include `achievement_definitions` upserts the definitions it carries, as
UpsertAchievementDefinitions does (once per event id; definitions it does not name are left alone).

A consumer group of its own beside the library's product-cache consumer: each capability handles the
catalog event for what it owns, and neither waits for the other."""

from __future__ import annotations

import uuid
from typing import Any

from server.achievements import use_cases
from server.achievements.rules import catalog_definitions
from server.core.deps import Deps
from server.core.events.cloudevents import CATALOG_EVENTS_TOPIC
from server.core.events.consumer import EventHandler, KafkaEventConsumer
from server.core.uow import UnitOfWork
from server.library.consumers import PRODUCT_UPDATED


def definitions_handler() -> EventHandler:
    async def handle(uow: UnitOfWork, event: dict[str, Any]) -> None:
        definitions = catalog_definitions(event["data"])
        if definitions:
            product_id = uuid.UUID(definitions[0].product_id)
            await use_cases.upsert_definitions_in(uow, product_id, definitions)

    return handle


def achievement_consumers(deps: Deps) -> list[KafkaEventConsumer]:
    settings = deps.settings
    return [
        KafkaEventConsumer(
            name="achievements-catalog",
            topics=[CATALOG_EVENTS_TOPIC],
            handlers={PRODUCT_UPDATED: definitions_handler()},
            uow_factory=deps.uow,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        )
    ]
