"""The library's retention rule (server/core/retention.py): orders whose grants were applied are
remembered (so a re-sent payment event grants nothing twice) for APPLIED_ORDERS_RETENTION_SECONDS."""

from __future__ import annotations

from server.core.config import Settings
from server.core.retention import RetentionRule


def library_retention_rules(settings: Settings) -> list[RetentionRule]:
    return [RetentionRule("library_applied_orders", "applied_at", settings.applied_orders_retention_seconds)]
