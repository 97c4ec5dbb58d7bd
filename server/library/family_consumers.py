"""Kafka consumer of family sharing: the library's own `item.added` / `item.revoked` events of a user's
own games (not borrowed ones) bring the borrowed items of everyone borrowing from that user, and the
user's own borrowed items, up to date (a lender's new game is lent, a refunded one leaves, a game the
borrower bought stops being borrowed)."""

from __future__ import annotations

import uuid
from typing import Any

from server.core.deps import Deps
from server.core.events.cloudevents import LIBRARY_EVENTS_TOPIC
from server.core.events.consumer import EventHandler, KafkaEventConsumer
from server.core.uow import UnitOfWork
from server.library import family_rules, family_use_cases
from server.library.rules import ITEM_ADDED, ITEM_REVOKED


def own_library_changed_handler(deps: Deps) -> EventHandler:
    async def handle(uow: UnitOfWork, event: dict[str, Any]) -> None:
        data = event["data"]
        borrowed_change = (
            data.get("acquisitionType") == family_rules.FAMILY_SHARED
            or data.get("reason") == family_rules.NO_LONGER_SHARED
        )
        if not borrowed_change:  # a borrowed game is never lent on: nothing follows from it
            await family_use_cases.library_changed_in(uow, uuid.UUID(data["userId"]), deps.clock())

    return handle


def family_consumers(deps: Deps) -> list[KafkaEventConsumer]:
    settings = deps.settings
    handler = own_library_changed_handler(deps)
    return [
        KafkaEventConsumer(
            name="library-family-sharing",
            topics=[LIBRARY_EVENTS_TOPIC],
            handlers={ITEM_ADDED: handler, ITEM_REVOKED: handler},
            uow_factory=deps.uow,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        )
    ]
