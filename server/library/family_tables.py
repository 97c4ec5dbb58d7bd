"""Family-sharing table (seed 000 §4.1 `FamilyLink`). Borrowed games are the borrower's own library items
(`library_items.lender_user_id` set, acquisition `family_shared`): see `family_use_cases`."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Index, String, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base


class FamilyLink(Base):
    """One invite from an owner (lender) to a shared user (borrower). A revoked link stays as history; at
    most one pending or active link per (owner, shared user)."""

    __tablename__ = "family_links"

    link_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    owner_user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    shared_user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    status: Mapped[str] = mapped_column(String(32))
    end_reason: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("status IN ('pending_approval', 'active', 'revoked')", name="status"),
        CheckConstraint("owner_user_id <> shared_user_id", name="distinct_users"),
        Index(
            "uq_family_links_live_pair",
            "owner_user_id",
            "shared_user_id",
            unique=True,
            postgresql_where=text("status <> 'revoked'"),
        ),
        Index("ix_family_links_owner_created", "owner_user_id", "created_at", "link_id"),
        Index("ix_family_links_shared_created", "shared_user_id", "created_at", "link_id"),
    )
