"""Kafka consumers of the library (SPEC §6, seed 000 §5.2).

- payment `transaction.completed` → grant the order's products (once per event id, and once per order:
  a replayed or re-sent event grants nothing twice and emits nothing twice);
- payment `transaction.refunded` (same topic; data shaped like the purchase's: `userId`, `orderId`,
  optional `items` for a partial refund, optional `reason` refund | chargeback, `timestamp`) → revoke what
  the user still holds from that order, each product once (`item.revoked`), however often it arrives;
- catalog `product.updated` → refresh the local product cache (stale updates are ignored); one carrying a
  `discount` ({`percent`, optional `saleId`, optional `endsAt`}) also records the sale, which
  server.library.sales announces to the product's wishers in bounded batches, once per sale.

Order ids are compared in one canonical form (rules.order_key), as GrantEntitlements compares them.
"""

from __future__ import annotations

from typing import Any

from server.core.deps import Deps
from server.core.events.cloudevents import CATALOG_EVENTS_TOPIC, PAYMENT_EVENTS_TOPIC
from server.core.events.consumer import EventHandler, KafkaEventConsumer
from server.core.uow import UnitOfWork
from server.library import rules, use_cases

PAYMENT_COMPLETED = "com.platform.payment.transaction.completed.v1"
PAYMENT_REFUNDED = "com.platform.payment.transaction.refunded.v1"
PRODUCT_UPDATED = "com.platform.catalog.product.updated.v1"


def _event_time(event: dict[str, Any], deps: Deps):
    return rules.parse_time(event["time"]) if event.get("time") else deps.clock()


def payment_completed_handler(deps: Deps) -> EventHandler:
    async def handle(uow: UnitOfWork, event: dict[str, Any]) -> None:
        order = rules.paid_order(event["data"], event_time=_event_time(event, deps))
        grants = [use_cases.Grant(product_id, "purchase") for product_id in order.product_ids]
        await use_cases.grant_in(
            uow, order.user_id, grants, order_id=order.order_id, acquired_at=order.paid_at, now=deps.clock()
        )

    return handle


def payment_refunded_handler(deps: Deps) -> EventHandler:
    async def handle(uow: UnitOfWork, event: dict[str, Any]) -> None:
        refund = rules.refunded_order(event["data"], event_time=_event_time(event, deps))
        await use_cases.refund_in(uow, refund, now=deps.clock())

    return handle


def product_updated_handler(deps: Deps) -> EventHandler:
    async def handle(uow: UnitOfWork, event: dict[str, Any]) -> None:
        data = event["data"]
        values = rules.catalog_product_values(data, event_time=_event_time(event, deps))
        sale = rules.catalog_sale(data)
        await use_cases.upsert_products_in(uow, [values])
        if sale is not None:
            await use_cases.announce_sale_in(uow, sale)

    return handle


def library_consumers(deps: Deps) -> list[KafkaEventConsumer]:
    settings = deps.settings
    common = dict(
        uow_factory=deps.uow,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        max_attempts=settings.consumer_max_attempts,
        retry_backoff_seconds=settings.consumer_retry_backoff_seconds,
    )
    return [
        KafkaEventConsumer(
            name="library-payment",
            topics=[PAYMENT_EVENTS_TOPIC],
            handlers={
                PAYMENT_COMPLETED: payment_completed_handler(deps),
                PAYMENT_REFUNDED: payment_refunded_handler(deps),
            },
            **common,
        ),
        KafkaEventConsumer(
            name="library-catalog",
            topics=[CATALOG_EVENTS_TOPIC],
            handlers={PRODUCT_UPDATED: product_updated_handler(deps)},
            **common,
        ),
    ]
