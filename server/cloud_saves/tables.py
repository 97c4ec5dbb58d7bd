"""Cloud-save tables (seed 000 §4.1 SavegameMetadata), the per-(user, product) row every change locks,
and the durable queue through which S3 objects are deleted."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    Index,
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


class SaveGameRow(Base):
    """One uploaded file: a pending upload (a quota reservation), a committed version of its slot, a
    conflict candidate, or a discarded upload (kept so a repeated confirm answers the same; it holds no
    object and no quota). Its object key is unique to it: objects are never shared between rows."""

    __tablename__ = "savegames"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'committed', 'conflict', 'discarded')", name="status"),
        Index("ix_savegames_owner_slot", "user_id", "product_id", "slot_name", "status"),
        Index(
            "uq_savegames_slot_version",
            "user_id",
            "product_id",
            "slot_name",
            "version_number",
            unique=True,
            postgresql_where=text("version_number IS NOT NULL"),
        ),
        Index("ix_savegames_pending_until", "reserved_until", postgresql_where=text("status = 'pending'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    slot_name: Mapped[str] = mapped_column(String(64))
    # pending | committed | conflict | discarded
    status: Mapped[str] = mapped_column(String(16))
    # Assigned at commit; NULL while pending, as a conflict candidate, or discarded.
    version_number: Mapped[int | None] = mapped_column(Integer)
    base_version: Mapped[int] = mapped_column(Integer)
    file_size_bytes: Mapped[int] = mapped_column(BigInteger)
    file_hash_sha256: Mapped[str] = mapped_column(String(64))
    s3_object_key: Mapped[str] = mapped_column(Text, unique=True)
    client_modified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    server_uploaded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    device_id: Mapped[str] = mapped_column(String(128))
    playtime_seconds: Mapped[int | None] = mapped_column(BigInteger)
    progress_percentage: Mapped[float | None] = mapped_column(Double)
    description: Mapped[str] = mapped_column(Text, server_default="")
    # The request's ConflictPolicy number (0 = MANUAL).
    conflict_policy: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    # True when an automatic policy decided this upload's conflict.
    auto_resolved: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # Until when the reservation holds and a presigned PUT may still be writing the object: the upload
    # URL's expiry plus a grace period. The object is never deleted before this.
    reserved_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SaveGameOwner(Base):
    """One row per (user, product) with saves: every change to that user's saves of that product locks it
    first, so quota checks, version numbers and conflict detection see one writer at a time."""

    __tablename__ = "savegame_owners"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)


class ObjectDeletion(Base):
    """An S3 object to delete, queued in the same transaction that stopped referencing it; the sweeper
    deletes the object first and the queue row after, so a crash in between only repeats the delete."""

    __tablename__ = "savegame_object_deletions"
    __table_args__ = (Index("ix_savegame_object_deletions_due", "delete_after"),)

    s3_object_key: Mapped[str] = mapped_column(Text, primary_key=True)
    delete_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
