"""Kafka consumers of the downloads (SPEC §6): the library's `item.revoked` cancels the user's active
download sessions of that product.

An event rather than a call from the library's RevokeEntitlement: every way an entitlement ends (the
RPC, a refund event handled by the library, a family-sharing link revoked) reaches the downloads without
the library knowing they exist, and the idempotent consumer makes a redelivered event a no-op.
"""

from __future__ import annotations

import uuid
from typing import Any

from server.core.deps import Deps
from server.core.events.cloudevents import LIBRARY_EVENTS_TOPIC
from server.core.events.consumer import EventHandler, KafkaEventConsumer
from server.core.uow import UnitOfWork
from server.downloads.sessions import DownloadSessions
from server.library.rules import ITEM_REVOKED


def item_revoked_handler(sessions: DownloadSessions) -> EventHandler:
    async def handle(uow: UnitOfWork, event: dict[str, Any]) -> None:
        data = event["data"]
        await sessions.cancel_product_in(uow, uuid.UUID(data["userId"]), uuid.UUID(data["productId"]))

    return handle


def download_consumers(deps: Deps, sessions: DownloadSessions) -> list[KafkaEventConsumer]:
    settings = deps.settings
    return [
        KafkaEventConsumer(
            name="downloads-revocations",
            topics=[LIBRARY_EVENTS_TOPIC],
            handlers={ITEM_REVOKED: item_revoked_handler(sessions)},
            uow_factory=deps.uow,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            max_attempts=settings.consumer_max_attempts,
            retry_backoff_seconds=settings.consumer_retry_backoff_seconds,
        )
    ]
