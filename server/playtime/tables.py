"""Playtime tables: sessions (online and offline) and the segments of time credited to them.

Live accrual of an active session is in Redis (see live.py); these rows hold what has been credited
(checkpointed or final). Totals are derived from `playtime_intervals` (union per user and product) and
copied to `library_items.total_playtime_seconds` / `last_played_timestamp`.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base

SOURCE_ONLINE = "online"
SOURCE_OFFLINE = "offline"
STATUS_ACTIVE = "active"
STATUS_ENDED = "ended"
STATUS_REAPED = "reaped"


class PlaytimeSession(Base):
    """One play session. While active (`ended_at` NULL) its live state is in Redis and
    `last_heartbeat_at` / `checkpointed_at` say how far the database has caught up."""

    __tablename__ = "playtime_sessions"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    device_id: Mapped[str] = mapped_column(String(128))
    client_session_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    source: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    checkpointed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    credited_seconds: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # The product totals returned when the session ended, so a repeated End returns the same answer.
    result_total_seconds: Mapped[int | None] = mapped_column(BigInteger)
    result_last_two_weeks_seconds: Mapped[int | None] = mapped_column(BigInteger)
    result_last_played_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        # One active session per (user, product, device): concurrent starts resume the same session.
        Index(
            "uq_playtime_sessions_active_device",
            "user_id",
            "product_id",
            "device_id",
            unique=True,
            postgresql_where=text("ended_at IS NULL"),
        ),
        # Offline uploads are idempotent per client session id.
        Index(
            "uq_playtime_sessions_offline_client_session",
            "user_id",
            "client_session_id",
            unique=True,
            postgresql_where=text("source = 'offline'"),
        ),
        Index("ix_playtime_sessions_active", "last_heartbeat_at", postgresql_where=text("ended_at IS NULL")),
    )


class PlaytimeInterval(Base):
    """A credited segment of a session: [started_at, ended_at] on the server's clock."""

    __tablename__ = "playtime_intervals"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("playtime_sessions.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    device_id: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # A segment is identified by its start; checkpoints only move its end forward.
        UniqueConstraint("session_id", "started_at"),
        CheckConstraint("ended_at >= started_at", name="ordered"),
        Index("ix_playtime_intervals_user_product_end", "user_id", "product_id", "ended_at"),
    )
