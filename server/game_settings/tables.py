"""Game settings table (seed 000 §4.1 UserGameSetting): one JSON document per (user, product).

`version` is the compare-and-swap counter behind the etag: every write bumps it, and a write that names
the version it read updates nothing when another write got there first. A never-written document has no
row (version 0). UpdateGameSettings replays are answered from the shared request_id ledger
(server/core/replay.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime, String, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base


class UserGameSetting(Base):
    __tablename__ = "user_game_settings"
    __table_args__ = (CheckConstraint("version > 0", name="version_positive"),)

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    settings_payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    version: Mapped[int] = mapped_column(BigInteger)
    updated_by_device_id: Mapped[str] = mapped_column(String(128), server_default="")
    last_synced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
