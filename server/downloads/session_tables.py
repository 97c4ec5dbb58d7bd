"""Download session tables (seed 001 §4.1): a user's download sessions (the queue) and update history.

A session's durable state (status, priority, totals) lives here and changes only on transitions; its live
progress between transitions (bytes, speed) lives in Redis (progress.py) and is folded in on the next
transition.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base
from server.downloads.session_rules import MAX_PRIORITY, MIN_PRIORITY, STATUSES

_STATUS_LIST = ", ".join(f"'{s}'" for s in STATUSES)


class DownloadSession(Base):
    """One download of one product version by one user (seed entity DownloadSession)."""

    __tablename__ = "download_sessions"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    version_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("download_product_versions.version_id")
    )
    installed_version_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    branch: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    start_now: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    installation_path: Mapped[str] = mapped_column(Text)
    device_id: Mapped[str] = mapped_column(Text, server_default="")
    total_size_bytes: Mapped[int] = mapped_column(BigInteger)
    # As of the last transition; the live value is in Redis.
    downloaded_bytes: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    error_message: Mapped[str] = mapped_column(Text, server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUS_LIST})", name="status"),
        CheckConstraint(f"priority BETWEEN {MIN_PRIORITY} AND {MAX_PRIORITY}", name="priority"),
        CheckConstraint("downloaded_bytes >= 0 AND total_size_bytes >= 0", name="sizes"),
        # ListDownloads (newest first) and the queue of one user.
        Index("ix_download_sessions_user_created", "user_id", "created_at", "id"),
        # The promoter's scan for users with waiting sessions.
        Index("ix_download_sessions_queued", "user_id", postgresql_where=text("status = 'queued'")),
    )


class UpdateHistory(Base):
    """One applied (or failed) installation of a version by a user (seed entity UpdateHistory)."""

    __tablename__ = "update_history"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    applied_version_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("download_product_versions.version_id")
    )
    previous_version_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    download_session_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    status: Mapped[str] = mapped_column(String(16))
    error_message: Mapped[str | None] = mapped_column(Text)
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("status IN ('success', 'failed')", name="status"),
        Index("ix_update_history_user_product", "user_id", "product_id"),
    )
