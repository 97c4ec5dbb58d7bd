"""Download settings table: one row per user who changed their settings (none: the defaults, etag v0).

`version` is the compare-and-swap counter behind the etag (server/core/versioned.py). The schedule's three
columns are all set or all null; `product_branches` maps product id → branch for products not on `public`.
"""

from __future__ import annotations

import uuid
from datetime import datetime, time

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Integer, String, Time, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base


class DownloadSettingsRow(Base):
    __tablename__ = "download_settings"
    __table_args__ = (
        CheckConstraint("max_concurrent_downloads BETWEEN 1 AND 10", name="max_concurrent_range"),
        CheckConstraint("bandwidth_limit_kbps >= 0", name="bandwidth_not_negative"),
        CheckConstraint(
            "(schedule_start IS NULL) = (schedule_end IS NULL) "
            "AND (schedule_start IS NULL) = (schedule_time_zone IS NULL)",
            name="schedule_complete",
        ),
        CheckConstraint("version > 0", name="version_positive"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    max_concurrent_downloads: Mapped[int] = mapped_column(Integer)
    bandwidth_limit_kbps: Mapped[int] = mapped_column(Integer)
    schedule_start: Mapped[time | None] = mapped_column(Time)
    schedule_end: Mapped[time | None] = mapped_column(Time)
    schedule_time_zone: Mapped[str | None] = mapped_column(String(64))
    product_branches: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    version: Mapped[int] = mapped_column(BigInteger)
    updated_by_device_id: Mapped[str] = mapped_column(String(128), server_default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
