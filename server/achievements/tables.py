"""Achievement tables: cached definitions and per-user progress (seed 000 §4.1 UserAchievement).
UpdateAchievementProgress replays are answered from the shared request_id ledger (server/core/replay.py)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKeyConstraint,
    Integer,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base


class AchievementDefinition(Base):
    """One achievement of a product, cached locally (UpsertAchievementDefinitions)."""

    __tablename__ = "achievement_definitions"

    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    api_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    display_name: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, server_default="")
    hidden: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    max_progress: Mapped[int] = mapped_column(BigInteger, server_default=text("1"))
    icon_url: Mapped[str] = mapped_column(Text, server_default="")
    icon_locked_url: Mapped[str] = mapped_column(Text, server_default="")
    display_order: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AchievementUnlockCount(Base):
    """Users who have unlocked an achievement, in shards (a user's unlock counts in the shard its id
    picks): bumped by the single transaction that observes each unlock, so the global unlock rate needs no
    scan of user_achievements, and concurrent unlocks of one achievement (launch day) spread over
    UNLOCK_COUNT_SHARDS rows instead of queueing on one."""

    __tablename__ = "achievement_unlock_counts"

    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    api_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    unlocked_count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))

    __table_args__ = (
        ForeignKeyConstraint(
            ["product_id", "api_name"],
            ["achievement_definitions.product_id", "achievement_definitions.api_name"],
            name="fk_achievement_unlock_counts_definition",
            ondelete="CASCADE",
        ),
    )


class UserAchievement(Base):
    """One user's progress on one achievement; `unlocked_at` is the first unlock and never changes."""

    __tablename__ = "user_achievements"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    achievement_api_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    progress: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    is_unlocked: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    unlocked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
